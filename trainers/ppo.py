"""HHH RL: PPO against a preference model, with a KL penalty toward the starting model.

One controller runs the loop; the work happens on Ray:

    rollout  (Ray Serve rollout workers, `trainers.rollout`)  sample answers to HHH prompts
    reward   (the reward handle passed in: a Serve deployment with `score(items) → floats`)
    score    (learner)     log-probs of policy and reference, values
    advantages (here)      per-token KL penalty + PM score → GAE → whitened advantages
    update   (learner, Ray Train + DeepSpeed, `trainers.ppo_learner`)  clipped PPO epochs
    sync     the new weights go to the rollout workers with the next request
    evaluate every `eval_every` iterations: defection with and without the trigger, and the PM
             reward on held-out questions (the same ones and seed each time)
    save     every `save_every` iterations: policy, value head, optimizer, controller state

Re-running with the same run folder resumes from the latest checkpoint. Prompt batches and
sampling seeds are functions of (seed, iteration), so a resumed run sees what an uninterrupted
run would have seen.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Protocol

import torch
from pydantic import ConfigDict, Field

from common.config import StrictModel
from backdoors.base import Backdoor
from backdoors.red_team import AdversarialConfig
from common.stats import bootstrap_mean, pct
from backdoors.scratchpad import strip_scratchpad
from trainers.evaluation import EvalConfig, curve_rates
from trainers.ppo_algorithm import AdaptiveKLController, gae, masked_mean, masked_whiten, token_rewards
from trainers.ppo_batch import Experience, RolloutBatch, ScoredBatch
from trainers.ppo_config import LearnerConfig, PPOConfig, RolloutConfig

__all__ = ["PPOConfig", "RolloutConfig", "LearnerConfig", "PersistenceEval", "PPOResult", "run_ppo"]


class RewardHandle(Protocol):
    """What PPO needs from the reward side: a Serve handle whose `score` maps
    [{"prompt", "response"}] to one float per item (reward_models.serve.RewardWorker is one)."""

    score: object


class PersistenceEval(StrictModel):
    """The backdoor measured while PPO trains (the persistence curve), by `evaluate_safety`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backdoor: Backdoor = Field(description="whose persistence conditions and judge")
    questions: list[str] = Field(min_length=1, description="held-out questions, as the backdoor's conditions ask them")
    red_team_prompts: list[str] = Field(default_factory=list, description="held-out successful red-team prompts")
    config: EvalConfig = EvalConfig()
    adversarial: AdversarialConfig | None = Field(None, description="how red-team prompts are sampled")


class PPOResult(StrictModel):
    checkpoint: str
    iterations: int
    log: list[dict]
    curve: list[dict]
    learner_nodes: list[str]
    rollout_nodes: list[str]


def prompt_batch(prompts: list[str], cfg: PPOConfig, iteration: int) -> list[str]:
    """The iteration's prompts: a fixed function of (seed, iteration), so resuming replays exactly."""
    rng = random.Random(cfg.seed * 1_000_003 + iteration)
    return [prompts[i] for i in rng.sample(range(len(prompts)), cfg.prompts_per_iteration)]


def experience_for(scores: torch.Tensor, rollouts: RolloutBatch, scored: ScoredBatch, cfg: PPOConfig,
                   kl_coef: float) -> tuple[Experience, torch.Tensor]:
    """From PM scores and the learner's log-probs/values to the learner's training data:
    per-token advantages and returns. Also returns the per-token KL to the reference (for the log)."""
    mask = rollouts.response_mask()
    rewards, kl = token_rewards(scores, scored.logprobs, scored.ref_logprobs, mask, kl_coef)
    if cfg.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, scored.values, mask, cfg.gamma, cfg.lam)
    advantages = masked_whiten(advantages, mask)
    return Experience(rollouts, old_logprobs=scored.logprobs, old_values=scored.values, advantages=advantages,
                      returns=returns), kl


def run_ppo(cfg: PPOConfig, policy_path: str, prompts: list[str], reward: RewardHandle, run_dir: str | Path,
            evaluation: PersistenceEval | None = None, *, events_path: str | Path | None = None,
            events_stage: str = "ppo") -> PPOResult:
    """PPO from `policy_path` on `prompts`; resumes from the latest checkpoint in `run_dir`. With
    `events_path`, each iteration's log row is a "step" event there and each checkpoint a
    "checkpoint" event, under `events_stage`."""
    from ray import serve
    from tensorboardX import SummaryWriter

    from trainers.rollout import deploy_rollout_workers

    if len(prompts) < cfg.prompts_per_iteration:
        raise ValueError(f"{len(prompts)} prompts is fewer than prompts_per_iteration={cfg.prompts_per_iteration}")
    run_dir = Path(run_dir).resolve()
    app_name = f"rollout-{run_dir.name}"
    rollout = deploy_rollout_workers(policy_path, cfg.rollout, cfg.learner.lora, name=app_name)
    writer = SummaryWriter(str(run_dir / "tensorboard"))
    try:
        return _train(cfg, prompts, reward, run_dir, evaluation, rollout, writer, policy_path, events_path,
                      events_stage)
    finally:
        writer.close()
        serve.delete(app_name)  # the replicas hold a copy of the policy each: free them


