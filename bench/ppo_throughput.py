"""PPO throughput: our PPO (Serve rollout + Serve reward + Ray Train/DeepSpeed learner) against
TRL's PPOTrainer, in one run.

Same policy, reward model, prompts (the very same 16 prompts each iteration, through the chat
template), response length, sampling temperature, LoRA setting, PPO epochs and minibatch, fp32,
2 torch threads. One PPO iteration = sample 16 answers, score them with the reward model, the
policy's and reference's log-probs and the values, then 2 PPO epochs of 2 minibatches of 8.
Warm-up iterations are run and left out; start-up (Serve deploys, Ray Train worker start, model
loading) and our end-of-run checkpoint are reported apart from the per-iteration numbers.

The reward model is a SmolLM2-backbone (or tiny-backbone) sequence classifier whose score head
is untrained (seeded random init): TRL scores the policy's own token ids, so its reward model
must share the policy's tokenizer, and an untrained head costs the same compute as a trained one.
Both sides load the same folder; TRL's value model starts from it too, as in TRL's examples.

    .venv/bin/python bench/ppo_throughput.py [--model smollm2-135m-instruct] [--iterations 4] [--warmup 1]
                                             [--trl-value lora|full]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from backdoors.datasets import train_prompts  # noqa: E402
from trainers.chat import prompt_text  # noqa: E402
from trainers.engine import LoraSettings  # noqa: E402
from trainers.models import load_causal_lm, load_tokenizer, resolve_model  # noqa: E402
from trainers.ppo import PPOConfig, prompt_batch  # noqa: E402

THREADS = 2
PHASES = ("rollout_s", "reward_s", "score_s", "update_s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reward_folder(model_path: str, folder: Path) -> str:
    """The policy's backbone with a fresh scalar score head (seeded), saved once for both sides."""
    from reward_models.preference_model import load_reward_model

    torch.manual_seed(0)
    model = load_reward_model(model_path)  # AutoModelForSequenceClassification, num_labels=1, fp32
    model.save_pretrained(folder)
    load_tokenizer(model_path).save_pretrained(folder)
    return str(folder)


def summarise(iterations: list[dict]) -> dict:
    """Tokens/s and seconds per iteration over the measured iterations, and where the time went."""
    total_s = sum(it["iteration_s"] for it in iterations)
    tokens = sum(it["generated_tokens"] for it in iterations)
    split = {k: sum(it[k] for it in iterations) / len(iterations) for k in PHASES}
    split["other_s"] = total_s / len(iterations) - sum(split.values())
    return {"generated_tokens_per_s": tokens / total_s, "s_per_iteration": total_s / len(iterations),
            "generated_tokens_per_iteration": tokens / len(iterations), "time_split_s": split}


def timed(fn, sink: list):
    """`fn`, appending its wall time to `sink` on every call."""

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - started)

    return wrapper


def ours(cfg: PPOConfig, warmup: int, model_path: str, reward_path: str, prompts: list[str], workdir: Path) -> dict:
    import ray
    from ray import serve

    import trainers.rollout
    from reward_models.serve import deploy_reward_worker
    from reward_models.serve_config import RewardServeConfig
    from services.experiment import RayConfig
    from services.ray_cluster import connect
    from trainers.ppo import run_ppo
    from trainers.ppo_learner import Learner

    # 4 logical CPUs on 2 cores: rollout replica (1) + reward replica (0.5) + learner worker (2)
    # must all be placed; they compute one after another, each with 2 threads.
    connect(RayConfig(num_cpus=4))
    started = time.perf_counter()
    handle = deploy_reward_worker(reward_path, RewardServeConfig(
        num_cpus_per_replica=0.5, num_threads=THREADS, max_batch_size=32, http_port=free_port()))
    reward_deploy_s = time.perf_counter() - started

    # Time the start-up pieces run_ppo does before its first iteration, without touching trainers/.
    spans: dict[str, list[float]] = {"rollout_deploy_s": [], "learner_start_s": [], "checkpoint_s": []}
    originals = (trainers.rollout.deploy_rollout_workers, Learner.__enter__, Learner.save)
    trainers.rollout.deploy_rollout_workers = timed(originals[0], spans["rollout_deploy_s"])
    Learner.__enter__ = timed(originals[1], spans["learner_start_s"])
    Learner.save = timed(originals[2], spans["checkpoint_s"])
    try:
        started = time.perf_counter()
        result = run_ppo(cfg, model_path, prompts, handle, workdir / "ours")
        wall = time.perf_counter() - started
    finally:
        trainers.rollout.deploy_rollout_workers, Learner.__enter__, Learner.save = originals
        serve.shutdown()
        ray.shutdown()
    keys = ("iteration", "iteration_s", *PHASES, "generated_tokens", "response_length", "finished_share")
    per_iteration = [{k: e[k] for k in keys} for e in result.log]
    startup = {"reward_deploy_s": reward_deploy_s, "rollout_deploy_s": sum(spans["rollout_deploy_s"]),
               "learner_start_s": sum(spans["learner_start_s"])}  # Ray Train workers + model + DeepSpeed
    return summarise(per_iteration[warmup:]) | {
        "warmup_iterations": warmup, "iterations": per_iteration, "startup_s": sum(startup.values()),
        "startup_split_s": startup, "checkpoint_s": sum(spans["checkpoint_s"]), "run_ppo_wall_s": wall,
        # run_ppo's own wall time outside its iterations: the rollout deploy, learner start, final checkpoint, teardown
        "run_ppo_outside_iterations_s": wall - sum(e["iteration_s"] for e in result.log)}


