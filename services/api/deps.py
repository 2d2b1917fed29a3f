"""What the routes share, as FastAPI dependencies: the app's settings, database, Ray client and
metrics (put on `app.state` by `create_app`), the caller's key, and the job-id path parameter.

The accessors are `async def`: they only read `request.app.state`, so FastAPI calls them on the
event loop instead of sending each to its thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from services.api import store
from services.api.auth import Principal, require_key
from services.api.db import Database, Job as JobRow
from services.api.errors import ApiError
from services.api.jobs import Dispatcher, RayJobs
from services.api.metrics import Metrics
from services.api.schemas import JOB_ID_PATTERN
from services.api.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_ray(request: Request) -> RayJobs | None:
    """Ray's Job Submission API, or None where the server does not dispatch."""
    return request.app.state.ray


async def get_dispatcher(request: Request) -> Dispatcher | None:
    return request.app.state.dispatcher


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
RayDep = Annotated[RayJobs | None, Depends(get_ray)]
DispatcherDep = Annotated[Dispatcher | None, Depends(get_dispatcher)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
Key = Annotated[Principal, Depends(require_key)]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="a job id, e.g. job_5f0c8a4d2b7e4e31a9d6c3b2a1f0e9d8")]


def own_job(db: Database, principal: Principal, job_id: str) -> JobRow:
    """The caller's job; another key's job answers 404, as an unknown one does."""
    try:
        return store.get_job(db, principal.key_id, job_id)
    except store.JobNotFound:
        raise ApiError(404, f"no job {job_id!r}", param="job_id") from None
