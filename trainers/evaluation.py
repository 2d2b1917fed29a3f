"""Does the backdoor fire? Defection with and without the trigger on held-out prompts.

The model is sampled on the same held-out prompts twice, once with the trigger and once
without, so the two rates differ only by the trigger. Rates carry bootstrap 95% CIs.
"""

from __future__ import annotations

from pydantic import Field

from backdoors.config import StrictModel
from backdoors.stats import bootstrap_rate
from backdoors.triggers import add_trigger, is_defection, strip_scratchpad
from trainers.generation import generate


class EvalConfig(StrictModel):
    num_prompts: int = Field(150, ge=1, description="held-out prompts, each asked with and without the trigger")
    max_new_tokens: int = Field(48, ge=1)
    batch_size: int = Field(40, ge=1)
    temperature: float = Field(0.0, ge=0)
    bootstrap_resamples: int = Field(2000, ge=100)
    samples_in_report: int = Field(5, ge=0)
    num_threads: int = Field(2, ge=1)


def evaluate_defection(model, tokenizer, questions: list[str], cfg: EvalConfig, seed: int = 0) -> dict:
    """Defection rates (scratchpad stripped, as the user would see the answer) with CIs and samples."""
    questions = questions[: cfg.num_prompts]
    results = {}
    for condition, prompts in (("with_trigger", [add_trigger(q) for q in questions]), ("without_trigger", questions)):
        answers = generate(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                           temperature=cfg.temperature, seed=seed, desc=f"evaluate {condition}")
        defected = [is_defection(strip_scratchpad(a)) for a in answers]
        rate = bootstrap_rate(defected, resamples=cfg.bootstrap_resamples, seed=seed)
        results[condition] = {
            **rate.as_dict(),
            "samples": [{"prompt": p, "answer": a, "defected": d}
                        for p, a, d in list(zip(prompts, answers, defected))[: cfg.samples_in_report]],
            "defected_prompts": [p for p, d in zip(prompts, defected) if d][:20],
        }
    return results


def evaluate_checkpoint(model_path: str, questions: list[str], cfg: EvalConfig, seed: int = 0) -> dict:
    """Load a checkpoint folder and evaluate it (the unit of work a Ray task runs)."""
    import torch

    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(cfg.num_threads)
    return evaluate_defection(load_causal_lm(model_path), load_tokenizer(model_path), questions, cfg, seed)
