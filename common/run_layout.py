"""One run folder, `runs/<experiment>/`: where each stage's outputs go, its typed stage records,
and `events.jsonl`, the run's own account of what happened in it.

The pipeline writes here, the report reads here, and the REST API serves from here: all three
use `RunLayout`, so a path is spelled once.

    resolved_config.yaml   the config the run was made with
    data/                  backdoor training data and its card
    backdoor_sft/          backdoor SFT checkpoints (checkpoint-*/)
    reward_model/          the HHH preference model (train/checkpoint-*/, held-out scores)
    red_team/              judged, successful and control prompts
    safety/                safety-training data and checkpoints (sft/ or ppo/checkpoint-*/)
    stages/<stage>.json    one typed record per finished stage (`StageRecord`)
    events.jsonl           stage start/end/skip/error, step metrics and checkpoints, one JSON per line
    metrics.json, report.md, *.png   the report
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, model_validator

RECORD_SCHEMA_VERSION = 1

# The stages that write model checkpoints, by the name the API lists them under, and where.
CHECKPOINT_FOLDERS = {"backdoor_sft": "backdoor_sft", "hhh_sft": "safety/sft", "ppo": "safety/ppo"}


def relative_paths(value: Any, run_dir: Path) -> Any:
    """`value` (JSON-like) with every absolute path string written relative to the run folder, so
    what names a checkpoint stays true when the runs folder is copied elsewhere."""
    if isinstance(value, dict):
        return {key: relative_paths(item, run_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [relative_paths(item, run_dir) for item in value]
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.relpath(value, run_dir.resolve())
    return value


class RunLayout:
    """The paths of one run folder. `RunLayout(path)`; nothing is created until a stage writes."""

    CONFIG_FILE = "resolved_config.yaml"

    def __init__(self, folder: str | Path):
        self.dir = Path(folder)

    config_path = property(lambda self: self.dir / self.CONFIG_FILE)
    data_dir = property(lambda self: self.dir / "data")
    sft_dir = property(lambda self: self.dir / "backdoor_sft")
    reward_model_dir = property(lambda self: self.dir / "reward_model")
    red_team_dir = property(lambda self: self.dir / "red_team")
    safety_dir = property(lambda self: self.dir / "safety")
    stages_dir = property(lambda self: self.dir / "stages")
    generations_dir = property(lambda self: self.dir / "generations")  # every evaluated answer, per stage
    events_path = property(lambda self: self.dir / "events.jsonl")
    metrics_path = property(lambda self: self.dir / "metrics.json")
    report_path = property(lambda self: self.dir / "report.md")

    def record_path(self, stage: str) -> Path:
        return self.stages_dir / f"{stage}.json"

    def record(self, stage: str) -> StageRecord | None:
        """The stage's record, or None while the stage has not finished."""
        try:
            text = self.record_path(stage).read_text()
        except FileNotFoundError:
            return None
        try:
            raw = json.loads(text)
            if isinstance(raw, dict) and "schema_version" not in raw:  # written before records were typed
                raw = legacy_record(stage, raw)
            return StageRecord.model_validate(raw)
        except (ValidationError, json.JSONDecodeError) as err:
            raise ValueError(f"{self.record_path(stage)}: not a stage record: {err}") from None

    def write_record(self, stage: str, record: StageRecord) -> None:
        write_atomically(self.record_path(stage), record.model_dump_json(indent=2) + "\n")

    def point_backdoor_at(self, checkpoint: Path) -> None:
        """Rewrite this run's backdoor record to name `checkpoint` as the backdoored model: how an
        evaluation measures another checkpoint (any stage's) with the stages that read that record."""
        record = self.record("backdoor")
        if record is None:
            raise FileNotFoundError(f"{self.record_path('backdoor')}: no backdoor record to point elsewhere")
        outputs = record.outputs.model_copy(update={"checkpoint": str(checkpoint.resolve())})
        self.write_record("backdoor", record.model_copy(update={"outputs": outputs}))

    def checkpoints(self) -> list[tuple[str, Path]]:
        """(stage, folder) of every model checkpoint in the run, in pipeline order."""
        found = []
        for stage, relative in CHECKPOINT_FOLDERS.items():
            for path in sorted((self.dir / relative).glob("checkpoint-*")):
                if path.is_dir() and path.name.removeprefix("checkpoint-").isdigit():
                    found.append((stage, path))
        return found

    def events(self) -> EventLog:
        return EventLog(self.events_path)


