"""Shared fixtures. Tests use the real parts: a local Ray cluster, DeepSpeed, the tiny model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from trainers.models import resolve_model

    return resolve_model("tiny", seed=0)


@pytest.fixture(scope="module")
def local_ray():
    """A real single-node Ray cluster for one test module (~5 s to start)."""
    import ray

    from services.experiment import RayConfig
    from services.ray_cluster import connect

    ray.shutdown()
    connect(RayConfig(num_cpus=2))
    yield ray
    ray.shutdown()
