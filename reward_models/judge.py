"""A second preference model (a judge) that re-scores answers another PM already scored.

PPO trains against one PM; if the policy learns to game it, that PM's reward rises while the
answers do not get better. A judge of another backbone, or trained on other data, scores the same
held-out answers (saved with each PPO curve point): a gain the judge does not share is a sign of
reward hacking. Any PM folder can judge: it reads text with its own tokenizer.
"""

from __future__ import annotations


def score_answers(checkpoint: str, answers: dict[str, tuple[list[str], list[str]]], batch_size: int = 32,
                  max_length: int = 256, num_threads: int = 2) -> dict[str, list[float]]:
    """{name: (prompts, responses)} → {name: the judge's score of each (prompt, response)}; the
    model is loaded once for every named set."""
    import torch

    from reward_models.preference_model import load_reward_model, score
    from trainers.models import load_tokenizer

    torch.set_num_threads(num_threads)
    model, tokenizer = load_reward_model(checkpoint), load_tokenizer(checkpoint)
    out: dict[str, list[float]] = {}
    for name, (prompts, responses) in answers.items():
        if len(prompts) != len(responses):
            raise ValueError(f"{name}: {len(prompts)} prompts but {len(responses)} responses")
        out[name] = score(model, tokenizer, list(prompts), list(responses), batch_size, max_length)
    return out