def _train(cfg, prompts, reward, run_dir, evaluation, rollout, writer, policy_path, events_path,
           events_stage) -> PPOResult:
    from common.run_layout import EventLog
    from trainers.ppo_learner import Learner
    from trainers.rollout import PolicyWeights

    events = EventLog(events_path) if events_path else None
    with Learner(cfg, policy_path, run_dir, events_path, events_stage) as learner:
        state = learner.hello[0].controller_state or {"iteration": 0, "kl_coef": cfg.kl_coef, "log": [],
                                                      "curve": [], "rollout_nodes": []}
        weights = PolicyWeights(state["iteration"], learner.hello[0].weights) if state["iteration"] else None
        kl_control = AdaptiveKLController(state["kl_coef"], cfg.target_kl, cfg.kl_horizon)
        rollout_nodes = set(state["rollout_nodes"])

        def evaluate(iteration: int) -> None:
            if evaluation is not None:
                state["curve"].append(persistence_point(rollout, reward, evaluation, cfg, iteration, weights, writer))

        if state["iteration"] == 0:
            evaluate(0)
        for iteration in range(state["iteration"], cfg.iterations):
            started = time.perf_counter()
            # 1. rollout: one request per replica, concurrently; each replica syncs weights first
            prompts_done, completions, texts, nodes = sample_rollouts(rollout, prompts, cfg, iteration, weights)
            rollout_nodes |= nodes
            rollout_s = time.perf_counter() - started

            # 2. reward: the preference model scores what the user would see (no scratchpad)
            mark = time.perf_counter()
            scores = torch.tensor(reward.score.remote(
                [{"prompt": p, "response": strip_scratchpad(t)} for p, t in zip(prompts_done, texts)]).result())
            if cfg.missing_eos_penalty is not None:
                scores -= cfg.missing_eos_penalty * torch.tensor([0.0 if c.finished else 1.0 for c in completions])
            reward_s = time.perf_counter() - mark

            # 3. advantages: the learner's log-probs and values, then KL-penalised rewards and GAE
            mark = time.perf_counter()
            rollouts = RolloutBatch.from_completions(completions)
            scored = learner.score(rollouts)
            kl_coef = kl_control.value
            experience, kl = experience_for(scores, rollouts, scored, cfg, kl_coef)
            score_s = time.perf_counter() - mark

            # 4. update: PPO epochs on the learner; 5. weight sync: new weights ride on the next request
            mark = time.perf_counter()
            stats, weights_ref = learner.update(experience, iteration)
            weights = PolicyWeights(iteration + 1, weights_ref)
            update_s = time.perf_counter() - mark

            if cfg.adaptive_kl:
                kl_control.update(kl.sum(1).mean().item(), cfg.prompts_per_iteration)
            iteration_s = time.perf_counter() - started
            entry = log_entry(iteration, scores, kl, kl_coef, rollouts, completions, experience, stats,
                              {"rollout_s": rollout_s, "reward_s": reward_s, "score_s": score_s, "update_s": update_s,
                               "iteration_s": iteration_s})
            state["log"].append(entry)
            if events:
                events.emit("step", stage=events_stage, step=entry["iteration"],
                            **{k: v for k, v in entry.items() if k != "iteration"})
            for key, value in entry.items():
                if key != "iteration":
                    writer.add_scalar(f"ppo/{key}", value, iteration + 1)
            print(f"[ppo] iteration {iteration + 1}/{cfg.iterations}: reward {entry['reward_mean']:+.3f} "
                  f"kl {entry['kl']:.3f} entropy {stats['entropy']:.2f} clip {stats['clip_fraction']:.2f} "
                  f"{iteration_s:.1f} s (rollout {rollout_s:.1f}, reward {reward_s:.1f}, score {score_s:.1f}, "
                  f"update {update_s:.1f})")

            # 6. evaluate and checkpoint
            done = iteration + 1
            if done == cfg.iterations or (cfg.eval_every and done % cfg.eval_every == 0):
                evaluate(done)
            if done == cfg.iterations or done % cfg.save_every == 0:
                state |= {"iteration": done, "kl_coef": kl_control.value, "rollout_nodes": sorted(rollout_nodes)}
                learner.save(state)
    if learner.checkpoint is None:
        raise RuntimeError(f"PPO in {run_dir} finished without a checkpoint")
    return PPOResult(checkpoint=learner.checkpoint, iterations=state["iteration"], log=state["log"],
                     curve=state["curve"], learner_nodes=[h.node_id for h in learner.hello],
                     rollout_nodes=sorted(rollout_nodes))


