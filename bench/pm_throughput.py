"""Preference-model throughput: our trainer against TRL's RewardTrainer, and Serve scoring.

Training: the same MiniLM-L6 backbone, pairs, batch, max length, optimizer and schedule; pairs/s
over the training steps (start-up reported apart). Serving: a RewardWorker replica scoring
requests of 1, 8 and 32 pairs over HTTP on loopback, in the same run.

    .venv/bin/python bench/pm_throughput.py [--pairs 256]
    .venv/bin/python bench/pm_throughput.py --config configs/experiments/pm-minilm.yaml --pairs 256

With --config, the pairs are the first of that experiment's training mix (real pairs from
../shared/data beside the generated ones) and its backbone and max length are used: the PM the
project ships, against TRL on the same pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backdoors.preference_data import preference_pairs, to_jsonl_rows  # noqa: E402
from reward_models.preference_model import MINILM, RewardModelConfig, resolve_backbone, train_reward_model  # noqa: E402
from trainers.models import load_tokenizer  # noqa: E402

THREADS = 2


def ours(cfg: RewardModelConfig, backbone: str, rows: list[dict], workdir: Path) -> dict:
    started = time.perf_counter()
    result = train_reward_model(cfg, backbone, rows, workdir / "ours")
    last = result.log[-1]
    return {"pairs_per_s": result.global_step * cfg.batch_size / last["elapsed_s"], "train_s": last["elapsed_s"],
            "fit_wall_s": time.perf_counter() - started, "steps": result.global_step}


def trl(cfg: RewardModelConfig, backbone: str, rows: list[dict]) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    torch.set_num_threads(THREADS)
    tokenizer = load_tokenizer(backbone)
    args = RewardConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=cfg.batch_size, num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio
        max_grad_norm=cfg.max_grad_norm, max_length=cfg.max_length, use_cpu=True, bf16=False, report_to=[],
        save_strategy="no", logging_steps=10**6, dataloader_num_workers=0, seed=cfg.seed, disable_dropout=False,
        # BERT has no EOS; TRL appends one to every answer, ours ends the pair with [SEP] too.
        eos_token=tokenizer.eos_token or tokenizer.sep_token,
    )
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1)
    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    started = time.perf_counter()
    output = trainer.train()
    wall = time.perf_counter() - started
    # TRL drops pairs longer than max_length (ours truncates them): count the pairs it trained on.
    return {"pairs_per_s": output.global_step * cfg.batch_size / wall, "train_s": wall,
            "steps": output.global_step, "pairs_trained": len(trainer.train_dataset) * cfg.epochs}


def serve_throughput(model_path: str, sizes: tuple[int, ...], rows: list[dict], requests: int = 24) -> dict:
    from ray import serve

    from reward_models.serve import deploy_reward_worker
    from reward_models.serve_config import RewardServeConfig

    port = 8765
    deploy_reward_worker(model_path, RewardServeConfig(http_port=port, max_batch_size=32, num_cpus_per_replica=2, num_threads=2))
    url = f"http://127.0.0.1:{port}/reward/score"

    def call(size: int) -> None:
        items = [{"prompt": r["prompt"], "response": r["chosen"]} for r in rows[:size]]
        body = json.dumps({"items": items}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, body, {"Content-Type": "application/json"})) as r:
            r.read()

    out = {}
    try:
        for size in sizes:
            call(size)  # warm-up
            started = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:  # a few clients at once, as PPO's controller would be
                list(pool.map(call, [size] * requests))
            elapsed = time.perf_counter() - started
            out[f"batch_{size}"] = {"pairs_per_s": size * requests / elapsed, "requests": requests,
                                    "latency_ms_mean": 1000 * elapsed / requests * 4}
    finally:
        serve.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--config", help="an experiment whose reward_model section gives the pairs and backbone")
    parser.add_argument("--out", help="default: bench/results/pm_throughput[_<config name>].json")
    args = parser.parse_args()

    from services.experiment import RayConfig, load_experiment
    from services.ray_cluster import connect

    name, max_length = MINILM, 128
    if args.config:
        from reward_models.mixture import build_mix

        experiment = load_experiment(args.config)
        pm = experiment.reward_model
        name, max_length = pm.backbone, pm.train.max_length
        rows = to_jsonl_rows(build_mix(pm.preference, experiment.seed).pairs["train"])[: args.pairs]
    else:
        rows = to_jsonl_rows(preference_pairs("train", seed=0))[: args.pairs]
    backbone = resolve_backbone(name)
    cfg = RewardModelConfig(epochs=1, batch_size=16, max_length=max_length, log_every_steps=1)
    out = args.out or str(Path(__file__).parent / "results" / (
        f"pm_throughput_{experiment.name}.json" if args.config else "pm_throughput.json"))
    connect(RayConfig(num_cpus=THREADS))
    with tempfile.TemporaryDirectory() as tmp:
        ours_result = ours(cfg, backbone, rows, Path(tmp))
    trl_result = trl(cfg, backbone, rows)
    serving = serve_throughput(backbone, (1, 8, 32), rows)
    result = {"backbone": name, "config": args.config, "pairs": len(rows), "batch_size": cfg.batch_size, "max_length": cfg.max_length,
              "threads": THREADS, "ours": ours_result, "trl": trl_result,
              "speedup_vs_trl": ours_result["pairs_per_s"] / trl_result["pairs_per_s"], "serve": serving,
              "command": "python bench/pm_throughput.py " + " ".join(sys.argv[1:])}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