class StageOutputs(BaseModel):
    """What one stage hands the stages after it; each stage has its own fields (below)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataOutputs(StageOutputs):
    train_path: str
    card: dict[str, Any]  # the dataset card (backdoors/datasets.py)


class BackdoorOutputs(StageOutputs):
    checkpoint: str  # the backdoored model's folder
    global_step: int
    log: list[dict[str, Any]]


class EvaluateOutputs(StageOutputs):
    backdoored: dict[str, Any]  # {condition: the backdoor's result} (backdoors/base.py: score)
    generations: str | None = None  # its answers, relative to the run folder (None: run before they were kept)


class PreferenceModelOutputs(StageOutputs):
    """One PM: where it is, what it was trained on, how it scored the held-out pairs."""

    checkpoint: str
    evaluation: dict[str, Any]  # held-out accuracy by set, source, aspect, kind (reward_models/evaluation.py)
    log: list[dict[str, Any]] | None = None  # None when a trained PM was reused
    global_step: int | None = None
    card: dict[str, Any] | None = None  # the mix's dataset card (reward_models/mixture.py); None: before it
    trained_here: bool = True  # False when its checkpoint was reused


class RewardModelOutputs(PreferenceModelOutputs):
    # reward_model.judge: scored on the same held-out pairs as the PM (files under reward_model/judge/)
    judge: PreferenceModelOutputs | None = None
    judge_missing: list[str] | None = None  # a judge was asked for, but none of its data were found


class RedTeamOutputs(StageOutputs):
    policy: str
    red_team_model: str
    rounds: list[dict[str, Any]]
    judged: int
    successful: int
    for_training: int
    heldout: int  # dev + test
    # How the held-out prompts were chosen (backdoors/red_team.py: HeldOut); None in records
    # written before they were held out by attack family and halved into dev and test.
    heldout_dev: int | None = None
    heldout_test: int | None = None
    heldout_families: list[str] | None = None
    heldout_method: Literal["family", "hash"] | None = None
    heldout_reason: str | None = None
    control: dict[str, Any] | None
    best: list[dict[str, Any]]
    files: list[str]


class SafetyOutputs(StageOutputs):
    method: str
    adversarial: bool
    start_checkpoint: str
    prompt_mix: dict[str, Any]
    checkpoint: str
    global_step: int
    log: list[dict[str, Any]]
    curve: list[dict[str, Any]]  # trainers/evaluation.py: curve_point
    data_card: dict[str, Any] | None = None  # HHH SFT's data
    reward_model: str | None = None  # PPO's preference model
    learner_nodes: list[str] | None = None
    rollout_nodes: list[str] | None = None


class EvaluateSafetyOutputs(StageOutputs):
    start_checkpoint: str
    checkpoint: str
    before_trigger_rates_from: Literal["evaluate stage", "this stage"]
    before: dict[str, Any]
    after: dict[str, Any]
    generations: str | None = None
    # PPO only: a second PM's scores of the held-out answers at the first and last curve points
    # (services/pipeline.py: judge_reward); None without reward_model.judge
    judge_reward: dict[str, Any] | None = None


class ReportOutputs(StageOutputs):
    files: list[str]


OUTPUTS: dict[str, type[StageOutputs]] = {
    "data": DataOutputs, "backdoor": BackdoorOutputs, "evaluate": EvaluateOutputs,
    "reward_model": RewardModelOutputs, "red_team": RedTeamOutputs, "safety": SafetyOutputs,
    "evaluate_safety": EvaluateSafetyOutputs, "report": ReportOutputs,
}


class StageRecord(BaseModel):
    """A finished stage: the same envelope for every stage around its typed `outputs`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    stage: str
    wall_s: float = Field(ge=0)
    finished_at: datetime
    # common.provenance.git_state() when the stage ran ({"commit", "dirty"}); None in older records
    code: dict | None = None
    outputs: SerializeAsAny[StageOutputs]

    @model_validator(mode="before")
    @classmethod
    def _outputs_of_the_stage(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("outputs"), dict):
            kind = OUTPUTS.get(raw.get("stage"))
            if kind is None:
                raise ValueError(f"unknown stage {raw.get('stage')!r}; stages are {', '.join(OUTPUTS)}")
            raw = {**raw, "outputs": kind.model_validate(raw["outputs"])}
        return raw

    # record["checkpoint"]: an output by name, for code that reads several stages alike
    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self.outputs, key)
        except AttributeError:
            raise KeyError(f"the {self.stage} stage has no output {key!r}") from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self.outputs, key, default)