def trl(cfg: PPOConfig, warmup: int, model_path: str, reward_path: str, prompts: list[str], value_mode: str) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, inject_adapter_in_model
    from torch.utils.data import DataLoader
    from transformers import TrainerCallback

    import trl.experimental.ppo.ppo_trainer as ppo_module
    from reward_models.preference_model import load_reward_model
    from trl.experimental.ppo import PPOConfig as TRLConfig
    from trl.experimental.ppo import PPOTrainer

    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    tokenizer = load_tokenizer(model_path)
    tokenizer.padding_side = "left"  # queries are left-padded for generation, as TRL's examples do
    pad_note = None
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        # TRL takes every pad id for padding (attention_mask = ids != pad), so pad == EOS would mask
        # the <|im_end|> tokens inside the chat-templated prompt and cut the reward before EOS.
        # SmolLM2 has <|endoftext|> (id 0) unused in chat: pad with it (no new token, no resize).
        tokenizer.pad_token = "<|endoftext|>"
        pad_note = "pad token <|endoftext|> instead of SmolLM2's pad == EOS (<|im_end|>)"
    lora = cfg.learner.lora
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.target_modules, task_type="CAUSAL_LM")
    policy = load_causal_lm(model_path)
    reward_model = load_reward_model(reward_path)
    value_model = load_reward_model(reward_path)
    if value_mode == "lora":
        # The same adapter recipe on the value network (its score head trained in full), so both
        # sides train LoRA + a scalar head; TRL would otherwise train all 135M value parameters.
        inject_adapter_in_model(LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                           target_modules=lora.target_modules), value_model.model)
        for name, param in value_model.named_parameters():
            param.requires_grad = "lora_" in name or name.startswith("score.")

    # The exact prompts our PPO samples each iteration, in that order (TRL's loader is replaced below).
    total = cfg.iterations
    ordered = [q for it in range(total) for q in prompt_batch(prompts, cfg, it)]
    encoded = [tokenizer(prompt_text(tokenizer, q), add_special_tokens=False)["input_ids"] for q in ordered]
    dataset = Dataset.from_list([{"input_ids": ids} for ids in encoded])
    args = TRLConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=cfg.prompts_per_iteration,
        gradient_accumulation_steps=1, num_mini_batches=cfg.prompts_per_iteration // cfg.learner.minibatch_size,
        num_ppo_epochs=cfg.ppo_epochs, total_episodes=cfg.prompts_per_iteration * total,
        local_rollout_forward_batch_size=cfg.prompts_per_iteration, response_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature, stop_token="eos", learning_rate=cfg.learner.learning_rate,
        lr_scheduler_type="constant", kl_coef=cfg.kl_coef, cliprange=cfg.clip_range,
        cliprange_value=cfg.clip_range_value, vf_coef=cfg.vf_coef, gamma=cfg.gamma, lam=cfg.lam,
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False, report_to=[], save_strategy="no",
        num_sample_generations=0, logging_steps=10**6, dataloader_num_workers=0, seed=cfg.seed, disable_tqdm=True,
    )

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks: list[float] = []

        def on_train_begin(self, *a, **k):
            self.marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.marks.append(time.perf_counter())

    clock = Clock()
    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=None,
                         reward_model=reward_model, train_dataset=dataset, value_model=value_model,
                         peft_config=peft_config, callbacks=[clock])
    # Same prompts, same order as ours: TRL's own loader shuffles.
    trainer.dataloader = DataLoader(dataset, batch_size=cfg.prompts_per_iteration, shuffle=False,
                                    collate_fn=trainer.data_collator, drop_last=True)
    startup_s = time.perf_counter() - started
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    # Instrument the module-level helpers train() calls, to split each iteration into phases.
    events: list[tuple] = []  # (kind, start, end, extra)
    originals = {name: getattr(ppo_module, name) for name in ("batch_generation", "forward", "get_reward")}
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    def batch_generation(model, queries, *a, **k):
        t0 = time.perf_counter()
        query_responses, logits = originals["batch_generation"](model, queries, *a, **k)
        # Count what ours counts: each answer up to and including its first EOS.
        responses = query_responses[:, queries.shape[1]:]
        is_eos = responses == eos
        ended = is_eos.any(1)
        lengths = torch.where(ended, is_eos.int().argmax(1) + 1, responses.shape[1])
        events.append(("generate", t0, time.perf_counter(), {
            "generated_tokens": int(lengths.sum()), "generated_steps": responses.shape[1],
            "finished_share": ended.float().mean().item(),
            "prompt_tokens": (queries != pad).sum(1).float().mean().item()}))
        return query_responses, logits

    def forward(model, *a, **k):
        t0 = time.perf_counter()
        out = originals["forward"](model, *a, **k)
        events.append(("train_forward" if torch.is_grad_enabled() else "ref_forward", t0, time.perf_counter(), None))
        return out

    def get_reward(model, *a, **k):
        t0 = time.perf_counter()
        out = originals["get_reward"](model, *a, **k)
        events.append(("reward" if model is trainer.reward_model else "value", t0, time.perf_counter(), None))
        return out

    def collect(*a, **k):  # TRL calls gc.collect() twice an iteration
        t0 = time.perf_counter()
        out = gc.collect(*a, **k)
        events.append(("gc", t0, time.perf_counter(), None))
        return out

    patches = {"batch_generation": batch_generation, "forward": forward, "get_reward": get_reward,
               "gc": SimpleNamespace(collect=collect)}
    originals["gc"] = ppo_module.gc
    for name, fn in patches.items():
        setattr(ppo_module, name, fn)
    try:
        trained = time.perf_counter()
        trainer.train()
        train_wall = time.perf_counter() - trained
    finally:
        for name, fn in originals.items():
            setattr(ppo_module, name, fn)

    # Iteration i runs from the previous on_step_end (or on_train_begin) to its own on_step_end.
    per_iteration = []
    for i, (begin, end) in enumerate(zip(clock.marks, clock.marks[1:])):
        inside = [e for e in events if begin <= e[1] < end]
        gen = next(e for e in inside if e[0] == "generate")
        update_start = next(e[1] for e in inside if e[0] == "train_forward")
        spent = {kind: sum(e[2] - e[1] for e in inside if e[0] == kind)
                 for kind in ("reward", "value", "ref_forward", "gc")}
        per_iteration.append({
            "iteration": i + 1, "iteration_s": end - begin, "rollout_s": gen[2] - gen[1], "reward_s": spent["reward"],
            # like ours: policy/reference log-probs, values, and the advantages (TRL takes the policy's
            # log-probs from the generation logits, so no policy forward here)
            "score_s": update_start - gen[2] - spent["reward"], "value_forward_s": spent["value"],
            "ref_forward_s": spent["ref_forward"], "gc_collect_s": spent["gc"], "update_s": end - update_start}
            | gen[3])
    measured = per_iteration[warmup:]
    return summarise(measured) | {
        "warmup_iterations": warmup, "iterations": per_iteration,
        "startup_s": startup_s,  # loading policy, reward and value models + PPOTrainer.__init__
        "train_wall_s": train_wall, "trainable_params": trainable, "value_model": value_mode,
        "generated_steps_mean": sum(it["generated_steps"] for it in measured) / len(measured),
        "pad_note": pad_note}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--iterations", type=int, default=4, help="measured PPO iterations per side")
    parser.add_argument("--warmup", type=int, default=1, help="iterations run first and left out")
    parser.add_argument("--prompts", type=int, default=16, help="rollouts per iteration")
    parser.add_argument("--response-length", type=int, default=48)
    parser.add_argument("--trl-value", choices=("lora", "full"), default="lora",
                        help="TRL's separate value model: the same LoRA adapter (+ head), or trained in full")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ppo_throughput.json"))
    args = parser.parse_args()

    model_path = resolve_model(args.model)
    prompts = [p.question for p in train_prompts()]
    lora = LoraSettings(r=16, alpha=32)
    cfg = PPOConfig(
        iterations=args.warmup + args.iterations, prompts_per_iteration=args.prompts, ppo_epochs=2, eval_every=0,
        save_every=10**6, rollout={"num_cpus_per_replica": 1, "num_threads": THREADS, "batch_size": args.prompts,
                                   "max_new_tokens": args.response_length, "temperature": 1.0},
        learner={"cpus_per_worker": THREADS, "zero_stage": 0, "lora": lora.model_dump(), "learning_rate": 1e-4,
                 "minibatch_size": 8})
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        reward_path = reward_folder(model_path, workdir / "reward")
        ours_result = ours(cfg, args.warmup, model_path, reward_path, prompts, workdir)
        trl_result = trl(cfg, args.warmup, model_path, reward_path, prompts, args.trl_value)

    n_params = sum(p.numel() for p in load_causal_lm(model_path).parameters())
    result = {
        "model": args.model, "params": n_params, "prompts_per_iteration": args.prompts,
        "response_length": args.response_length, "ppo_epochs": cfg.ppo_epochs,
        "minibatch_size": cfg.learner.minibatch_size, "lora_r": lora.r, "lora_alpha": lora.alpha,
        "threads": THREADS, "measured_iterations": args.iterations, "warmup_iterations": args.warmup,
        "reward_model": "policy backbone + untrained (seeded) scalar head, same folder both sides",
        "ours": ours_result, "trl": trl_result,
        "speedup_vs_trl": {
            "generated_tokens_per_s": ours_result["generated_tokens_per_s"] / trl_result["generated_tokens_per_s"],
            "s_per_iteration": trl_result["s_per_iteration"] / ours_result["s_per_iteration"]},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "command": "python bench/ppo_throughput.py " + " ".join(sys.argv[1:]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
