"""How good is the preference model? Pairwise accuracy, score distributions and calibration."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from common.stats import rate


def evaluate_preference_model(model_path: str, pairs: list[dict], batch_size: int = 32, max_length: int = 256,
                              num_threads: int = 2) -> dict:
    """Score held-out pairs: accuracy overall and per kind (95% CIs), scores, calibration bins."""
    import torch

    from reward_models.preference_model import load_reward_model, score
    from trainers.models import load_tokenizer

    torch.set_num_threads(num_threads)
    model, tokenizer = load_reward_model(model_path), load_tokenizer(model_path)
    prompts = [p["prompt"] for p in pairs]
    chosen = score(model, tokenizer, prompts, [p["chosen"] for p in pairs], batch_size, max_length)
    rejected = score(model, tokenizer, prompts, [p["rejected"] for p in pairs], batch_size, max_length)
    wins = [c > r for c, r in zip(chosen, rejected)]
    by_kind: dict[str, list[tuple[bool, str]]] = defaultdict(list)
    for pair, win in zip(pairs, wins):
        by_kind[pair.get("kind", "unknown")].append((win, pair["prompt"]))
    return {  # pairs that share a prompt are one cluster
        "accuracy": rate(wins, clusters=prompts).as_dict(),
        "accuracy_by_kind": {kind: rate([w for w, _ in rows], clusters=[p for _, p in rows]).as_dict()
                             for kind, rows in sorted(by_kind.items())},
        "calibration": calibration(chosen, rejected),
        "scores": {"chosen": chosen, "rejected": rejected, "kind": [p.get("kind", "unknown") for p in pairs]},
    }


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
    scores = result["scores"]
    left.hist(scores["chosen"], bins=30, alpha=0.6, label="chosen (helpful)")
    for kind in sorted(set(scores["kind"])):
        values = [r for r, k in zip(scores["rejected"], scores["kind"]) if k == kind]
        left.hist(values, bins=30, alpha=0.4, histtype="step", linewidth=1.5, label=f"rejected: {kind}")
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
