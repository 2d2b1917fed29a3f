"""Schemathesis over the OpenAPI document: no 5xx, and every answer as documented (status code,
content type, headers, body schema), on SQLite and PostgreSQL.

Bounded: 40 generated requests per endpoint, valid and invalid ones. The event stream is left out: it stays open while
a job is not final, and this server runs no job (test_api.py and test_ray_jobs.py read it).
Hypothesis drives each operation's strategy directly (schemathesis' pytest plugin cannot read
node ids under pytest 9).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from tests.api.conftest import make_key, start_server

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
EXAMPLES_PER_OPERATION = 40
EVENTS = "/v1/jobs/{job_id}/events"


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    server = start_server(database_url=database_url, artifacts=tmp_path_factory.mktemp("artifacts"), dispatch=False)
    yield server
    server.stop()


def test_api_conforms_to_its_openapi_document(server, database_url):
    headers = {"Authorization": f"Bearer {make_key(database_url, 'fuzzer')}"}
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [op for op in (result.ok() for result in schema.get_all_operations()) if op.path != EVENTS]
    assert len(operations) == 12

    for operation in operations:
        # Valid requests and invalid ones (the API must refuse those with a documented 4xx, not a 5xx).
        @given(case=st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                              operation.as_strategy(GenerationMode.NEGATIVE)))
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def conforms(case):
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

        conforms()
