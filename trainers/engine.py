"""The training engine every trainer shares: Ray Train workers driving a DeepSpeed engine.

A trainer supplies an `Objective` (how to load its model, encode a row, batch rows and
compute the loss); the engine does the rest, the same way for SFT and preference models:

    driver (`run_training`): TorchTrainer(N workers, CPU or GPU) → fit → latest checkpoint
    worker (`train_loop_per_worker`): model (+LoRA) → DeepSpeed (ZeRO 0–3) → resume →
        for each batch: loss → backward → step → log → checkpoint

Checkpoints are reported through Ray Train. Each one is a folder that `from_pretrained` loads
(the full model; with LoRA the merged model plus `adapter/`), a `deepspeed/` engine state for
resuming, `trainer_state.json` and the metrics log. Re-running with the same run folder resumes
from the latest checkpoint (Ray Train V2 restores its checkpoint manager from the folder).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Literal, Protocol

import torch
from pydantic import Field

from common.config import StrictModel

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSettings(StrictModel):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(ALL_LINEAR))


class WorkerSettings(StrictModel):
    """Where training runs and how the model is sharded: shared by every trainer (SFT, PM, PPO)."""

    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(2, gt=0)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="extra Ray resources, e.g. a node label to pin workers to")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = "PACK"
    zero_stage: Literal[0, 1, 2, 3] = 0
    bf16: bool = False  # fp32 on CPU: bf16 matmuls are ~7x slower there
    lora: LoraSettings | None = None
    learning_rate: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0

    def ray_resources(self) -> dict[str, float]:
        return {"CPU": self.cpus_per_worker} | ({"GPU": 1} if self.use_gpu else {}) | self.resources_per_worker

    def scaling_config(self):
        from ray.train import ScalingConfig

        return ScalingConfig(num_workers=self.num_workers, use_gpu=self.use_gpu,
                             resources_per_worker=self.ray_resources(), placement_strategy=self.placement_strategy)


class TrainConfig(WorkerSettings):
    """How to train on a dataset: the workers plus epochs, batches and schedule. Defaults: fast on one CPU."""

    epochs: int = Field(2, ge=1)
    batch_size: int = Field(8, ge=1, description="micro-batch per worker")
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(160, ge=8)
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    save_every_steps: int | None = Field(None, ge=1, description="besides the end of every epoch")
    max_steps: int | None = Field(None, ge=1, description="stop early (tests, benchmarks)")
    keep_checkpoints: int | None = Field(2, ge=1, description="newest checkpoints kept; None keeps every one "
                                                              "(safety training evaluates each for its curves)")
    log_every_steps: int = Field(5, ge=1)


class Objective(Protocol):
    """What differs between trainers. Instances are pickled to the workers: keep them stateless."""

    peft_task_type: str  # "CAUSAL_LM", "SEQ_CLS"

    def load_model(self, path: str) -> torch.nn.Module: ...

    def encode(self, tokenizer, row: dict, max_length: int) -> dict: ...

    def collate(self, examples: list[dict], tokenizer) -> dict[str, torch.Tensor]: ...

    def loss(self, engine, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise and extra metrics to log (averaged over workers)."""
        ...


def deepspeed_config(cfg: WorkerSettings, micro_batch_size: int, gradient_accumulation_steps: int = 1) -> dict:
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": {"stage": cfg.zero_stage},
        # A torch AdamW: DeepSpeed's fused CPU Adam JIT-compiles for ~2 minutes on first use.
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": cfg.bf16},
        "steps_per_print": 10**9,
    }


def with_lora(model, lora: LoraSettings | None, task_type: str):
    """The model with a fresh LoRA adapter (a no-op until trained), or unchanged when LoRA is off."""
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                            target_modules=lora.target_modules, task_type=task_type))


def init_deepspeed(model, trainable, optimizer, scheduler, ds_config: dict, use_gpu: bool):
    """deepspeed.initialize inside a Ray Train worker, reusing Ray's process group."""
    import deepspeed

    if not use_gpu:
        # The CPU accelerator JIT-compiles a shared-memory all-reduce (~100 s) that only
        # inference kernels use; training goes through gloo, so skip the build.
        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=trainable, optimizer=optimizer, lr_scheduler=scheduler,
        config=ds_config, dist_init_required=False,
    )
    return engine


