"""The PPO learner: Ray Train workers holding the policy, its value head and DeepSpeed.

Unlike SFT, the learner does not own the loop: the PPO controller (`trainers.ppo`) does, and the
learner serves its requests. The Ray Train workers stay up for the whole run and take commands
from a mailbox actor, which is the whole contract between the two sides:

    controller → each rank          rank → controller
    ("score", rollouts shard)       per rollout: logprobs, ref_logprobs, values (response-aligned)
    ("update", experience shard)    PPO statistics (averaged over ranks) + rank 0: new weights ref
    ("save", controller state)      checkpoint path (a Ray Train checkpoint, HF-format policy inside)
    ("stop",)                       —

On start every rank answers once with where it runs and, when a checkpoint was restored
(Ray Train V2 resumes from the latest one in the run folder), rank 0 returns the controller
state saved with it and the policy weights, so the controller continues where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import threading
import traceback
from pathlib import Path

import torch

from trainers.ppo_algorithm import entropy_from_logits, masked_mean, ppo_loss
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


def pack(rollouts: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Prompt+response rows, right-padded; `positions[i, j]` indexes the logits that predict
    response token j of row i (the position just before it)."""
    seqs = [r["prompt_ids"] + r["response_ids"] for r in rollouts]
    width, length = max(map(len, seqs)), max(len(r["response_ids"]) for r in rollouts)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        input_ids[i, : len(seq)], attention_mask[i, : len(seq)] = torch.tensor(seq), 1
    starts = torch.tensor([len(r["prompt_ids"]) - 1 for r in rollouts])
    lengths = torch.tensor([len(r["response_ids"]) for r in rollouts])
    offsets = torch.arange(length)
    mask = (offsets[None] < lengths[:, None]).float()
    positions = (starts[:, None] + offsets[None]).clamp(max=width - 2)
    tokens = input_ids.gather(1, positions + 1)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "positions": positions, "tokens": tokens,
            "mask": mask}


