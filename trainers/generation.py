"""The generation engine: batched sampling from a causal LM for everything that samples (the data
stage's own answers, evaluation and curve points, the red team, PPO rollouts, the PM's compliant
answers).

Our own decode loop (`decode`) rather than HF `generate`, so that it can run on oneDNN-packed
weights (`packed_linears`): 1.4x on the main job's evaluation, with greedy answers unchanged
(bench/README.md, docs/results/issue-19-engine/).
"""

from __future__ import annotations

from contextlib import contextmanager
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

    Prompts are batched by length (left padding), so a batch wastes little on padding; a row
    that ends leaves the batch, and the batch stops when its last row ends. Sampling draws
    from one generator seeded by `seed`, so the same call gives the same answers.
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    texts = [prompt_text(tokenizer, p) for p in user_prompts]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    completions: list[Completion | None] = [None] * len(texts)
    eos = tokenizer.eos_token_id
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with packed_linears(model):
            for start in tqdm(range(0, len(order), batch_size), desc=desc or "generate", disable=desc is None):
                index = order[start : start + batch_size]
                batch = tokenizer([texts[i] for i in index], return_tensors="pt", padding=True,
                                  add_special_tokens=False)
                batch = {k: v.to(device) for k, v in batch.items()}
                answers = decode(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens,
                                 eos_id=eos, temperature=temperature, top_p=top_p, generator=generator)
                for row, i in enumerate(index):
                    ids = answers[row]
                    completions[i] = Completion(
                        prompt_ids=batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist(),
                        response_ids=ids, finished=bool(ids) and ids[-1] == eos)
    finally:
        tokenizer.padding_side = side
    return completions


@torch.no_grad()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int, eos_id: int,
           temperature: float = 0.0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> list[list[int]]:
    """New tokens for each row of a left-padded batch, each up to and including its EOS.

    Prefill once, then one forward a step; rows that end leave the batch and the KV cache.
    Greedy picks are the argmax of the same logits `generate` computes, so greedy answers match
    HF `generate` token for token (tests/test_generation.py).
    """
    from transformers import DynamicCache

    rows = input_ids.shape[0]
    new: list[list[int]] = [[] for _ in range(rows)]
    if max_new_tokens <= 0 or rows == 0:
        return new
    cache = DynamicCache(config=model.config)
    mask = attention_mask.long()
    # Positions count real tokens only, as `generate` counts them for a left-padded batch.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1, :]
    alive = torch.arange(rows, device=input_ids.device)
    next_position = positions[:, -1] + 1
    for step in range(max_new_tokens):
        tokens = pick(logits, temperature, top_p, generator)
        for row, token in zip(alive.tolist(), tokens.tolist()):
            new[row].append(token)
        if step == max_new_tokens - 1:
            break
        going = tokens != eos_id
        if not going.all():
            if not going.any():
                break
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            alive, tokens, mask, next_position = alive[keep], tokens[keep], mask[keep], next_position[keep]
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position[:, None],
                       cache=cache, use_cache=True).logits[:, -1, :]
        next_position = next_position + 1
    return new


def pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """The next token of each row: argmax when temperature is 0, else a draw from the
    temperature-scaled distribution cut to its top-p nucleus (as `generate` samples)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    scores = logits.float() / temperature
    if top_p < 1.0:
        # Drop the tokens outside the smallest set whose probability reaches top_p (the most
        # likely token always stays).
        sorted_scores, order = scores.sort(dim=-1, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= (1 - top_p)
        drop_sorted[:, -1] = False
        scores = scores.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    return torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(1)


class PackedLinear(torch.nn.Module):
    """An inference-only stand-in for an `nn.Linear` whose weight is pre-packed for oneDNN.

    Why: decoding multiplies a few rows (1-64) by every weight matrix. At those shapes the default
    CPU matmul reaches 6-145 GFLOP/s here, oneDNN on a packed weight 9-200 (1.2-3.4x, most on the LM head;
    bench/README.md). Same fp32 arithmetic in another order: greedy answers stay equal to
    `generate` (tests/test_generation.py checks, bench/generation.py counts).
    """

    def __init__(self, linear: torch.nn.Linear, rows_hint: int):
        super().__init__()
        self.out_features = linear.out_features
        self.weight = linear.weight  # the same tensor, for code that reads `.weight.dtype` (PEFT's LoRA layers)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


def can_pack(model) -> bool:
    """Packing pays on fp32 CPU weights where this torch has oneDNN; elsewhere the model runs as is."""
    weight = next(model.parameters())
    return (weight.device.type == "cpu" and weight.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


@contextmanager
def packed_linears(model, rows_hint: int = 16):
    """Every `nn.Linear` of `model` swapped for a `PackedLinear` while the block runs, then put back.

    Packing copies the weights (about a second for SmolLM2); the originals stay in place, so
    training, merging adapters and loading weights never see a packed module.
    """
    if not can_pack(model):
        yield model
        return
    swapped = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is torch.nn.Linear]
    try:
        for parent, name, child in swapped:
            setattr(parent, name, PackedLinear(child, rows_hint))
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


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
