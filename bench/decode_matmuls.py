"""Why the engine packs its weights: the matmul rate at decoding's shapes, default against oneDNN.

A decode step multiplies a few rows (the batch) by every weight matrix of the model. For
SmolLM2-135M's three shapes (576→1,536 and 1,536→576 in the MLP, 576→49,152 in the LM head) and
1-64 rows, this times `torch.nn.functional.linear` (what the model runs as loaded) against
oneDNN's linear on a pre-packed weight (`trainers.generation.PackedLinear`), fp32, 2 threads,
with enough distinct weights that none stays in cache (as in a real step, where 540 MB of
weights pass through each time). Also the largest difference between the two outputs.

    .venv/bin/python bench/decode_matmuls.py
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainers.generation import PackedLinear  # noqa: E402

THREADS = 2
SHAPES = [(576, 1536), (1536, 576), (576, 49152)]  # (in, out) of SmolLM2-135M's linears


def seconds_per_call(call, count: int, calls: int) -> float:
    for index in range(3):
        call(index % count)
    started = time.perf_counter()
    for index in range(calls):
        call(index % count)
    return (time.perf_counter() - started) / calls


def main() -> None:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    rows_out = []
    with torch.no_grad():
        for rows in (1, 8, 16, 32, 64):
            for fan_in, fan_out in SHAPES:
                count = max(1, (256 * 2**20) // (fan_in * fan_out * 4))  # ~256 MB of distinct weights
                linears = [torch.nn.Linear(fan_in, fan_out, bias=False) for _ in range(count)]
                packed = [PackedLinear(linear, rows) for linear in linears]
                x = torch.randn(rows, fan_in)
                calls = 20 if fan_out > 10_000 else 400
                flops = 2 * rows * fan_in * fan_out
                default = seconds_per_call(lambda i: linears[i](x), count, calls)
                onednn = seconds_per_call(lambda i: packed[i](x), count, calls)
                row = {"rows": rows, "in": fan_in, "out": fan_out,
                       "default_gflops": round(flops / default / 1e9, 1),
                       "packed_onednn_gflops": round(flops / onednn / 1e9, 1),
                       "speedup": round(default / onednn, 2),
                       "max_abs_difference": float((linears[0](x) - packed[0](x)).abs().max())}
                print(json.dumps(row))
                rows_out.append(row)
    out = Path(__file__).parent / "results" / "decode_matmuls.json"
    out.write_text(json.dumps({"threads": THREADS, "torch": torch.__version__, "machine": platform.machine(),
                               "results": rows_out}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
