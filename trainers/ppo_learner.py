"""The PPO learner: Ray Train workers holding the policy, its value head and DeepSpeed.

Unlike SFT, the learner does not own the loop: the PPO controller (`trainers.ppo`) does, and
calls the learner's methods. `Learner` is the controller's side; each Ray Train rank runs a
`LearnerWorker` on the shared worker runtime (`trainers.engine.WorkerRuntime`):

    Learner.score(RolloutBatch) → ScoredBatch           log-probs of policy and reference, values
    Learner.update(Experience, iteration) → stats, weights   clipped PPO epochs; weights: an ObjectRef
    Learner.save(controller_state) → checkpoint name     a Ray Train checkpoint, HF-format policy inside

Between the two sides runs a mailbox actor. Ray Train owns the worker processes and only runs
the function it was given in them: it offers no handle to call a method on a rank, and the
DeepSpeed engine cannot leave its process. So each rank loops over a queue of commands, and a
command is a typed dataclass that names the `LearnerWorker` method it calls (`Score`,
`Update`, `Save`, `Stop`) rather than a string to dispatch on.

On start every rank answers once with where it runs and, when a checkpoint was restored
(Ray Train V2 resumes from the latest one in the run folder), rank 0 returns the controller
state saved with it and the policy weights, so the controller continues where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainers.engine import WorkerJob, WorkerRuntime, gathered_parameters, ray_trainer
from trainers.ppo_algorithm import entropy_from_logits, masked_mean, ppo_loss
from trainers.ppo_batch import Experience, PackedRollouts, RolloutBatch, ScoredBatch
from trainers.ppo_config import PPOConfig

COMMAND_POLL_S = 5.0


class PolicyWithValueHead(torch.nn.Module):
    """The causal LM plus a scalar value per position, read off its last hidden state."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy
        self.value_head = torch.nn.Linear(policy.config.hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)  # start from V=0: no early value noise in advantages
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return out.logits, self.value_head(out.hidden_states[-1]).squeeze(-1)


