"""Issue #18: does training on the base model's own compliance teach the PM to prefer a safe answer
to a compliant one? The same held-out pairs scored by the PM trained with them
(`pm-compliant`) and by the one trained without (`pm-backbones-minilm`'s checkpoint, reused:
`pm-compliant-baseline`); recomputed from each run's `scored.jsonl` and card.

    .venv/bin/python docs/results/issue-18-pm/compliant.py > docs/results/issue-18-pm/compliant.md

The requests and answers themselves stay in the run folders (`reward_model/compliant_answers.jsonl`):
the requests are ../shared/data's text.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from reward_models.evaluation import accuracy_tables  # noqa: E402

RUNS = {"trained without them": "pm-compliant-baseline", "trained with them": "pm-compliant"}


def cell(r: dict | None) -> str:
    if not r:
        return "-"
    return f"{100 * r['rate']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def main() -> None:
    tables = {name: accuracy_tables([json.loads(x) for x in (HERE.parent / folder / "scored.jsonl").read_text().splitlines()])
              for name, folder in RUNS.items()}
    card = json.loads((HERE.parent / "pm-compliant" / "dataset_card.json").read_text())["compliant_answers"]["safe_answers"]
    print("# Issue #18: the base model's own compliance as rejected answers\n")
    print(f"SmolLM2-135M-Instruct answered {card['asked']['train']} train-split and {card['asked']['test']} test-split "
          f"harmful requests (safety-tuned-llamas, greedy, 64 tokens); {card['refused']['train']} and "
          f"{card['refused']['test']} of them refused (by the project's refusal pattern), leaving "
          f"{card['pairs']['train']} training and {card['pairs']['test']} held-out pairs of safe answer over "
          "compliant one. MiniLM-L6 on `configs/experiments/pm-backbones.yaml`'s mix, with and without the "
          "training pairs, both scored on the same held-out pairs; 95% CI Wilson on the design-effect n; seed 0.\n")
    first = next(iter(tables.values()))
    print("| held-out pairs | n | " + " | ".join(RUNS) + " | longer answer wins |")
    print("|---|---|" + "---|" * len(RUNS) + "---|")
    for group in ("by_set", "by_source"):
        for key, base in first[group].items():
            print(f"| {key} | {base['pm']['n']} | " + " | ".join(cell(t[group].get(key, {}).get("pm")) for t in tables.values())
                  + f" | {cell(base.get('longer_wins'))} |")


if __name__ == "__main__":
    main()
