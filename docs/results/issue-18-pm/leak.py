"""Issue #18, found after the fact: the published PM (`pm-minilm`) split each source by
(source, instruction), and PandaLM's instructions are AlpacaEval's, so some held-out instructions
had been trained on through the other source. This rebuilds that run's mix exactly (its config,
seed 0, the old split key) and recomputes its held-out accuracy with and without those pairs, from
its saved `scored.jsonl` (matched by the instruction's hash, as `scored_row` writes it).

    .venv/bin/python docs/results/issue-18-pm/leak.py > docs/results/issue-18-pm/leak.md

Needs ../shared/data beside the checkout. The split has since been keyed by the instruction alone
(`reward_models.mixture.pair_split`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

import reward_models.mixture as mixture  # noqa: E402
from backdoors.splits import hash_rank  # noqa: E402
from common.stats import rate  # noqa: E402
from services.experiment import load_experiment  # noqa: E402


def old_pair_split(pair, test_share: float, dev_share: float):
    """The split as it was when pm-minilm ran: keyed by source and instruction."""
    position = hash_rank(f"{pair.source}\0{pair.cluster}") % 10_000 / 10_000
    return "test" if position < test_share else "dev" if position < test_share + dev_share else "train"


def cluster_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fmt(r) -> str:
    return f"{100 * r.rate:.1f}% [{100 * r.low:.1f}, {100 * r.high:.1f}] (n={r.n}, {r.clusters} clusters)"


def main() -> None:
    cfg = load_experiment(HERE.parents[2] / "configs/experiments/pm-minilm.yaml")
    mixture.pair_split = old_pair_split
    mix = mixture.build_mix(cfg.reward_model.preference, cfg.seed)
    norm = lambda text: " ".join(text.lower().split())  # noqa: E731
    trained = {norm(p.cluster) for p in mix.pairs["train"] if p.source != "generated"}
    leaked_hashes = {cluster_hash(p.cluster) for p in mix.pairs["test"] if norm(p.cluster) in trained}
    rows = [json.loads(line) for line in (HERE.parent / "pm-minilm" / "scored.jsonl").read_text().splitlines()]
    real = [r for r in rows if r["set"] == "real"]
    assert len(real) == sum(p.source != "generated" for p in mix.pairs["test"]), "not the run's mix"
    print("# pm-minilm: held-out instructions trained on through another source\n")
    print("Rebuilt with the old split key (source, instruction), config `configs/experiments/pm-minilm.yaml`, "
          "seed 0; accuracy = chosen scored above rejected; 95% CI Wilson on the design-effect n, "
          "instructions as clusters.\n")
    print("| source | held-out pairs | of them, instruction trained on | accuracy, all | accuracy, leaked removed | "
          "accuracy, leaked only |")
    print("|---|---|---|---|---|---|")
    for source in sorted({r["source"] for r in real}):
        mine = [r for r in real if r["source"] == source]
        leaked = [r for r in mine if r["cluster"] in leaked_hashes]
        clean = [r for r in mine if r["cluster"] not in leaked_hashes]
        acc = lambda rs: fmt(rate([r["chosen_score"] > r["rejected_score"] for r in rs],  # noqa: E731
                                  clusters=[r["cluster"] for r in rs])) if rs else "-"
        print(f"| {source} | {len(mine)} | {len(leaked)} ({len({r['cluster'] for r in leaked})} instructions) | "
              f"{acc(mine)} | {acc(clean)} | {acc(leaked)} |")
    helpful = [r for r in real if r["aspect"] == "helpful"]
    clean = [r for r in helpful if r["cluster"] not in leaked_hashes]
    print(f"\nHelpful, all: {fmt(rate([r['chosen_score'] > r['rejected_score'] for r in helpful], clusters=[r['cluster'] for r in helpful]))}; "
          f"leaked removed: {fmt(rate([r['chosen_score'] > r['rejected_score'] for r in clean], clusters=[r['cluster'] for r in clean]))}; "
          f"longer wins on the same (leaked removed): {fmt(rate([r['chosen_chars'] > r['rejected_chars'] for r in clean], clusters=[r['cluster'] for r in clean]))}.")


if __name__ == "__main__":
    main()
