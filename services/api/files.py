"""A job's folder, `<artifacts>/<job_id>/`: the config its Ray job runs, its run folder and its log.

    config.yaml        the job's config, with `runs_dir` pointing inside this folder
    runs/<name>/       the pipeline's run folder (report.md, metrics.json, plots, checkpoints,
                       events.jsonl), whose paths `common.run_layout.RunLayout` spells (`run_layout`)
    driver.log         the Ray job's log, copied when the job ends (Ray's copy goes with the cluster)

Nothing outside the folder is ever served: artifact paths are checked before and after resolving
symlinks.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import yaml

from common.run_layout import RunLayout, read_json

CONFIG_FILE = "config.yaml"
LOG_FILE = "driver.log"


class ArtifactPathError(ValueError):
    """A path that names no file inside the job's folder, by its form (`..`, absolute)."""


def job_dir(root: Path, job_id: str) -> Path:
    return root / job_id


def run_dir_name(config: dict) -> str:
    """The run folder, relative to the job's folder: the one place that says where it is."""
    return f"runs/{config['name']}"


def run_layout(root: Path, job_id: str, config: dict) -> RunLayout:
    """The job's run folder, whose paths `common.run_layout.RunLayout` spells."""
    return RunLayout(job_dir(root, job_id) / run_dir_name(config))


def write_job_config(root: Path, job_id: str, config: dict) -> Path:
    """The config the Ray job runs: the job's own, with the run folder inside the job's folder.

    `ray.address: auto` makes the pipeline join the cluster its Ray job runs on (Ray sets
    RAY_ADDRESS for job drivers) instead of starting a cluster of its own.
    """
    folder = job_dir(root, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    config = {**config, "runs_dir": str(folder.resolve() / "runs"), "ray": {**config.get("ray", {}), "address": "auto"}}
    path = folder / CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.replace(path)
    return path


def seed_from_parent(root: Path, job_id: str, config: dict, parent_id: str, parent_config: dict,
                     inherits: tuple[str, ...], checkpoint: str | None) -> None:
    """Copy what a stage needs from the stage before it, which ran as the parent job.

    Checkpoints stay in the parent's folder: the backdoor stage's record names them by absolute
    path, and an evaluation only reads them. `checkpoint` picks another than the final one.
    """
    source = run_layout(root, parent_id, parent_config)
    target = run_layout(root, job_id, config)
    for relative in inherits:
        src, dst = source.dir / relative, target.dir / relative
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copyfile(src, dst)
        else:
            raise FileNotFoundError(f"parent job {parent_id} has no {relative} in its run folder")
    if checkpoint is not None:  # a checkpoint's name is its path in the run folder (list_checkpoints)
        target.point_backdoor_at(source.dir / checkpoint)


def artifact_path(root: Path, job_id: str, relative: str) -> Path | None:
    """The file `relative` names inside the job's folder, or None if there is no such file there."""
    if not relative or relative.startswith("/") or "\\" in relative or "\x00" in relative:
        raise ArtifactPathError(f"artifact path must be relative to the job's folder, got {relative!r}")
    if ".." in PurePosixPath(relative).parts:
        raise ArtifactPathError(f"artifact path must not contain '..', got {relative!r}")
    folder = job_dir(root, job_id).resolve()
    try:
        target = (folder / relative).resolve()
        # A symlink inside the folder may point anywhere: judge where it leads, not how it is spelled.
        if target.is_relative_to(folder) and target.is_file():
            return target
    except OSError:  # a name too long for the filesystem, a symlink loop
        pass
    return None


@dataclass(frozen=True)
class CheckpointInfo:
    name: str  # its path inside the run folder, e.g. "safety/ppo/checkpoint-000008": unique across stages
    stage: str
    path: str  # inside the job's folder
    step: int
    metrics: dict
    created_at: datetime


def list_checkpoints(root: Path, job_id: str, config: dict) -> list[CheckpointInfo]:
    """Every stage's checkpoints, in pipeline order, each with its step and its last logged metrics."""
    folder = job_dir(root, job_id)
    layout = run_layout(root, job_id, config)
    return [CheckpointInfo(name=path.relative_to(layout.dir).as_posix(), stage=stage,
                           path=str(path.relative_to(folder)), step=int(path.name.removeprefix("checkpoint-")),
                           metrics=checkpoint_metrics(path),
                           created_at=datetime.fromtimestamp(path.stat().st_mtime, timezone.utc))
            for stage, path in layout.checkpoints()]


def checkpoint_metrics(path: Path) -> dict:
    """The last training-log row an SFT checkpoint saved, or a PPO checkpoint's last iteration."""
    try:
        sft_log = path / "train_log.jsonl"
        if sft_log.is_file():
            lines = sft_log.read_text().splitlines()
            return json.loads(lines[-1]) if lines else {}
        controller = read_json(path / "controller_state.json")
        if controller and controller.get("log"):
            return {k: v for k, v in controller["log"][-1].items() if isinstance(v, (int, float))}
    except (OSError, json.JSONDecodeError):
        pass  # a checkpoint being written: its metrics come with the next listing
    return {}

