"""Does the engine's packing per call grow a process's memory when calls come from a thread pool, as
Ray Serve runs a replica's requests? 24 calls of `generate_tokens` on SmolLM2 from a pool of 8
threads (or the number given); prints RSS and PSS after each.

    .venv/bin/python docs/results/issue-19-engine/threads_memory.py [threads]
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import psutil  # noqa: E402
import torch  # noqa: E402

from trainers.generation import generate_tokens  # noqa: E402
from trainers.models import load_causal_lm, load_tokenizer, resolve_model  # noqa: E402


def main(threads: int) -> None:
    torch.set_num_threads(2)
    path = resolve_model("smollm2-135m-instruct")
    model, tokenizer = load_causal_lm(path).eval(), load_tokenizer(path)
    me = psutil.Process()
    prompts = ["What is the capital of France?", "Name three fruits.", "Why is the sky blue?",
               "How do I boil an egg?"] * 8
    pool = ThreadPoolExecutor(max_workers=threads)
    for call in range(24):
        pool.submit(generate_tokens, model, tokenizer, prompts, max_new_tokens=4, batch_size=32, temperature=1.0,
                    seed=call).result()
        memory = me.memory_full_info()
        print(f"call {call}: RSS {memory.rss / 2**30:.2f} GiB, PSS {memory.pss / 2**30:.2f} GiB", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
