"""How the reward workers are deployed: a config the experiment schema can load without
importing Ray Serve (which costs ~0.8 s at every CLI and control-plane start)."""

from __future__ import annotations

from pydantic import Field

from common.config import StrictModel


class RewardServeConfig(StrictModel):
    num_replicas: int = Field(1, ge=1)
    num_cpus_per_replica: float = Field(1, gt=0, description="logical Ray CPUs (declared, for placement)")
    num_threads: int = Field(1, ge=1, description="torch threads a replica computes with")
    num_gpus_per_replica: float = Field(0, ge=0)
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_length: int = Field(256, ge=8)
    route_prefix: str = "/reward"
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