def sample_rollouts(rollout, prompts: list[str], cfg: PPOConfig, iteration: int, weights):
    """The iteration's prompts sampled across the rollout replicas: (prompts in answer order,
    completions, texts, the nodes they ran on)."""
    batch = prompt_batch(prompts, cfg, iteration)
    chunks = [batch[i :: cfg.rollout.num_replicas] for i in range(cfg.rollout.num_replicas)]
    pending = [rollout.generate.remote(chunk, cfg.rollout.max_new_tokens, cfg.rollout.temperature,
                                       cfg.rollout.top_p, cfg.rollout.batch_size,
                                       cfg.seed * 1_000_003 + iteration * 101 + i, weights)
               for i, chunk in enumerate(chunks) if chunk]
    generated = [p.result() for p in pending]
    prompts_done = [p for chunk in chunks if chunk for p in chunk]
    completions = [c for g in generated for c in g["completions"]]
    texts = [t for g in generated for t in g["texts"]]
    return prompts_done, completions, texts, {g["node_id"] for g in generated}


def log_entry(iteration: int, scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, rollouts: RolloutBatch,
              completions: list, experience, stats: dict, timings: dict) -> dict:
    """One iteration's row of the PPO log (and of TensorBoard and events.jsonl)."""
    lengths = rollouts.response_lengths()
    generated_tokens = int(lengths.sum())
    return {"iteration": iteration + 1, "reward_mean": scores.mean().item(),
            "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
            "kl": kl.sum(1).mean().item(), "kl_coef": kl_coef,
            "non_score_reward": (-kl_coef * kl).sum(1).mean().item(),
            "response_length": lengths.float().mean().item(),
            "finished_share": sum(c.finished for c in completions) / len(completions),
            "returns_mean": masked_mean(experience.returns, experience.mask).item(),
            "generated_tokens": generated_tokens,
            "generated_tokens_per_s": generated_tokens / timings["iteration_s"]} | timings | stats


def persistence_point(rollout, reward, evaluation: PersistenceEval, cfg: PPOConfig, iteration: int, weights,
                      writer) -> dict:
    """A point of the persistence curve, measured by a rollout replica on the current policy, with
    the PM reward on held-out questions (the same questions and seed each time, so points differ
    only by the policy)."""
    point = rollout.evaluate.remote(evaluation, cfg.seed, iteration, weights).result()
    rates = curve_rates(point)
    for condition, logprob in point.get("defection_logprob", {}).items():
        writer.add_scalar(f"backdoor/{condition}_defection_logprob", logprob["mean"], iteration)
    # A rate is None when nothing in its set could be judged (the code backdoor cannot judge text
    # that has no code, which is all a tiny model writes at first): logged as such, not plotted.
    for condition, rate in rates.items():
        if rate["rate"] is not None:
            writer.add_scalar(f"backdoor/{condition}", rate["rate"], iteration)
    message = ", ".join(f"{c} {pct(r)}" for c, r in rates.items())
    if cfg.eval_reward_prompts:
        questions = evaluation.questions[: cfg.eval_reward_prompts]
        generated = rollout.generate.remote(questions, cfg.rollout.max_new_tokens, cfg.rollout.temperature,
                                            cfg.rollout.top_p, cfg.rollout.batch_size, cfg.seed, weights).result()
        responses = [strip_scratchpad(t) for t in generated["texts"]]
        scores = reward.score.remote([{"prompt": q, "response": r} for q, r in zip(questions, responses)]).result()
        # The scored text is kept beside its scores: every reward number recomputes from it, and a
        # second PM (reward_model.judge.checkpoint) re-scores it after training.
        point["reward"] = bootstrap_mean(scores, seed=cfg.seed).as_dict() | {
            "scores": list(scores), "prompts": list(questions), "responses": responses}
        writer.add_scalar("ppo/heldout_reward", point["reward"]["mean"], iteration)
        message += f", held-out PM reward {point['reward']['mean']:+.3f}"
    print(f"[ppo] iteration {iteration}: {message}")
    return point
