"""The REST API's routes, one APIRouter a module; `create_app` includes `ROUTERS` in this order.

    files.py        /v1/files: upload, list, read, delete datasets
    health.py       /healthz, /readyz (no key), /metrics
    jobs.py         /v1/jobs: submit, list, read, cancel
    events.py       /v1/jobs/{id}/events: a JSON page, or server-sent events
    artifacts.py    /v1/jobs/{id}/logs and /v1/jobs/{id}/artifacts/{path}
    checkpoints.py  /v1/jobs/{id}/checkpoints
    evaluations.py  /v1/evaluations
    submission.py   what creating a job and an evaluation share (config checks, parent job, store)
    responses.py    the error responses and links the routes document

What the routes share (settings, database, Ray, metrics, the caller's key) are FastAPI
dependencies on `request.app.state`, in services/api/deps.py.
"""

from services.api.routes import artifacts, checkpoints, evaluations, events, files, health, jobs

ROUTERS = (files.router, health.router, jobs.router, events.router, artifacts.router, checkpoints.router,
           evaluations.router)
