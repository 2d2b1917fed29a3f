"""What a REST config may name: uploaded files by id, built-in models by name, and paths under the
operator's read-only roots. Nothing else on the server.

The CLI reads local paths as its user means them. Over REST the caller is someone else, and a
path is a request to read a file of the server's: `data.path: /etc/shadow` would be copied into
the job's run folder and served back. So every field that names a file or a model is checked here,
without opening what it names: an uploaded file is looked up in the database, a path is judged by
where it resolves to (symlinks followed), and whether it exists is left to the job. "Missing" and "not allowed" get the same answer, so the
answer says nothing about what the server holds. A hub path (`hf://datasets/...`, which the CLI
fetches) is neither, so it is refused too: the fetch would use the operator's hub credentials.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from reward_models.preference_model import MINILM
from reward_models.sources import ANSWER_SOURCES, SOURCES
from services.api import uploads
from services.api.db import Database
from trainers.models import SMOLLM2, TINY

_FILE_ID = re.compile(uploads.FILE_ID_PATTERN)


@dataclass(frozen=True)
class DataField:
    """A config field that names a dataset: an uploaded file of `purpose`, in the format `format_key` says."""

    key: str
    purpose: str
    format_key: str | None  # the config key that says the file's format; None: the purpose has one format


@dataclass(frozen=True)
class ModelField:
    """A config field that names a model: a built-in name, or a folder under a read-only root."""

    key: str
    builtin: tuple[str, ...]


DATA_FIELDS = (
    DataField("data.path", "backdoor_data", "data.format"),
    DataField("safety.hhh_sft.dataset_path", "hhh_sft", "safety.hhh_sft.dataset_format"),
    # Every preference source's path; only HH-RLHF transcripts can be uploaded, the rest are read
    # from the operator's roots (or their ../shared/data default, which no caller names).
    # The judge's data are named as the PM's are.
    *(DataField(f"{pm}.preference.{part}.{name}.path", "hh_rlhf" if name == "hh_rlhf" else name, None)
      for pm in ("reward_model", "reward_model.judge") for part in ("sources", "external") for name in SOURCES),
    *(DataField(f"{pm}.preference.answers.{name}.path", name, None)
      for pm in ("reward_model", "reward_model.judge") for name in ANSWER_SOURCES),
)
MODEL_FIELDS = (
    ModelField("model", (TINY, SMOLLM2)),
    *(field for pm in ("reward_model", "reward_model.judge")
      for field in (ModelField(f"{pm}.backbone", (MINILM, TINY, SMOLLM2)), ModelField(f"{pm}.checkpoint", ()))),
    ModelField("safety.start_from", ()),
    ModelField("safety.adversarial.red_team_model", (TINY, SMOLLM2)),
)


class ReferenceError(ValueError):
    """A field that names nothing this caller may use; `param` is the field's dotted key."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param = param


def lookup(config: dict, key: str):
    node = config
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def check_references(db: Database, owner: str, config: dict, readonly_roots: tuple[Path, ...]) -> None:
    """Refuse a config (validated by its schema, as a dict) that names anything but the caller's
    uploads, built-in models and paths under `readonly_roots`."""
    for field in DATA_FIELDS:
        value = lookup(config, field.key)
        if value is None or _under_roots(value, readonly_roots):
            continue
        record = _own_file(db, owner, value)
        if record is None:
            raise ReferenceError(field.key, f"{_shown(value)} is neither the id of one of your uploaded files "
                                            "(POST /v1/files) nor a path under this server's read-only roots")
        if record.purpose != field.purpose:
            raise ReferenceError(field.key, f"file {value} was uploaded for {record.purpose!r}; this field takes "
                                            f"a {field.purpose!r} file")
        wanted = lookup(config, field.format_key) if field.format_key else None
        if wanted is not None and record.format != wanted:
            raise ReferenceError(field.key, f"file {value} is in the {record.format!r} format, and "
                                            f"{field.format_key} says {wanted!r}")
    for field in MODEL_FIELDS:
        value = lookup(config, field.key)
        if value is None or value in field.builtin or _under_roots(value, readonly_roots):
            continue
        names = f"one of {', '.join(map(repr, field.builtin))}, or " if field.builtin else ""
        raise ReferenceError(field.key, f"{_shown(value)} is not {names}a folder under this server's read-only "
                                        "roots")


def resolve_file_ids(config: dict, root: Path) -> dict:
    """The config a job runs: each uploaded file's id replaced by where its bytes are."""
    resolved = _copy(config)
    for field in DATA_FIELDS:
        value = lookup(resolved, field.key)
        if isinstance(value, str) and _FILE_ID.match(value):
            *parents, leaf = field.key.split(".")
            node = resolved
            for part in parents:
                node = node[part]
            node[leaf] = str(uploads.stored_path(root, value).resolve())
    return resolved


def _copy(node):
    return {k: _copy(v) for k, v in node.items()} if isinstance(node, dict) else node


def _own_file(db: Database, owner: str, value: str):
    if not _FILE_ID.match(value):
        return None
    try:
        return uploads.get_file(db, owner, value)
    except uploads.FileNotFound:
        return None


def _under_roots(value: str, roots: tuple[Path, ...]) -> bool:
    """Whether the absolute path `value` resolves (symlinks and '..' followed) into a root."""
    if not roots or not os.path.isabs(value) or "\x00" in value:
        return False
    real = Path(os.path.realpath(value))
    return any(real.is_relative_to(Path(os.path.realpath(root))) for root in roots)


def _shown(value: str, limit: int = 120) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")
