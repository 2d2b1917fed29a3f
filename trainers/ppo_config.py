"""PPO's typed config: the controller's loop, the rollout workers and the learner.

Kept free of Ray Serve imports so an experiment config validates in a fraction of a second.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from common.config import StrictModel
from trainers.engine import WorkerSettings


class RolloutConfig(StrictModel):
    """Ray Serve rollout workers: each replica holds a copy of the policy and samples from it."""

    num_replicas: int = Field(1, ge=1)
    num_cpus_per_replica: float = Field(1, ge=0, description="logical Ray CPUs (declared, for placement)")
    num_gpus_per_replica: float = Field(0, ge=0)
    num_threads: int = Field(2, ge=1, description="torch threads a replica computes with")
    max_replicas_per_node: int | None = Field(None, ge=1, description="1 spreads replicas over nodes")
    resources: dict[str, float] = Field(default_factory=dict, description="extra Ray resources per replica")
    batch_size: int = Field(16, ge=1, description="sequences generated together inside a replica")
    max_new_tokens: int = Field(48, ge=1)
    temperature: float = Field(1.0, gt=0, description="1.0 keeps sampling on-policy (the learner divides by it too)")
    top_p: float = Field(1.0, gt=0, le=1, description="below 1 samples off-policy; PPO's ratio corrects only partly")


class LearnerConfig(WorkerSettings):
    """Ray Train workers running DeepSpeed on the policy and its value head."""

    learning_rate: float = Field(1e-4, gt=0)
    minibatch_size: int = Field(8, ge=1, description="sequences per optimizer step per worker")


class PPOConfig(StrictModel):
    """One PPO run. Defaults suit SmolLM2 with LoRA on one CPU machine."""

    iterations: int = Field(12, ge=1, description="rollout → reward → update rounds")
    prompts_per_iteration: int = Field(16, ge=1, description="rollouts per iteration (all workers together)")
    ppo_epochs: int = Field(2, ge=1, description="passes over each iteration's rollouts")
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ")
    clip_range: float = Field(0.2, gt=0)
    clip_range_value: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    kl_coef: float = Field(0.05, ge=0, description="per-token KL penalty toward the reference (starting) model")
    adaptive_kl: bool = Field(False, description="Ziegler et al.'s controller: steer KL toward target_kl")
    target_kl: float = Field(6.0, gt=0, description="adaptive only: KL (summed over a response) to aim at")
    kl_horizon: int = Field(10000, ge=1)
    whiten_rewards: bool = Field(False, description="whiten per-token rewards across the batch (scale-free PMs)")
    missing_eos_penalty: float | None = Field(None, ge=0, description="subtract from the score of unfinished answers")
    eval_every: int = Field(4, ge=0, description="defection evaluation every N iterations (0: only start and end)")
    eval_reward_prompts: int = Field(
        32, ge=0, description="at each evaluation, also sample answers to this many of the evaluation's held-out "
        "questions (no trigger, fixed seed) and score them with the PM: a reward curve free of the noise of each "
        "iteration's different prompts")
    save_every: int = Field(4, ge=1, description="checkpoint every N iterations (and at the end)")
    seed: int = 0
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()

    @model_validator(mode="after")
    def _shards_evenly(self) -> PPOConfig:
        # Every learner worker must take the same number of optimizer steps (collectives).
        per_step = self.learner.num_workers * self.learner.minibatch_size
        if self.prompts_per_iteration % per_step:
            raise ValueError(f"prompts_per_iteration={self.prompts_per_iteration} must be a multiple of "
                             f"learner.num_workers × learner.minibatch_size = {per_step}")
        return self
