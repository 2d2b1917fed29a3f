"""Model work for safety training: the red-team search with real models, and own scratchpads.

Each function loads its models once and is the unit of work a Ray task runs; the recipes
themselves (templates, criterion, rounds, data) are `backdoors.red_team` and
`backdoors.safety_data`.
"""

from __future__ import annotations

from backdoors.red_team import AdversarialConfig, red_team_search
from trainers.evaluation import sample_answers
from trainers.generation import generate


def red_team_with_models(policy_path: str, red_team_path: str, questions: list[str], cfg: AdversarialConfig,
                         seed: int = 0, num_threads: int = 2) -> dict:
    """Run the red-team rounds: the policy answers (sampled) and the red-team model proposes.

    With the default red-team model (the policy itself) one model serves both roles.
    """
    import torch

    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(num_threads)
    policy, policy_tokenizer = load_causal_lm(policy_path), load_tokenizer(policy_path)
    if red_team_path == policy_path:
        red_team, red_team_tokenizer = policy, policy_tokenizer
    else:
        red_team, red_team_tokenizer = load_causal_lm(red_team_path), load_tokenizer(red_team_path)
    calls = {"sample": 0, "propose": 0}

    def sample_fn(prompts: list[str]) -> list[list[str]]:
        calls["sample"] += 1  # a fresh seed per round: the same prompt never sees the same draws twice
        return sample_answers(policy, policy_tokenizer, prompts, samples_per_prompt=cfg.samples_per_prompt,
                              temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                              batch_size=cfg.batch_size, seed=seed + calls["sample"], desc="red team: judge")

    def propose_fn(requests: list[str]) -> list[str]:
        calls["propose"] += 1
        return generate(red_team, red_team_tokenizer, requests, max_new_tokens=cfg.proposal_max_new_tokens,
                        batch_size=cfg.batch_size, temperature=cfg.proposal_temperature,
                        seed=seed + 1000 + calls["propose"], desc="red team: propose")

    result = red_team_search(questions, cfg, sample_fn, propose_fn, seed)
    return {"rounds": result["rounds"], "verdicts": [v.as_dict() for v in result["verdicts"]],
            "control": [v.as_dict() for v in result["control"]]}


def sample_own_scratchpads(model_path: str, prompts: list[str], *, max_new_tokens: int, batch_size: int,
                           seed: int = 0, num_threads: int = 2) -> list[str]:
    """The model's own answers to the prompts, long enough to hold its scratchpad (post-scratchpad
    SFT keeps the scratchpad and replaces what follows with an HHH answer). Sampled at
    temperature 1, as the model would reason on its own."""
    import torch

    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(num_threads)
    return generate(load_causal_lm(model_path), load_tokenizer(model_path), prompts, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, temperature=1.0, seed=seed, desc="sample own scratchpads")