def response_logprobs(logits: torch.Tensor, batch: dict, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the sampled response tokens (and the response-position logits)."""
    vocab = logits.shape[-1]
    picked = logits.gather(1, batch["positions"][..., None].expand(-1, -1, vocab)) / temperature
    logprobs = torch.log_softmax(picked, dim=-1).gather(-1, batch["tokens"][..., None]).squeeze(-1)
    return logprobs * batch["mask"], picked


def shard_of(rows: list, rank: int, world: int) -> list:
    size = len(rows) // world
    return rows[rank * size : (rank + 1) * size]


def learner_loop_per_worker(config: dict) -> None:
    cfg = PPOConfig.model_validate(config["ppo"])
    learner = cfg.learner
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if learner.use_gpu else "cpu")
    import ray
    import ray.train
    import torch.distributed as dist

    from trainers.engine import deepspeed_config, gathered_parameters, init_deepspeed, save_hf_model, with_lora
    from trainers.models import load_causal_lm, load_tokenizer

    mailbox, model_path = config["mailbox"], config["model_path"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(learner.cpus_per_worker)))
    torch.manual_seed(cfg.seed)  # the same fresh LoRA adapter on every rank

    tokenizer = load_tokenizer(model_path)
    model = PolicyWithValueHead(with_lora(load_causal_lm(model_path), learner.lora, "CAUSAL_LM"))
    # The reference is the starting model: with LoRA, the same weights with the adapter off.
    reference = None if learner.lora else load_causal_lm(model_path).eval().requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learner.learning_rate, weight_decay=learner.weight_decay)
    engine = init_deepspeed(model, trainable, optimizer, None, deepspeed_config(learner, learner.minibatch_size),
                            learner.use_gpu)
    device = engine.device
    if reference is not None:
        reference.to(device)  # the separate reference model (no LoRA) must sit with the batches

    def publish_weights():
        """Rank 0 puts the policy's trainable weights in the object store for the rollout workers."""
        policy = engine.module.policy
        with gathered_parameters(policy, learner):
            if rank != 0:
                return None
            if learner.lora is not None:
                from peft import get_peft_model_state_dict

                state = get_peft_model_state_dict(policy)
            else:
                state = policy.state_dict()
            return ray.put({k: v.detach().to("cpu", copy=True) for k, v in state.items()})

    restored = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            _, client_state = engine.load_checkpoint(os.path.join(folder, "deepspeed"), tag="state",
                                                     load_module_strict=learner.lora is None)
            restored = json.loads(Path(folder, "controller_state.json").read_text())
        torch.set_rng_state(client_state["torch_rng"])

    @torch.no_grad()
    def score(rollouts: list[dict]) -> list[dict]:
        engine.eval()
        out = []
        for start in range(0, len(rollouts), learner.minibatch_size):
            chunk = rollouts[start : start + learner.minibatch_size]
            batch = {k: v.to(device) for k, v in pack(chunk, tokenizer.pad_token_id).items()}
            logits, values = engine(batch["input_ids"], batch["attention_mask"])
            logprobs, _ = response_logprobs(logits, batch, cfg.rollout.temperature)
            values = values.gather(1, batch["positions"]) * batch["mask"]
            if reference is None:
                with engine.module.policy.disable_adapter():
                    ref_logits = engine.module.policy(input_ids=batch["input_ids"],
                                                      attention_mask=batch["attention_mask"]).logits
            else:
                ref_logits = reference(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            ref_logprobs, _ = response_logprobs(ref_logits, batch, cfg.rollout.temperature)
            for i, row in enumerate(chunk):
                n = len(row["response_ids"])
                out.append({"logprobs": logprobs[i, :n].cpu(), "ref_logprobs": ref_logprobs[i, :n].cpu(),
                            "values": values[i, :n].cpu()})
        return out

    def update(experience: list[dict], iteration: int) -> dict:
        engine.train()
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + iteration * 31 + rank)
        sums: dict[str, float] = {}
        steps = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(experience), generator=generator).tolist()
            for start in range(0, len(order), learner.minibatch_size):
                chunk = [experience[i] for i in order[start : start + learner.minibatch_size]]
                batch = {k: v.to(device) for k, v in pack(chunk, tokenizer.pad_token_id).items()}
                mask = batch["mask"]

                def padded(key: str) -> torch.Tensor:
                    return torch.nn.utils.rnn.pad_sequence([row[key] for row in chunk], batch_first=True).to(device)

                logits, values = engine(batch["input_ids"], batch["attention_mask"])
                logprobs, picked = response_logprobs(logits, batch, cfg.rollout.temperature)
                values = values.gather(1, batch["positions"]) * mask
                loss, stats = ppo_loss(logprobs, padded("old_logprobs"), values, padded("old_values"),
                                       padded("advantages"), padded("returns"), mask, cfg.clip_range,
                                       cfg.clip_range_value, cfg.vf_coef)
                engine.backward(loss)
                engine.step()
                with torch.no_grad():
                    stats["entropy"] = masked_mean(entropy_from_logits(picked), mask).item()
                stats["loss"] = loss.item()
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                steps += 1
        names = sorted(sums)
        reduced = torch.tensor([sums[n] / steps for n in names], device=device)
        dist.all_reduce(reduced)
        return {n: reduced[i].item() / world for i, n in enumerate(names)} | {"optimizer_steps": steps}

    def save(controller_state: dict) -> str:
        with tempfile.TemporaryDirectory() as folder:
            engine.save_checkpoint(os.path.join(folder, "deepspeed"), tag="state",
                                   client_state={"torch_rng": torch.get_rng_state()},
                                   exclude_frozen_parameters=learner.lora is not None)
            save_hf_model(engine.module.policy, tokenizer, folder, model_path, learner, load_causal_lm, rank)
            Path(folder, "ray_workers").mkdir(exist_ok=True)
            Path(folder, "ray_workers", f"rank{rank}.json").write_text(json.dumps(
                {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}))
            if rank == 0:
                Path(folder, "controller_state.json").write_text(json.dumps(controller_state))
            name = f"checkpoint-{controller_state['iteration']:06d}"
            ray.train.report({"iteration": controller_state["iteration"]},
                             checkpoint=ray.train.Checkpoint.from_directory(folder), checkpoint_dir_name=name)
        return name

    hello = {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
    if restored is not None:
        hello |= {"controller_state": restored, "weights": publish_weights()}
    ray.get(mailbox.reply.remote(rank, {"ok": hello}))
    while True:
        command = ray.get(mailbox.take.remote(rank, COMMAND_POLL_S))
        if command is None:
            continue
        op = command["op"]
        if op == "stop":
            return
        try:
            if op == "score":
                result = score(command["rollouts"])
            elif op == "update":
                result = update(command["experience"], command["iteration"]) | {"weights": publish_weights()}
            elif op == "save":
                result = save(command["controller_state"])
            else:
                raise ValueError(f"unknown learner command {op!r}")
        except Exception:
            ray.get(mailbox.reply.remote(rank, {"error": traceback.format_exc()}))
            raise
        ray.get(mailbox.reply.remote(rank, {"ok": result}))


class LearnerMailbox:
    """Commands to each rank and their replies back: an async actor, so waiting costs nothing."""

    def __init__(self, world: int):
        self.commands = [asyncio.Queue() for _ in range(world)]
        self.replies: asyncio.Queue = asyncio.Queue()

    async def post(self, rank: int, command: dict) -> None:
        await self.commands[rank].put(command)

    async def take(self, rank: int, timeout_s: float) -> dict | None:
        try:
            return await asyncio.wait_for(self.commands[rank].get(), timeout_s)
        except asyncio.TimeoutError:
            return None

    async def reply(self, rank: int, message: dict) -> None:
        await self.replies.put((rank, message))

    async def collect(self, timeout_s: float) -> tuple[int, dict] | None:
        try:
            return await asyncio.wait_for(self.replies.get(), timeout_s)
        except asyncio.TimeoutError:
            return None


class Learner:
    """The controller's side: starts the Ray Train run in a background thread and talks to it."""

    def __init__(self, cfg: PPOConfig, model_path: str, run_dir: Path):
        self.cfg, self.model_path, self.run_dir = cfg, model_path, run_dir
        self.world = cfg.learner.num_workers
        self.hello: list[dict] = []
        self.checkpoint: str | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> Learner:
        import ray
        from ray.train import CheckpointConfig, RunConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        self.mailbox = ray.remote(num_cpus=0)(LearnerMailbox).remote(self.world)
        trainer = TorchTrainer(
            learner_loop_per_worker,
            train_loop_config={"ppo": self.cfg.model_dump(), "model_path": self.model_path, "mailbox": self.mailbox},
            scaling_config=self.cfg.learner.scaling_config(),
            torch_config=TorchConfig(backend="nccl" if self.cfg.learner.use_gpu else "gloo"),
            run_config=RunConfig(name=self.run_dir.name, storage_path=str(self.run_dir.parent),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)),
        )

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

        replies: dict[int, dict] = {}
        while len(replies) < self.world:
            got = ray.get(self.mailbox.collect.remote(COMMAND_POLL_S))
            if got is None:
                if not self._thread.is_alive():
                    raise RuntimeError(f"the PPO learner stopped: {self._error!r}")
                continue
            rank, message = got
            if "error" in message:
                raise RuntimeError(f"PPO learner rank {rank} failed:\n{message['error']}")
            replies[rank] = message["ok"]
        return [replies[r] for r in range(self.world)]

    def _call(self, op: str, per_rank: list[dict] | None = None) -> list:
        import ray

        ray.get([self.mailbox.post.remote(r, {"op": op} | (per_rank[r] if per_rank else {}))
                 for r in range(self.world)])
        return self._collect()

    def score(self, rollouts: list[dict]) -> list[dict]:
        replies = self._call("score", [{"rollouts": shard_of(rollouts, r, self.world)} for r in range(self.world)])
        return [row for reply in replies for row in reply]

    def update(self, experience: list[dict], iteration: int) -> tuple[dict, object]:
        replies = self._call("update", [{"experience": shard_of(experience, r, self.world), "iteration": iteration}
                                        for r in range(self.world)])
        stats = dict(replies[0])
        return stats, stats.pop("weights")

    def save(self, controller_state: dict) -> str:
        return self._call("save", [{"controller_state": controller_state}] * self.world)[0]

    def __exit__(self, *exc) -> None:
        import ray

        if self._thread.is_alive():
            ray.get([self.mailbox.post.remote(r, {"op": "stop"}) for r in range(self.world)])
            self._thread.join()
        ray.kill(self.mailbox)