def train_loop_per_worker(config: dict) -> None:
    cfg = TrainConfig.model_validate(config["train"])
    # Before anything imports deepspeed (transformers may): it picks its accelerator on import.
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cfg.use_gpu else "cpu")
    import ray
    import ray.train
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler
    from tqdm import tqdm
    from transformers import get_scheduler

    from trainers.models import load_tokenizer

    objective: Objective = config["objective"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    tokenizer = load_tokenizer(config["model_path"])
    model = with_lora(objective.load_model(config["model_path"]), cfg.lora, objective.peft_task_type)
    trainable = [p for p in model.parameters() if p.requires_grad]

    examples = [objective.encode(tokenizer, row, cfg.max_length) for row in ray.get(config["rows"])]
    sampler = DistributedSampler(examples, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(examples, batch_size=cfg.batch_size, sampler=sampler,
                        collate_fn=lambda b: objective.collate(b, tokenizer))
    total_steps = math.ceil(len(loader) / cfg.gradient_accumulation_steps) * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    engine = init_deepspeed(model, trainable, optimizer, scheduler, deepspeed_config(cfg, cfg.batch_size, cfg.gradient_accumulation_steps),
                            cfg.use_gpu)

    log: list[dict] = []
    start_epoch, skip_batches = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            _, state = engine.load_checkpoint(
                os.path.join(folder, "deepspeed"), tag="state", load_module_strict=cfg.lora is None
            )
            log = [json.loads(line) for line in Path(folder, "train_log.jsonl").read_text().splitlines()]
        start_epoch, skip_batches = state["epoch"], state["batches_done"]
        torch.set_rng_state(state["torch_rng"])

    def save(epoch: int, batches_done: int, metrics: dict) -> None:
        with tempfile.TemporaryDirectory() as folder:
            state = {"epoch": epoch, "batches_done": batches_done, "torch_rng": torch.get_rng_state()}
            engine.save_checkpoint(os.path.join(folder, "deepspeed"), tag="state", client_state=state,
                                   exclude_frozen_parameters=cfg.lora is not None)
            save_hf_model(engine.module, tokenizer, folder, config["model_path"], cfg, objective.load_model, rank)
            Path(folder, "ray_workers").mkdir(exist_ok=True)
            Path(folder, "ray_workers", f"rank{rank}.json").write_text(json.dumps(
                {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}))
            if rank == 0:
                Path(folder, "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
                Path(folder, "trainer_state.json").write_text(json.dumps(
                    {"global_step": engine.global_steps, "epoch": epoch, "batches_done": batches_done,
                     "total_steps": total_steps, "train_config": cfg.model_dump()}, indent=2))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=f"checkpoint-{engine.global_steps:06d}")

    if engine.global_steps >= total_steps:
        return  # resumed a finished run: nothing left to do
    engine.train()
    tokens, started = 0, time.perf_counter()
    phases = {"forward_s": 0.0, "backward_s": 0.0, "step_s": 0.0}  # where the time goes
    progress = tqdm(total=total_steps, initial=engine.global_steps, desc="train", disable=rank != 0, mininterval=5)
    metrics: dict = {}
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        for index, batch in enumerate(loader):
            if index < skip_batches:
                continue  # resuming mid-epoch: same order (sampler seed + epoch), skip what was done
            batch = {k: v.to(engine.device) for k, v in batch.items()}
            marks = [time.perf_counter()]
            loss, extra = objective.loss(engine, batch)
            marks.append(time.perf_counter())
            engine.backward(loss)
            marks.append(time.perf_counter())
            engine.step()
            marks.append(time.perf_counter())
            for phase, (a, b) in zip(phases, zip(marks, marks[1:])):
                phases[phase] += b - a
            tokens += int(batch["attention_mask"].sum())
            if not engine.is_gradient_accumulation_boundary():
                continue
            progress.update(1)
            step = engine.global_steps
            if step % cfg.log_every_steps == 0 or step == total_steps:
                names = sorted(extra)
                reduced = torch.tensor([loss.item(), float(tokens)] + [extra[n] for n in names], device=engine.device)
                dist.all_reduce(reduced)
                elapsed = time.perf_counter() - started
                metrics = {"step": step, "epoch": epoch, "loss": reduced[0].item() / world,
                           "lr": scheduler.get_last_lr()[0], "elapsed_s": elapsed,
                           "tokens_per_s": reduced[1].item() / elapsed} | dict(phases)
                metrics |= {n: reduced[2 + i].item() / world for i, n in enumerate(names)}
                log.append(metrics)
                progress.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
            last_batch = index + 1 == len(loader)
            if step == total_steps:
                save(epoch + int(last_batch), 0 if last_batch else index + 1, metrics)
                progress.close()
                return
            if cfg.save_every_steps and step % cfg.save_every_steps == 0 and not last_batch:
                save(epoch, index + 1, metrics)
        skip_batches = 0
        save(epoch + 1, 0, metrics)
    progress.close()


def save_hf_model(module, tokenizer, folder: str, base_path: str, cfg: WorkerSettings, load_model,
                  rank: int) -> None:
    """Write a folder `from_pretrained` loads: the full model (merged when LoRA) + tokenizer.

    `module` is the trained HF model (a PeftModel under LoRA); `load_model` loads the base again.
    """
    with gathered_parameters(module, cfg):  # collective under ZeRO-3: every rank enters, rank 0 writes
        if rank == 0:
            target = os.path.join(folder, "adapter") if cfg.lora is not None else folder
            module.save_pretrained(target)
            tokenizer.save_pretrained(folder)
    if rank == 0 and cfg.lora is not None:
        # Merge into a fresh copy of the base: the engine's weights stay untouched (and
        # partitioned under ZeRO-3), and the merge is the same code users would run.
        from peft import PeftModel

        merged = PeftModel.from_pretrained(load_model(base_path), os.path.join(folder, "adapter"))
        merged.merge_and_unload().save_pretrained(folder)


def gathered_parameters(module, cfg: WorkerSettings):
    """Under ZeRO-3 each rank holds a shard: gather the full weights for reading (a collective)."""
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(module.parameters())) if cfg.zero_stage == 3 else nullcontext()


class TrainResult(StrictModel):
    checkpoint: str
    global_step: int
    log: list[dict]


def run_training(objective: Objective, cfg: TrainConfig, model_path: str, rows: list[dict],
                 run_dir: str | Path) -> TrainResult:
    """Train on Ray Train; resume from the latest checkpoint already in `run_dir`."""
    import ray
    from ray.train import CheckpointConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    run_dir = Path(run_dir).resolve()
    trainer = TorchTrainer(
        train_loop_per_worker,
        # The data contract: validated rows in the object store, so no worker needs the file.
        train_loop_config={"train": cfg.model_dump(), "objective": objective, "model_path": model_path,
                           "rows": ray.put(rows)},
        scaling_config=cfg.scaling_config(),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        run_config=RunConfig(name=run_dir.name, storage_path=str(run_dir.parent),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training in {run_dir} finished without a checkpoint")
    folder = Path(result.checkpoint.path)
    state = json.loads((folder / "trainer_state.json").read_text())
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return TrainResult(checkpoint=str(folder), global_step=state["global_step"], log=log)
