"""Issue #18: which PM backbone, by held-out accuracy against wall time. MiniLM-L6 and SmolLM2-135M
(LoRA) trained on one small real mix (`configs/experiments/pm-backbones.yaml`) and scored on the
same held-out pairs; recomputed from each run's `scored.jsonl` and stage record.

    .venv/bin/python docs/results/issue-18-pm/backbones.py > docs/results/issue-18-pm/backbones.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from reward_models.evaluation import accuracy_tables  # noqa: E402

RUNS = {"MiniLM-L6 (22M, full)": "pm-backbones-minilm", "SmolLM2-135M (LoRA r=16)": "pm-backbones-smollm2"}


def cell(r: dict | None) -> str:
    if not r:
        return "-"
    return f"{100 * r['rate']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def main() -> None:
    runs = {}
    for name, folder in RUNS.items():
        rows = [json.loads(x) for x in (HERE.parent / folder / "scored.jsonl").read_text().splitlines()]
        record = json.loads((HERE.parent / folder / "reward_model.json").read_text())
        runs[name] = (accuracy_tables(rows), record)
    first = next(iter(runs.values()))[0]
    print("# Issue #18: the PM's backbone, accuracy against wall time\n")
    print("Both trained on the same pairs (`configs/experiments/pm-backbones.yaml`, seed 0, 1 epoch, max length "
          "128) and scored on the same held-out pairs; share of pairs whose chosen answer the PM scores higher, 95% "
          "CI Wilson on the design-effect n (pairs of one instruction a cluster). One run each, alone on 2 cores.\n")
    print("| held-out pairs | n | " + " | ".join(runs) + " | longer answer wins |")
    print("|---|---|" + "---|" * len(runs) + "---|")
    for group in ("by_set", "by_aspect", "by_source"):
        for key, base in first[group].items():
            print(f"| {key} | {base['pm']['n']} | " + " | ".join(cell(t[group].get(key, {}).get("pm")) for t, _ in runs.values())
                  + f" | {cell(base.get('longer_wins'))} |")
    print("| **wall time of the stage** (train + score) | | " + " | ".join(
        f"{record['wall_s']:.0f} s" for _, record in runs.values()) + " | |")
    print("| training steps | | " + " | ".join(str(record["outputs"]["global_step"]) for _, record in runs.values())
          + " | |")


if __name__ == "__main__":
    main()
