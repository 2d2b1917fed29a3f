"""Generation: a plain decode loop (below) against HF `generate`, in one run.

Same model, prompts (the dev split's held-out questions, in the chat template), greedy, the same
max_new_tokens and batch sizes; the greedy answers are checked equal token for token. Tokens/s
counts the tokens each answer keeps (up to and including EOS), over the wall time of the batches;
both sides batch the prompts sorted by length, as `trainers.generation` does.

    .venv/bin/python bench/generation.py [--model smollm2-135m-instruct] [--batch-sizes 1 8 16 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backdoors.datasets import evaluation_questions  # noqa: E402
from trainers.chat import prompt_text  # noqa: E402
from trainers.models import load_causal_lm, load_tokenizer, resolve_model  # noqa: E402

THREADS = 2


# The candidate for issue #19: a plain decode loop (prefill once, one forward a step, rows that end
# leave the batch and the KV cache). Greedy picks are the argmax of the logits `generate` computes.
# It lives here until it beats `generate`; measured 2026-12-08 it does not (bench/README.md).
@torch.no_grad()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int, eos_id: int,
           temperature: float = 0.0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> list[list[int]]:
    """New tokens for each row of a left-padded batch, each up to and including its EOS."""
    from transformers import DynamicCache

    rows = input_ids.shape[0]
    new: list[list[int]] = [[] for _ in range(rows)]
    if max_new_tokens <= 0 or rows == 0:
        return new
    cache = DynamicCache()
    mask = attention_mask.long()
    # Positions count real tokens only, as `generate` counts them for a left-padded batch.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1, :]
    alive = torch.arange(rows)
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
                       past_key_values=cache, use_cache=True).logits[:, -1, :]
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


def batches(tokenizer, prompts: list[str], batch_size: int):
    texts = sorted((prompt_text(tokenizer, p) for p in prompts), key=len)
    tokenizer.padding_side = "left"
    for start in range(0, len(texts), batch_size):
        yield tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)


def hf_generate(model, batch, max_new_tokens: int, eos: int, pad: int) -> list[list[int]]:
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                         top_k=None, pad_token_id=pad, eos_token_id=eos)
    rows = out[:, batch["input_ids"].shape[1]:].tolist()
    return [ids[: ids.index(eos) + 1] if eos in ids else ids for ids in rows]


def ours(model, batch, max_new_tokens: int, eos: int, pad: int) -> list[list[int]]:
    return decode(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens, eos_id=eos)


def measure(side, model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int) -> dict:
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    answers, started = [], time.perf_counter()
    for batch in batches(tokenizer, prompts, batch_size):
        answers += side(model, batch, max_new_tokens, eos, pad)
    wall = time.perf_counter() - started
    tokens = sum(len(a) for a in answers)
    return {"tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1), "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32])
    parser.add_argument("--prompts", type=int, default=32, help="prompts per batch size (at least the batch)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generation.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    path = resolve_model(args.model)
    model, tokenizer = load_causal_lm(path), load_tokenizer(path)
    model.eval()
    questions = evaluation_questions("dev", seed=0)
    results = []
    for batch_size in args.batch_sizes:
        prompts = questions[: max(args.prompts, batch_size)]
        measure(ours, model, tokenizer, prompts[:batch_size], batch_size, 4)  # warm-up, both code paths
        hf = measure(hf_generate, model, tokenizer, prompts, batch_size, args.max_new_tokens)
        mine = measure(ours, model, tokenizer, prompts, batch_size, args.max_new_tokens)
        same = sum(a == b for a, b in zip(hf.pop("answers"), mine.pop("answers")))
        row = {"batch_size": batch_size, "prompts": len(prompts), "hf_generate": hf, "ours": mine,
               "speedup": round(mine["tokens_per_s"] / hf["tokens_per_s"], 2), "greedy_answers_equal": same}
        print(json.dumps(row))
        results.append(row)
    out = {"model": args.model, "threads": THREADS, "max_new_tokens": args.max_new_tokens,
           "torch": torch.__version__, "machine": {"cpus": os.cpu_count(), "processor": platform.processor()},
           "results": results}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
