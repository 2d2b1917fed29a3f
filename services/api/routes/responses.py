"""The error responses and links the routes document in the OpenAPI document."""

from __future__ import annotations

from typing import Any

from services.api.errors import Error

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Error, "description": "no API key, or not a valid one"},
    404: {"model": Error, "description": "no such job among this key's jobs"},
    413: {"model": Error, "description": "the request body is larger than this server takes"},
    422: {"model": Error, "description": "the request is not valid; `param` names the field"},
    429: {"model": Error, "description": "this key's rate limit; retry after `Retry-After` seconds",
          "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}},
}
BODY_ERRORS = {**ERRORS, 400: {"model": Error, "description": "the body is not JSON"},
               404: {"model": Error, "description": "the parent job is not among this key's jobs"},
               409: {"model": Error, "description": "the parent job has not succeeded"}}
KEY_ERRORS = {code: spec for code, spec in ERRORS.items() if code != 404}
# Routes whose answer is not JSON would document `model` errors in their own media type; errors are JSON.
JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
NON_JSON_ROUTE_ERRORS = {code: {"description": spec["description"], "content": JSON_ERROR}
                         for code, spec in ERRORS.items()}

# OpenAPI links: where a created job's id leads (clients and stateful fuzzers follow them).
JOB_LINKS = {name: {"operationId": operation, "parameters": {"job_id": "$response.body#/id"}} for name, operation in (
    ("GetJob", "getJob"), ("CancelJob", "cancelJob"), ("ListJobEvents", "listJobEvents"), ("GetJobLogs", "getJobLogs"),
    ("ListJobCheckpoints", "listJobCheckpoints"), ("GetJobArtifact", "getJobArtifact"))}
