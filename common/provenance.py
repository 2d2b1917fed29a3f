"""What made a number: the code (git commit, and whether the tree had uncommitted changes), the
packages, the machine, the seed and the config. metrics.json and the bench results carry it, so a
reported number can be traced back, and two numbers made by different code are told apart."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from common import PROJECT_ROOT

# The packages whose version changes a number: the model code, the training stack, the sampler.
PACKAGES = ("torch", "transformers", "peft", "deepspeed", "ray", "accelerate", "sentence-transformers",
            "numpy", "scipy")


def git_state(repo: Path = PROJECT_ROOT) -> dict:
    """{"commit", "dirty"} of the checkout the code runs from; {"commit": None, "why": ...} when it
    is not a git checkout (a wheel, a container image without .git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                              timeout=30).stdout
    try:
        commit = git("rev-parse", "HEAD").strip()
        # Untracked files count: a new module the run imported is as much a change as an edit.
        dirty = bool(git("status", "--porcelain", "--untracked-files=normal").strip())
    except (OSError, subprocess.SubprocessError) as error:
        return {"commit": None, "dirty": None, "why": f"not a git checkout ({type(error).__name__})"}
    return {"commit": commit, "dirty": dirty}


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine() -> dict:
    """The hardware the driver ran on: CPUs, memory, processor, and the accelerator if any."""
    info = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "platform": platform.platform()}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # not every OS names these
        info["memory_gib"] = None
    import torch
    info["accelerator"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance(config_file: Path, seed: int) -> dict:
    """The run's provenance for metrics.json: the config by content hash (the file sits beside it),
    the seed, code, packages and machine."""
    return {"config_sha256": sha256_of(config_file), "seed": seed, "code": git_state(),
            "packages": package_versions(), "machine": machine()}
