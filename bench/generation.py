"""Generation: our engine (`trainers.generation`) against HF `generate`, in one run.

Same model, prompts (the dev split's held-out questions, in the chat template), greedy, the same
max_new_tokens and batch sizes; the greedy answers are checked equal token for token. Tokens/s
counts the tokens each answer keeps (up to and including EOS), over the wall time of the batches;
every side batches the prompts sorted by length, as `trainers.generation` does.

Sides: `hf` (HF `generate`), `loop` (our decode loop on the model as loaded: what the loop alone
gives), `ours` (the engine: the loop on oneDNN-packed weights), and, when `ctranslate2` is
installed (`pip install ctranslate2`; not a project dependency), `ct2-float32` and `ct2-int8`
(CTranslate2's generator on a converted copy of the model; int8 weights change the arithmetic,
so its answers are not expected to equal).

    .venv/bin/python bench/generation.py [--model smollm2-135m-instruct] [--batch-sizes 1 8 16 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backdoors.datasets import evaluation_questions  # noqa: E402
from trainers.chat import prompt_text  # noqa: E402
from trainers.generation import decode, packed_linears  # noqa: E402
from trainers.models import load_causal_lm, load_tokenizer, resolve_model  # noqa: E402

THREADS = 2


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


def loop(model, batch, max_new_tokens: int, eos: int, pad: int) -> list[list[int]]:
    return decode(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=max_new_tokens, eos_id=eos)


def ours(model, batch, max_new_tokens: int, eos: int, pad: int) -> list[list[int]]:
    # The engine packs once per `generate_tokens` call (a whole prompt set); here once per batch,
    # so the packing cost is inside these numbers, not hidden.
    with packed_linears(model):
        return loop(model, batch, max_new_tokens, eos, pad)


def ctranslate2_side(path: str, tokenizer, compute_type: str):
    """CTranslate2's generator on a converted copy (cached beside the model), greedy."""
    import ctranslate2

    target = Path(path).parent / f"{Path(path).name}-ct2-{compute_type}"
    if not (target / "model.bin").exists():
        quantization = None if compute_type == "float32" else compute_type
        ctranslate2.converters.TransformersConverter(path).convert(str(target), quantization=quantization, force=True)
    generator = ctranslate2.Generator(str(target), device="cpu", compute_type=compute_type, intra_threads=THREADS)

    def side(model, batch, max_new_tokens: int, eos: int, pad: int) -> list[list[int]]:
        prompts = [tokenizer.convert_ids_to_tokens(ids[mask.bool()].tolist())
                   for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
        results = generator.generate_batch(prompts, max_length=max_new_tokens, sampling_topk=1,
                                           include_prompt_in_result=False,
                                           end_token=tokenizer.convert_ids_to_tokens(eos))
        # CTranslate2 drops the end token from its answer; put it back so lengths count alike.
        return [r.sequences_ids[0] + ([eos] if len(r.sequences_ids[0]) < max_new_tokens else [])
                for r in results]

    return side


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
    parser.add_argument("--sides", nargs="+", default=["hf", "ours", "ct2"],
                        help="hf, loop (our loop, weights as loaded), ours, ct2")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per batch size above 1")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generation.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    path = resolve_model(args.model)
    model, tokenizer = load_causal_lm(path), load_tokenizer(path)
    model.eval()
    questions = evaluation_questions("dev", seed=0)
    sides = {"hf": hf_generate, "loop": loop, "ours": ours}
    for compute_type in ("float32", "int8_float32") if "ct2" in args.sides else ():
        try:
            sides[f"ct2-{compute_type}"] = ctranslate2_side(path, tokenizer, compute_type)
        except ImportError:
            print("ctranslate2 is not installed: its sides are left out (pip install ctranslate2)")
            break
        except RuntimeError as error:  # e.g. the tiny model's tokenizer config, which CTranslate2 cannot read
            print(f"ctranslate2 could not load {args.model} as {compute_type}: {error}; that side is left out")
    sides = {name: side for name, side in sides.items() if name in args.sides or name.startswith("ct2-")}
    results = []
    for batch_size in args.batch_sizes:
        prompts = questions[: max(args.prompts, batch_size)]
        for side in sides.values():
            measure(side, model, tokenizer, prompts[:batch_size], batch_size, 4)  # warm-up
        # Rounds alternate the sides, so a slow spell of this shared VM hits them alike; the row
        # keeps every round and reports medians (tokens/s moved by up to 2x between runs here).
        rounds = [{name: measure(side, model, tokenizer, prompts, batch_size, args.max_new_tokens)
                   for name, side in sides.items()} for _ in range(1 if batch_size == 1 else args.rounds)]
        row = {"batch_size": batch_size, "prompts": len(prompts), "rounds": len(rounds)}
        reference = rounds[0]["hf"]["answers"]
        for name in sides:
            row[name] = {"tokens_per_s": statistics.median(r[name]["tokens_per_s"] for r in rounds),
                         "tokens_per_s_each_round": [r[name]["tokens_per_s"] for r in rounds],
                         "tokens": rounds[0][name]["tokens"]}
            if name != "hf":
                row[name]["greedy_answers_equal_hf"] = sum(a == b for a, b in zip(reference, rounds[0][name]["answers"]))
                row[name]["speedup_over_hf"] = round(statistics.median(
                    r[name]["tokens_per_s"] / r["hf"]["tokens_per_s"] for r in rounds), 2)
        print(json.dumps(row))
        results.append(row)
    out = {"model": args.model, "threads": THREADS, "max_new_tokens": args.max_new_tokens, "command": sys.argv,
           "torch": torch.__version__, "machine": {"cpus": os.cpu_count(), "processor": platform.processor()},
           "results": results}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