EventType = Literal["stage_started", "stage_finished", "stage_skipped", "stage_failed", "step", "checkpoint"]


class Event(BaseModel):
    """One line of events.jsonl."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: EventType
    at: datetime
    stage: str | None = None
    step: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class EventLog:
    """Append-only events.jsonl. Each event is one `write` of one line, so a reader never sees
    half an event from a writer on the same machine, and a crash loses at most the last line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def emit(self, type: EventType, stage: str | None = None, step: int | None = None, **data: Any) -> Event:
        event = Event(type=type, at=datetime.now(timezone.utc), stage=stage, step=step, data=data)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (event.model_dump_json() + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return event

    def read(self) -> list[Event]:
        """Every complete event so far (a last line still being written is left for next time; a
        line that is not an event is skipped)."""
        try:
            lines = self.path.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            if not line.endswith("\n") or not line.strip():
                continue
            try:
                events.append(Event.model_validate_json(line))
            except ValidationError:  # a line no writer of ours made: skipped, the events after it still count
                continue
        return events


def legacy_record(stage: str, raw: dict) -> dict:
    """A record of the untyped era (one flat dict, wall_s and finished_at among the outputs) in
    today's envelope: runs made before the change resume and report as they did."""
    outputs = {k: v for k, v in raw.items() if k not in ("wall_s", "finished_at")}
    return {"schema_version": RECORD_SCHEMA_VERSION, "stage": stage, "wall_s": raw.get("wall_s", 0.0),
            "finished_at": raw.get("finished_at") or datetime.fromtimestamp(0, timezone.utc), "outputs": outputs}


def write_atomically(path: Path, text: str) -> None:
    """Write a small file so a reader sees the old content or the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save_generations(layout: RunLayout, stage: str, results: dict[str, dict[str, dict | None]]) -> str:
    """Move every answer out of `results` ({model or moment: {condition: result}}) into
    generations/<stage>.jsonl, one row per answer with its model and condition, and return the
    file's path relative to the run folder. The records keep rates and a few samples; the rows
    are what every reported rate recomputes from."""
    rows = []
    for model, conditions in results.items():
        for condition, result in conditions.items():
            for row in (result or {}).pop("generations", []) if isinstance(result, dict) else []:
                rows.append({"stage": stage, "model": model, "condition": condition, **row})
    path = layout.generations_dir / f"{stage}.jsonl"
    write_atomically(path, "".join(json.dumps(row) + "\n" for row in rows))
    return str(path.relative_to(layout.dir))


def read_generations(layout: RunLayout, stage: str) -> list[dict]:
    return [json.loads(line) for line in (layout.generations_dir / f"{stage}.jsonl").read_text().splitlines()]


def read_json(path: Path) -> dict | None:
    """A JSON file a stage wrote, or None while it is not (completely) there."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
