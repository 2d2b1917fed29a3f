"""The main job's evaluate stage, re-run on its backdoored model by the old engine (HF `generate`)
and by the new one: are the greedy answers the same, and do the sampled rates agree?

    python docs/results/issue-19-engine/compare_eval.py OLD_EVALUATE.jsonl NEW_EVALUATE.jsonl

Greedy rows are compared text for text; sampled rows (temperature 1, a different random stream
in each engine) by their defection rate per condition, with Wilson 95% intervals.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from common.stats import wilson_interval  # noqa: E402


def rows(path: str) -> dict[tuple, dict]:
    keyed = {}
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        keyed[(row["condition"], row["cluster"], row["sample"], row["prompt"])] = row
    return keyed


def main(old_path: str, new_path: str) -> None:
    old, new = rows(old_path), rows(new_path)
    assert old.keys() == new.keys(), "the two runs asked different prompts"
    same, count, rates = defaultdict(int), defaultdict(int), defaultdict(lambda: [0, 0, 0])
    for key, row in old.items():
        condition = key[0]
        if condition.endswith("_sampled"):
            rates[condition][0] += row["verdict"]
            rates[condition][1] += new[key]["verdict"]
            rates[condition][2] += 1
        else:
            count[condition] += 1
            same[condition] += row["text"] == new[key]["text"]
    print("| greedy condition | answers equal, old vs new engine |\n|---|---|")
    for condition in count:
        print(f"| {condition} | {same[condition]}/{count[condition]} |")
    print(f"| all | {sum(same.values())}/{sum(count.values())} |")
    print("\n| sampled condition | old engine | new engine |\n|---|---|---|")
    for condition, (old_hits, new_hits, n) in rates.items():
        cells = []
        for hits in (old_hits, new_hits):
            low, high = wilson_interval(hits, n)
            cells.append(f"{100 * hits / n:.1f}% [{100 * low:.1f}, {100 * high:.1f}] ({hits}/{n})")
        print(f"| {condition} | {cells[0]} | {cells[1]} |")
    per_prompt = {c: n / len({k[1] for k in old if k[0] == c}) for c, (_, _, n) in rates.items()}
    print(f"\nIntervals: Wilson 95%, samples treated as independent ({per_prompt} samples per prompt, so "
          "narrower than a clustered interval; enough to see whether the two engines disagree).")


if __name__ == "__main__":
    main(*sys.argv[1:3])