def response_logprobs(logits: torch.Tensor, batch: PackedRollouts, temperature: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the sampled response tokens (and the response-position logits)."""
    vocab = logits.shape[-1]
    picked = logits.gather(1, batch.positions[..., None].expand(-1, -1, vocab)) / temperature
    logprobs = torch.log_softmax(picked, dim=-1).gather(-1, batch.tokens[..., None]).squeeze(-1)
    return logprobs * batch.mask, picked


@dataclass(frozen=True)
class WorkerHello:
    """A rank's first message: where it runs, and on resume (rank 0) what it restored."""

    node_id: str
    pid: int
    controller_state: dict | None = None  # saved with the checkpoint the run resumed from
    weights: Any = None  # ObjectRef to the restored policy's weights (rank 0, on resume)


class LearnerWorker:
    """One rank of the learner: the policy + value head under DeepSpeed, and PPO's two steps."""

    def __init__(self, cfg: PPOConfig, job: WorkerJob):
        self.cfg, learner = cfg, cfg.learner
        # Seeded with PPO's seed (not the learner's): the same fresh LoRA adapter on every rank.
        self.runtime = runtime = WorkerRuntime(learner, job, seed=cfg.seed)
        from trainers.models import load_causal_lm  # after the runtime has picked DeepSpeed's accelerator

        self.rank, self.world, self.tokenizer = runtime.rank, runtime.world, runtime.tokenizer
        model = PolicyWithValueHead(runtime.with_lora(load_causal_lm(job.model_path), "CAUSAL_LM"))
        # The reference is the starting model: with LoRA, the same weights with the adapter off.
        self.reference = None if learner.lora else load_causal_lm(job.model_path).eval().requires_grad_(False)
        self.engine = runtime.init_engine(model, learner.minibatch_size)
        self.device = self.engine.device
        if self.reference is not None:
            self.reference.to(self.device)  # the separate reference model (no LoRA) must sit with the batches
        restored = runtime.restore(lambda folder: json.loads((folder / "controller_state.json").read_text()))
        self.restored_state = restored[1] if restored else None

    def hello(self) -> WorkerHello:
        import ray

        hello = WorkerHello(node_id=ray.get_runtime_context().get_node_id(), pid=os.getpid())
        if self.restored_state is None:
            return hello
        return WorkerHello(hello.node_id, hello.pid, self.restored_state, self.publish_weights())

    def publish_weights(self):
        """Rank 0 puts the policy's trainable weights in the object store for the rollout workers
        (a collective under ZeRO-3: every rank calls it)."""
        import ray

        policy = self.engine.module.policy
        with gathered_parameters(policy, self.cfg.learner):
            if self.rank != 0:
                return None
            if self.cfg.learner.lora is not None:
                from peft import get_peft_model_state_dict

                state = get_peft_model_state_dict(policy)
            else:
                state = policy.state_dict()
            return ray.put({k: v.detach().to("cpu", copy=True) for k, v in state.items()})

    def _reference_logits(self, batch: PackedRollouts) -> torch.Tensor:
        if self.reference is not None:
            return self.reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        with self.engine.module.policy.disable_adapter():
            return self.engine.module.policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits

    @torch.no_grad()
    def score(self, rollouts: RolloutBatch) -> ScoredBatch:
        engine, temperature, size = self.engine, self.cfg.rollout.temperature, self.cfg.learner.minibatch_size
        engine.eval()
        rows: dict[str, list[torch.Tensor]] = {name: [] for name in ScoredBatch.TENSORS}
        for start in range(0, len(rollouts), size):
            chunk = rollouts.select(range(start, min(start + size, len(rollouts))))
            batch = chunk.pack(self.tokenizer.pad_token_id).to(self.device)
            logits, values = engine(batch.input_ids, batch.attention_mask)
            logprobs, _ = response_logprobs(logits, batch, temperature)
            values = values.gather(1, batch.positions) * batch.mask
            ref_logprobs, _ = response_logprobs(self._reference_logits(batch), batch, temperature)
            for i, n in enumerate(chunk.response_lengths().tolist()):
                for name, tensor in (("logprobs", logprobs), ("ref_logprobs", ref_logprobs), ("values", values)):
                    rows[name].append(tensor[i, :n].cpu())
        return ScoredBatch.from_rows(**rows)

    def update(self, experience: Experience, iteration: int) -> tuple[dict[str, float], Any]:
        """PPO epochs over this rank's experience; returns the statistics averaged over ranks and
        (rank 0) an ObjectRef to the new weights."""
        import torch.distributed as dist

        cfg, engine = self.cfg, self.engine
        engine.train()
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + iteration * 31 + self.rank)
        sums: dict[str, float] = {}
        steps = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(experience), generator=generator).tolist()
            for minibatch in experience.minibatches(order, cfg.learner.minibatch_size):
                for key, value in self._step(minibatch).items():
                    sums[key] = sums.get(key, 0.0) + value
                steps += 1
        names = sorted(sums)
        reduced = torch.tensor([sums[n] / steps for n in names], device=self.device)
        dist.all_reduce(reduced)
        stats = {n: reduced[i].item() / self.world for i, n in enumerate(names)} | {"optimizer_steps": steps}
        return stats, self.publish_weights()

    def _step(self, minibatch: Experience) -> dict[str, float]:
        """One optimizer step on the clipped PPO loss; returns its statistics."""
        cfg, engine = self.cfg, self.engine
        batch = minibatch.rollouts.pack(self.tokenizer.pad_token_id).to(self.device)
        mask = batch.mask
        logits, values = engine(batch.input_ids, batch.attention_mask)
        logprobs, picked = response_logprobs(logits, batch, cfg.rollout.temperature)
        values = values.gather(1, batch.positions) * mask
        old = {name: getattr(minibatch, name).to(self.device) for name in Experience.TENSORS}
        loss, stats = ppo_loss(logprobs, old["old_logprobs"], values, old["old_values"], old["advantages"],
                               old["returns"], mask, cfg.clip_range, cfg.clip_range_value, cfg.vf_coef)
        engine.backward(loss)
        engine.step()
        with torch.no_grad():
            stats["entropy"] = masked_mean(entropy_from_logits(picked), mask).item()
        stats["loss"] = loss.item()
        return stats

    def save(self, controller_state: dict) -> str:
        from trainers.models import load_causal_lm

        iteration = controller_state["iteration"]
        return self.runtime.save(f"checkpoint-{iteration:06d}", iteration, {},
                                 {"controller_state.json": json.dumps(controller_state)}, {"iteration": iteration},
                                 self.engine.module.policy, load_causal_lm)


# The commands a rank takes from the mailbox: one dataclass per `LearnerWorker` method.
@dataclass(frozen=True)
class Score:
    rollouts: RolloutBatch  # this rank's shard

    def run(self, worker: LearnerWorker) -> ScoredBatch:
        return worker.score(self.rollouts)


@dataclass(frozen=True)
class Update:
    experience: Experience  # this rank's shard
    iteration: int  # seeds the minibatch order

    def run(self, worker: LearnerWorker) -> tuple[dict[str, float], Any]:
        return worker.update(self.experience, self.iteration)


@dataclass(frozen=True)
class Save:
    controller_state: dict

    def run(self, worker: LearnerWorker) -> str:
        return worker.save(self.controller_state)


@dataclass(frozen=True)
class Stop:
    """End the rank's loop, and with it the Ray Train run."""


Command = Score | Update | Save | Stop


@dataclass(frozen=True)
class Reply:
    """A rank's answer to one command: the method's return value, or the traceback it raised."""

    value: Any = None
    error: str | None = None


