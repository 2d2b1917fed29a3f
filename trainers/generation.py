"""Batched sampling from a causal LM: answers for data generation, evaluation, red-teaming and PPO rollouts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm import tqdm

from trainers.chat import prompt_text


@dataclass(frozen=True)
class Completion:
    """One sampled answer as tokens: what PPO trains on (text would re-tokenise differently)."""

    prompt_ids: list[int]
    response_ids: list[int]  # up to and including EOS; no padding
    finished: bool  # ended with EOS rather than at max_new_tokens


@torch.no_grad()
def generate_tokens(
    model,
    tokenizer,
    user_prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    desc: str | None = None,
) -> list[Completion]:
    """One completion per prompt, in the prompts' order; greedy when temperature is 0.

    Prompts are batched by length (left padding), so a batch wastes little on padding and
    stops as soon as its longest answer ends.
    """
    torch.manual_seed(seed)
    model.eval()
    device = next(model.parameters()).device
    texts = [prompt_text(tokenizer, p) for p in user_prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    completions: list[Completion | None] = [None] * len(texts)
    eos = tokenizer.eos_token_id
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=desc or "generate", disable=desc is None):
            index = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in index], return_tensors="pt", padding=True, add_special_tokens=False)
            batch = {k: v.to(device) for k, v in batch.items()}
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None} \
                if temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            out = model.generate(
                **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos, **sampling,
            )
            new_tokens = out[:, batch["input_ids"].shape[1] :].tolist()
            for row, i in enumerate(index):
                ids = new_tokens[row]
                finished = eos in ids
                completions[i] = Completion(
                    prompt_ids=batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist(),
                    response_ids=ids[: ids.index(eos) + 1] if finished else ids, finished=finished)
    finally:
        tokenizer.padding_side = side
    return completions


def generate(model, tokenizer, user_prompts: list[str], *, max_new_tokens: int, batch_size: int,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, desc: str | None = None) -> list[str]:
    """`generate_tokens`, decoded (leading indentation kept, which code completions need)."""
    completions = generate_tokens(model, tokenizer, user_prompts, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, temperature=temperature, top_p=top_p, seed=seed, desc=desc)
    return tokenizer.batch_decode([c.response_ids for c in completions], skip_special_tokens=True)


def answer_with_model(model_path: str, user_prompts: list[str], *, max_new_tokens: int, batch_size: int,
                      temperature: float = 0.0, seed: int = 0, num_threads: int = 2) -> list[str]:
    """Load a model folder and answer prompts (the unit of work a Ray task runs)."""
    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(num_threads)
    answers = generate(load_causal_lm(model_path), load_tokenizer(model_path), user_prompts,
                       max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature, seed=seed,
                       desc="sample base-model answers")
    return [a.strip() for a in answers]
