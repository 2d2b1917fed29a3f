"""Limits on what one request and one key may ask of the server: body size and request rate.

    request body      over `max_body_bytes` (uploads: `max_upload_bytes`) → 413
    requests per key  over `rate_limit_per_minute` on average, `rate_limit_burst` at once → 429 + Retry-After

The rate limit is a token bucket per API key, kept in this process: one server (the deployment
runs one replica per artifacts folder) sees all of a key's requests.
"""

from __future__ import annotations

import math
import threading
import time

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.errors import ApiError, error_response


class BodySizeLimit:
    """413 for a body over the limit (uploads have a larger one of their own).

    A body whose Content-Length is over the limit is refused before any of it is read, so a 50 MB
    body costs the server nothing; one without a length (chunked) is counted as it is read, and
    the read that crosses the limit raises the 413 inside the route, where the error handlers
    shape it like every other error.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int, upload_path: str):
        self.app, self.max_body_bytes, self.max_upload_bytes = app, max_body_bytes, max_upload_bytes
        self.upload_path = upload_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_upload_bytes if (scope["method"], scope["path"]) == ("POST", self.upload_path) \
            else self.max_body_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(413, too_large(limit), code="body_too_large", headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise ApiError(413, too_large(limit), code="body_too_large")
            return message

        await self.app(scope, counted_receive, send)


def too_large(limit: int) -> str:
    return f"the request body is larger than this server takes here ({limit} bytes)"


class RateLimiter:
    """A token bucket per key: `burst` tokens, refilled at `per_minute / 60` a second."""

    def __init__(self, per_minute: int, burst: int):
        self.rate_per_s, self.burst = per_minute / 60, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, key_id: str) -> None:
        """Spend one token of `key_id`'s bucket, or refuse with 429 and when to retry."""
        if self.rate_per_s <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate_per_s)
            if tokens < 1:
                self._buckets[key_id] = (tokens, now)
                retry_after = math.ceil((1 - tokens) / self.rate_per_s)
                raise ApiError(429, f"rate limit: at most {self.rate_per_s * 60:g} requests a minute per key "
                                    f"(bursts of {self.burst}); retry in {retry_after} s", code="rate_limited",
                               headers={"Retry-After": str(retry_after)})
            self._buckets[key_id] = (tokens - 1, now)
