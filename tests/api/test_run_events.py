"""A job's progress events come from its run folder's events.jsonl.

The job runs on a real Ray cluster (a stand-in process that sleeps, so the test decides what the run
writes), the reconciler is the real Dispatcher on a real database, and the events are read back over
loopback HTTP from a real server on that database. The run's events are written with the pipeline's
own writer (`common.run_layout.EventLog`), plus one line torn as a crashed or still-writing writer
leaves it.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import pytest

from common.run_layout import Event as RunEvent, RunLayout
from tests.api.conftest import make_key, start_server, wait_for, wait_gone

pytestmark = pytest.mark.slow


def progress_of(client, job_id: str) -> list[dict]:
    events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
    return [e["data"] for e in events if e["type"] == "progress"]


def states_of(client, job_id: str) -> list[str]:
    events = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]
    return [e["data"]["state"] for e in events if e["type"] == "state"]


def test_progress_events_come_from_events_jsonl_and_a_torn_line_waits(ray_address, tmp_path):
    from services.api import store
    from services.api.db import Database
    from services.api.jobs import Dispatcher, RayJobs, ray_token
    from services.api.metrics import Metrics
    from services.api.settings import Settings

    database_url = f"sqlite:///{tmp_path / 'control-plane.sqlite'}"
    artifacts = tmp_path / "artifacts"
    server = start_server(database_url=database_url, artifacts=artifacts, dispatch=False)
    db = Database(database_url)
    ray = RayJobs(ray_address, ray_token())
    job_id = None
    try:
        with server.client(make_key(database_url, "alice")) as client:
            created = client.post("/v1/jobs", json={"kind": "data", "config": {"name": "events", "model": "tiny"}})
            assert created.status_code == 201, created.text
            job_id, run_dir = created.json()["id"], created.json()["run_dir"]
            # What the dispatcher's submit does, with a process that writes nothing of its own.
            ray.submit(job_id, f"{sys.executable} -c 'import time; time.sleep(600)' {job_id}")
            assert store.mark_submitted(db, job_id)
            dispatcher = Dispatcher(db, ray, Settings(artifacts=artifacts, ray_address=ray_address),
                                    Metrics(lambda: store.count_by_state(db)))

            layout = RunLayout(artifacts / job_id / run_dir)
            events = layout.events()
            events.emit("stage_started", stage="data")
            events.emit("stage_finished", stage="data", wall_s=1.5)
            events.emit("stage_skipped", stage="backdoor")
            events.emit("stage_started", stage="evaluate")
            events.emit("step", stage="evaluate", step=10, loss=0.91, learning_rate=3e-4)
            events.emit("checkpoint", stage="evaluate", step=10, path="backdoor_sft/checkpoint-000010")
            failed = RunEvent(type="stage_failed", at=datetime.now(timezone.utc), stage="evaluate",
                              data={"error": "RuntimeError: out of memory"}).model_dump_json() + "\n"
            with open(layout.events_path, "ab") as file:  # half a line: its writer has not finished it
                file.write(failed[:25].encode())

            def running() -> bool:
                dispatcher.tick()
                return "running" in states_of(client, job_id)
            wait_for(running, timeout_s=120, what="the job to run on Ray")
            whole = [{"stage": "data", "status": "started"},
                     {"stage": "data", "status": "done", "wall_s": 1.5},
                     {"stage": "backdoor", "status": "skipped"},
                     {"stage": "evaluate", "status": "started"},
                     {"stage": "evaluate", "status": "step", "step": 10, "loss": 0.91, "learning_rate": 3e-4},
                     {"stage": "evaluate", "status": "checkpoint", "step": 10,
                      "path": "backdoor_sft/checkpoint-000010"}]
            assert progress_of(client, job_id) == whole  # each once, and not the torn line
            dispatcher.tick()
            assert progress_of(client, job_id) == whole

            with open(layout.events_path, "ab") as file:  # the writer finishes its line
                file.write(failed[25:].encode())
            dispatcher.tick()
            done = whole + [{"stage": "evaluate", "status": "failed", "error": "RuntimeError: out of memory"}]
            assert progress_of(client, job_id) == done
            dispatcher.tick()
            assert progress_of(client, job_id) == done

            ray.stop(job_id)

            def stopped() -> bool:
                dispatcher.tick()
                return states_of(client, job_id)[-1] == "cancelled"
            wait_for(stopped, timeout_s=120, what="the reconciler to see the job stopped on Ray")
            assert client.get(f"/v1/jobs/{job_id}").json()["error"] == "stopped on Ray"
            assert progress_of(client, job_id) == done
    finally:
        if job_id is not None:
            try:
                ray.stop(job_id)
            except Exception:
                pass
            wait_gone([job_id], timeout_s=60, what="the job's process to exit")
        db.dispose()
        server.stop()
