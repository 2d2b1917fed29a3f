"""Health checks (no key needed) and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from services.api.deps import DatabaseDep, DispatcherDep, Key, MetricsDep, SettingsDep
from services.api.routes.responses import NON_JSON_ROUTE_ERRORS
from services.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health,
            responses={503: {"model": Health, "description": "the database or Ray does not answer"}})
def readyz(response: Response, db: DatabaseDep, dispatcher: DispatcherDep, settings: SettingsDep) -> Health:
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


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
                       401: NON_JSON_ROUTE_ERRORS[401], 429: NON_JSON_ROUTE_ERRORS[429]})
def prometheus_metrics(_key: Key, metrics: MetricsDep) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
