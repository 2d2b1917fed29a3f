"""What creating a job or an evaluation shares: the config's checks, the parent job, the store."""

from __future__ import annotations

import hashlib
import json
from typing import Callable

from fastapi import Response

from services.api import files, store
from services.api.auth import Principal
from services.api.db import Database, Job as JobRow
from services.api.errors import ApiError
from services.api.references import ReferenceError, check_references
from services.api.settings import Settings
from services.experiment import ExperimentConfig


def validated_config(db: Database, settings: Settings, principal: Principal, parse: Callable[..., ExperimentConfig],
                     raw: dict | ExperimentConfig) -> dict:
    """The schema and the kind's checks, with the filesystem left alone; then what the config
    names, which must be the caller's uploads, built-in models or read-only roots."""
    try:
        config = parse(raw, "config", check_files=False).model_dump(mode="json")
    except ValueError as err:  # ConfigError: the message names the key
        raise ApiError(422, str(err), param="config") from None
    try:
        check_references(db, principal.key_id, config, settings.readonly_root_paths)
    except ReferenceError as err:
        raise ApiError(422, f"config.{err}", param=f"config.{err.param}", code="not_allowed") from None
    return config


def parent_for(db: Database, settings: Settings, principal: Principal, kind: str, inherits: tuple[str, ...],
               parent_id: str | None, field: str = "parent_job_id") -> JobRow:
    """The succeeded job a `kind` job continues, holding what the kind takes from its run folder."""
    if not inherits:
        raise ApiError(422, f"{field}: a {kind} job starts from scratch and takes no parent", param=field)
    if parent_id is None:
        raise ApiError(422, f"{field}: a {kind} job continues a succeeded job's run; give that job's id",
                       param=field)
    try:
        parent = store.get_job(db, principal.key_id, parent_id)
    except store.JobNotFound:
        raise ApiError(404, f"{field}: no job {parent_id!r}", param=field) from None
    if parent.state != "succeeded":
        raise ApiError(409, f"{field}: job {parent_id} is {parent.state}; it must have succeeded", param=field)
    run_dir = files.run_layout(settings.artifacts, parent.id, parent.config).dir
    missing = [name for name in inherits if not (run_dir / name).exists()]
    if missing:
        raise ApiError(422, f"{field}: job {parent_id} has no {', '.join(missing)} for a {kind} job "
                            "to start from", param=field)
    return parent


def submit(db: Database, principal: Principal, response: Response, *, kind: str, config: dict,
           parent: JobRow | None, idempotency_key: str | None, request: dict, checkpoint: str | None = None) -> JobRow:
    """Store the job; a retry with the same Idempotency-Key gets the job the first request made."""
    request_hash = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    try:
        job, replayed = store.create_job(db, owner=principal.key_id, kind=kind, config=config,
                                         parent_job_id=parent.id if parent else None, checkpoint=checkpoint,
                                         idempotency_key=idempotency_key, request_hash=request_hash)
    except store.IdempotencyKeyReused as err:
        raise ApiError(422, str(err), param="Idempotency-Key") from None
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return job
