"""/v1/jobs/{job_id}/events: a job's events as a JSON page, or live as server-sent events.

The stream is async and reads the database in the thread pool between its waits.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from services.api import store
from services.api.db import Database
from services.api.deps import DatabaseDep, JobId, Key, own_job
from services.api.routes.responses import ERRORS
from services.api.schemas import FINAL_STATES, Event, EventList

EVENT_POLL_S = 0.5
HEARTBEAT_S = 15.0
SSE_EXAMPLE = ('id: 7\nevent: state\ndata: {"id": 7, "job_id": "job_5f0c8a4d2b7e4e31a9d6c3b2a1f0e9d8", '
               '"type": "state", "data": {"state": "running"}, "created_at": "2026-11-27T10:15:03Z"}\n\n')
EVENT_STREAM = "text/event-stream"
MAX_EVENT_ID = 2**31 - 1  # event ids are 32-bit integer columns; PostgreSQL refuses a larger bound

router = APIRouter(tags=["jobs"])


@router.get("/v1/jobs/{job_id}/events", response_model=EventList, operation_id="listJobEvents",
            responses={**ERRORS, 200: {
                "description": f"a page of events (JSON), or with `Accept: {EVENT_STREAM}` server-sent events "
                               "until the job's final state, each `data:` an Event",
                "content": {EVENT_STREAM: {"schema": {"type": "string", "description": "SSE frames"},
                                           "x-itemSchema": {"$ref": "#/components/schemas/Event"},
                                           "example": SSE_EXAMPLE}}}})
async def job_events(job_id: JobId, principal: Key, request: Request, db: DatabaseDep,
                     after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID, description="the last event id seen")] = 0,
                     limit: Annotated[int, Query(ge=1, le=1000, description="JSON page size")] = 100,
                     accept: Annotated[str | None, Header(max_length=1000)] = None,
                     last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None):
    """State changes, progress (stage started/done) and metrics, oldest first: a JSON page
    (`?after=`, `?limit=`), or, asked for as `text/event-stream`, a live stream that ends after
    the final state (reconnect with Last-Event-ID to resume)."""
    await run_in_threadpool(own_job, db, principal, job_id)
    if EVENT_STREAM not in (accept or ""):
        events, has_more = await run_in_threadpool(store.events_page, db, job_id, after, limit)
        return EventList(data=[Event.model_validate(e, from_attributes=True) for e in events], has_more=has_more,
                         next_cursor=events[-1].id if has_more else None)
    if last_event_id and last_event_id.isascii() and last_event_id.isdigit():
        after = max(after, min(int(last_event_id), MAX_EVENT_ID))
    return StreamingResponse(event_stream(db, request, job_id, after), media_type=EVENT_STREAM,
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def event_stream(db: Database, request: Request, job_id: str, after: int):
    """SSE frames of the job's events after `after`, until its final state or the client leaves."""
    quiet_s = 0.0
    while True:
        state, events = await run_in_threadpool(store.events_after, db, job_id, after)
        for event in events:
            after = event.id
            payload = Event.model_validate(event, from_attributes=True).model_dump_json()
            yield f"id: {event.id}\nevent: {event.type}\ndata: {payload}\n\n"
        if state in FINAL_STATES:
            return
        if events:
            quiet_s = 0.0
        elif quiet_s >= HEARTBEAT_S:
            yield ": keep-alive\n\n"  # a comment line: keeps proxies from closing an idle stream
            quiet_s = 0.0
        if await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL_S)
        quiet_s += EVENT_POLL_S
