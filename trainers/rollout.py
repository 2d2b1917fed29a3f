"""Ray Serve rollout workers: replicas of the policy that PPO samples from.

Weight sync is pull-based: every request carries the controller's current `PolicyWeights`
(a version number and an object-store reference), and a replica that holds an older version
loads the new weights before it samples. So every replica, however many there are and however
the router spreads requests, generates from the policy the learner just produced, and only
the LoRA adapter travels when LoRA is on. A replica keeps the adapter merged into the base
weights, so it samples at the base model's speed rather than running the LoRA branch of every
layer for every token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ray import serve

from trainers.engine import LoraSettings
from trainers.ppo_config import RolloutConfig


@dataclass(frozen=True)
class PolicyWeights:
    """The learner's weights after `version` updates; `ref` is an ObjectRef to a state dict
    (LoRA adapter only, or the full model)."""

    version: int
    ref: Any


@serve.deployment
class RolloutWorker:
    def __init__(self, model_path: str, lora: dict | None, num_threads: int):
        import torch

        from trainers.engine import with_lora
        from trainers.models import load_causal_lm, load_tokenizer

        torch.set_num_threads(num_threads)
        self.lora = LoraSettings.model_validate(lora) if lora else None
        # The same fresh adapter the learner starts from (a no-op until the first update).
        self.model = with_lora(load_causal_lm(model_path), self.lora, "CAUSAL_LM").eval()
        if torch.cuda.is_available():  # a replica given num_gpus_per_replica > 0
            self.model.to("cuda")
        if self.lora is not None:
            self.model.merge_adapter()
        self.tokenizer = load_tokenizer(model_path)
        self.version = 0

    def _sync(self, weights: PolicyWeights | None) -> None:
        if weights is None or weights.version <= self.version:
            return
        import ray

        self.load_weights(ray.get(weights.ref))
        self.version = weights.version

    def load_weights(self, state: dict) -> None:
        """Take the learner's state dict: the adapter (re-merged) under LoRA, else the whole model."""
        if self.lora is None:
            self.model.load_state_dict(state)
            return
        import torch
        from peft import set_peft_model_state_dict

        with torch.no_grad():
            self.model.unmerge_adapter()
            set_peft_model_state_dict(self.model, state)
            self.model.merge_adapter()

    def generate(self, prompts: list[str], max_new_tokens: int, temperature: float, top_p: float,
                 batch_size: int, seed: int, weights: PolicyWeights | None) -> dict:
        """Sample one answer per prompt from the current policy: token ids + where it ran."""
        from trainers.generation import generate_tokens

        self._sync(weights)
        completions = generate_tokens(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                                      batch_size=batch_size, temperature=temperature, top_p=top_p, seed=seed)
        return {"completions": completions, "texts": self.tokenizer.batch_decode(
                    [c.response_ids for c in completions], skip_special_tokens=True),
                "version": self.version, "node_id": _node_id()}

    def evaluate(self, plan, seed: int, step: int, weights: PolicyWeights | None) -> dict:
        """A point of the persistence curve for the current policy (`trainers.ppo.PersistenceEval`)."""
        from trainers.evaluation import curve_point, evaluate_safety

        self._sync(weights)
        results = evaluate_safety(self.model, self.tokenizer, plan.backdoor, plan.questions,
                                  plan.red_team_prompts or None, plan.config, plan.adversarial, seed, sampled=False)
        return curve_point(step, results, plan.backdoor)

    def info(self) -> dict:
        return {"version": self.version, "node_id": _node_id(), "pid": os.getpid()}


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def rollout_deployment(model_path: str, cfg: RolloutConfig, lora: LoraSettings | None):
    """The rollout application, bound and ready for `serve.run`."""
    options: dict = {"num_replicas": cfg.num_replicas, "max_ongoing_requests": 1,  # one generation at a time
                     "ray_actor_options": {"num_cpus": cfg.num_cpus_per_replica, "num_gpus": cfg.num_gpus_per_replica,
                                           "resources": cfg.resources}}
    if cfg.max_replicas_per_node:
        options["max_replicas_per_node"] = cfg.max_replicas_per_node
    return RolloutWorker.options(**options).bind(model_path, lora.model_dump() if lora else None, cfg.num_threads)


def deploy_rollout_workers(model_path: str, cfg: RolloutConfig, lora: LoraSettings | None, name: str = "rollout"):
    """Start (or replace) the rollout application; returns its DeploymentHandle (no HTTP route)."""
    return serve.run(rollout_deployment(model_path, cfg, lora), name=name, route_prefix=None)


class RolloutAppArgs(RolloutConfig):
    """`serve run trainers.rollout:app_builder model_path=…` (and KubeRay's RayService)."""

    model_path: str
    lora: LoraSettings | None = None


def app_builder(args: dict):
    """Ray Serve application builder: a standalone rollout application from plain arguments."""
    parsed = RolloutAppArgs.model_validate(args)
    cfg = RolloutConfig.model_validate(parsed.model_dump(exclude={"model_path", "lora"}))
    return rollout_deployment(parsed.model_path, cfg, parsed.lora)