def learner_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point for each learner rank: set up, say hello, then serve commands."""
    import ray

    cfg = PPOConfig.model_validate(config["ppo"])
    mailbox = config["mailbox"]
    worker = LearnerWorker(cfg, config["job"])
    rank = worker.rank
    ray.get(mailbox.reply.remote(rank, Reply(worker.hello())))
    while True:
        command: Command | None = ray.get(mailbox.take.remote(rank, COMMAND_POLL_S))
        if command is None:
            continue
        if isinstance(command, Stop):
            return
        try:
            result = command.run(worker)
        except Exception:
            ray.get(mailbox.reply.remote(rank, Reply(error=traceback.format_exc())))
            raise
        ray.get(mailbox.reply.remote(rank, Reply(result)))


class LearnerMailbox:
    """Commands to each rank and their replies back: an async actor, so waiting costs nothing."""

    def __init__(self, world: int):
        self.commands = [asyncio.Queue() for _ in range(world)]
        self.replies: asyncio.Queue = asyncio.Queue()

    async def post(self, rank: int, command: Command) -> None:
        await self.commands[rank].put(command)

    async def take(self, rank: int, timeout_s: float) -> Command | None:
        try:
            return await asyncio.wait_for(self.commands[rank].get(), timeout_s)
        except asyncio.TimeoutError:
            return None

    async def reply(self, rank: int, reply: Reply) -> None:
        await self.replies.put((rank, reply))

    async def collect(self, timeout_s: float) -> tuple[int, Reply] | None:
        try:
            return await asyncio.wait_for(self.replies.get(), timeout_s)
        except asyncio.TimeoutError:
            return None


class Learner:
    """The controller's side: starts the Ray Train run in a background thread and calls its ranks."""

    def __init__(self, cfg: PPOConfig, model_path: str, run_dir: Path, events_path: str | Path | None = None,
                 events_stage: str | None = None):
        self.cfg, self.model_path, self.run_dir = cfg, model_path, run_dir
        self.job = WorkerJob(model_path=model_path, run_dir=str(run_dir), events_stage=events_stage,
                             events_path=str(Path(events_path).resolve()) if events_path else None)
        self.world = cfg.learner.num_workers
        self.hello: list[WorkerHello] = []
        self.checkpoint: str | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> Learner:
        import ray

        self.mailbox = ray.remote(num_cpus=0)(LearnerMailbox).remote(self.world)
        loop_config = {"job": self.job, "ppo": self.cfg.model_dump(), "mailbox": self.mailbox}
        trainer = ray_trainer(learner_loop_per_worker, loop_config, self.cfg.learner, self.run_dir,
                              keep_checkpoints=2)

        def fit() -> None:
            try:
                result = trainer.fit()
                self.checkpoint = result.checkpoint.path if result.checkpoint else None
            except BaseException as err:  # surfaced to the controller by `_collect`
                self._error = err

        self._thread = threading.Thread(target=fit, name="ppo-learner", daemon=True)
        self._thread.start()
        self.hello = self._collect()
        return self

    def _collect(self) -> list:
        """One reply from every rank, in rank order; fails fast when a rank or the run fails."""
        import ray

        replies: dict[int, Any] = {}
        while len(replies) < self.world:
            got = ray.get(self.mailbox.collect.remote(COMMAND_POLL_S))
            if got is None:
                if not self._thread.is_alive():
                    raise RuntimeError(f"the PPO learner stopped: {self._error!r}")
                continue
            rank, reply = got
            if reply.error is not None:
                raise RuntimeError(f"PPO learner rank {rank} failed:\n{reply.error}")
            replies[rank] = reply.value
        return [replies[r] for r in range(self.world)]

    def _call(self, commands: list[Command]) -> list:
        """Command r to rank r; their replies in rank order."""
        import ray

        ray.get([self.mailbox.post.remote(rank, command) for rank, command in enumerate(commands)])
        return self._collect()

    def score(self, rollouts: RolloutBatch) -> ScoredBatch:
        return ScoredBatch.concat(self._call([Score(rollouts.shard(r, self.world)) for r in range(self.world)]))

    def update(self, experience: Experience, iteration: int) -> tuple[dict[str, float], Any]:
        """Returns rank 0's statistics (already averaged over ranks) and its ObjectRef to the new weights."""
        replies = self._call([Update(experience.shard(r, self.world), iteration) for r in range(self.world)])
        return replies[0]

    def save(self, controller_state: dict) -> str:
        return self._call([Save(controller_state)] * self.world)[0]

    def __exit__(self, *exc) -> None:
        import ray

        if self._thread.is_alive():
            ray.get([self.mailbox.post.remote(r, Stop()) for r in range(self.world)])
            self._thread.join()
        ray.kill(self.mailbox)
