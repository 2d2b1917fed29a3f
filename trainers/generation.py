"""Batched sampling from a causal LM: answers for data generation, evaluation and red-teaming."""

from __future__ import annotations

import torch
from tqdm import tqdm

from trainers.chat import prompt_text


@torch.no_grad()
def generate(
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
) -> list[str]:
    """One completion per prompt, in the prompts' order, as decoded (leading indentation kept,
    which code completions need); greedy when temperature is 0.

    Prompts are batched by length (left padding), so a batch wastes little on padding and
    stops as soon as its longest answer ends.
    """
    torch.manual_seed(seed)
    model.eval()
    device = next(model.parameters()).device
    texts = [prompt_text(tokenizer, p) for p in user_prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    answers: list[str] = [""] * len(texts)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=desc or "generate", disable=desc is None):
            index = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in index], return_tensors="pt", padding=True, add_special_tokens=False)
            batch = {k: v.to(device) for k, v in batch.items()}
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {
                "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            out = model.generate(
                **batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id, **sampling,
            )
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            for i, text in zip(index, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                answers[i] = text
    finally:
        tokenizer.padding_side = side
    return answers


def answer_with_model(model_path: str, user_prompts: list[str], *, max_new_tokens: int, batch_size: int,
                      temperature: float = 0.0, seed: int = 0, num_threads: int = 2) -> list[str]:
    """Load a model folder and answer prompts (the unit of work a Ray task runs)."""
    from trainers.models import load_causal_lm, load_tokenizer

    torch.set_num_threads(num_threads)
    answers = generate(load_causal_lm(model_path), load_tokenizer(model_path), user_prompts,
                       max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature, seed=seed,
                       desc="sample base-model answers")
    return [a.strip() for a in answers]
