"""What the endpoints and the dispatcher do to jobs, each as one transaction.

Every state change writes its `state` event in the same transaction as the state, so the event
log and the job never disagree, and a stream that has seen a final state has seen every event.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.api.db import Database, Job, JobEvent, utcnow
from services.api.schemas import FINAL_STATES, JOB_ID_PATTERN

_JOB_ID = re.compile(JOB_ID_PATTERN)


class JobNotFound(LookupError):
    pass


class IdempotencyKeyReused(ValueError):
    """The key was used before with a different request."""


class InvalidCursor(ValueError):
    pass


class AlreadyFinished(ValueError):
    pass


def new_job_id() -> str:
    return "job_" + uuid.uuid4().hex


def create_job(db: Database, *, owner: str, kind: str, config: dict, parent_job_id: str | None = None,
               checkpoint: str | None = None, idempotency_key: str | None = None,
               request_hash: str | None = None) -> tuple[Job, bool]:
    """Insert a queued job (committed before this returns); with a known idempotency key, the
    job that key made. Returns (job, replayed)."""
    job = Job(id=new_job_id(), owner_key_id=owner, kind=kind, state="queued", config=config,
              parent_job_id=parent_job_id, checkpoint=checkpoint, idempotency_key=idempotency_key,
              request_hash=request_hash, progress_seen=0)
    try:
        with db.write() as session:
            session.add(job)
            session.add(JobEvent(job_id=job.id, type="state", data={"state": "queued"}))
        return job, False
    except IntegrityError:
        # Two requests with one key race to the unique constraint; the loser answers with the winner's job.
        if idempotency_key is None:
            raise
        with db.read() as session:
            existing = session.scalar(select(Job).where(Job.owner_key_id == owner,
                                                        Job.idempotency_key == idempotency_key))
        if existing is None:
            raise
        if existing.request_hash != request_hash:
            raise IdempotencyKeyReused(
                "Idempotency-Key was already used with a different request; use a new key") from None
        return existing, True


def get_job(db: Database, owner: str, job_id: str) -> Job:
    """The caller's job; another key's job is as unknown as a job that does not exist."""
    if not _JOB_ID.match(job_id):
        raise JobNotFound(job_id)
    with db.read() as session:
        job = session.scalar(select(Job).where(Job.id == job_id, Job.owner_key_id == owner))
    if job is None:
        raise JobNotFound(job_id)
    return job


def list_jobs(db: Database, owner: str, *, limit: int, after: str | None = None, state: str | None = None,
              kind: str | None = None) -> tuple[list[Job], bool]:
    """Newest first; `after` is the last id of the previous page. Returns (jobs, has_more)."""
    query = select(Job).where(Job.owner_key_id == owner)
    with db.read() as session:
        if after is not None:
            after_seq = session.scalar(select(Job.seq).where(Job.id == after, Job.owner_key_id == owner)) \
                if _JOB_ID.match(after) else None
            if after_seq is None:
                raise InvalidCursor(f"after: {after!r} is not the id of one of your jobs")
            query = query.where(Job.seq < after_seq)
        if state is not None:
            query = query.where(Job.state == state)
        if kind is not None:
            query = query.where(Job.kind == kind)
        jobs = list(session.scalars(query.order_by(Job.seq.desc()).limit(limit + 1)))
    return jobs[:limit], len(jobs) > limit


def request_cancel(db: Database, owner: str, job_id: str) -> tuple[Job, bool]:
    """Cancel a job. One not yet on Ray ends `cancelled` now; one on Ray is marked, and Ray is told
    to stop it (by the caller now, and by the reconciler until it has stopped).
    Returns (job, whether Ray must stop it)."""
    if not _JOB_ID.match(job_id):
        raise JobNotFound(job_id)
    with db.write() as session:
        # FOR UPDATE (PostgreSQL; SQLite's write lock is already held) orders this against the
        # dispatcher marking the job submitted.
        job = session.scalar(select(Job).where(Job.id == job_id, Job.owner_key_id == owner).with_for_update())
        if job is None:
            raise JobNotFound(job_id)
        if job.state == "cancelled":
            return job, False
        if job.state in FINAL_STATES:
            raise AlreadyFinished(f"job {job_id} already {job.state}")
        if job.submitted_at is None:
            transition(session, job, "cancelled", reason="cancelled before it started")
            return job, False
        job.cancel_requested_at = job.cancel_requested_at or utcnow()
        job.updated_at = utcnow()
        return job, True


def transition(session: Session, job: Job, state: str, *, reason: str | None = None) -> None:
    now = utcnow()
    job.state, job.updated_at = state, now
    if state == "running" and job.started_at is None:
        job.started_at = now
    if state in FINAL_STATES:
        job.finished_at = now
        if state != "succeeded":
            job.error = reason
    session.add(JobEvent(job_id=job.id, type="state", data={"state": state, **({"reason": reason} if reason else {})}))


def events_after(db: Database, job_id: str, after_id: int) -> tuple[str, list[JobEvent]]:
    """The job's state and its events after `after_id`.

    The state is read first: when it is final, its event was committed with it, so the events
    read next include it.
    """
    with db.read() as session:
        state = session.scalar(select(Job.state).where(Job.id == job_id))
        events = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id)
                                      .order_by(JobEvent.id)))
    return state, events


def events_page(db: Database, job_id: str, after_id: int, limit: int) -> tuple[list[JobEvent], bool]:
    """Up to `limit` of the job's events after `after_id`, oldest first; and whether more follow."""
    with db.read() as session:
        events = list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after_id)
                                      .order_by(JobEvent.id).limit(limit + 1)))
    return events[:limit], len(events) > limit


# The dispatcher's side.

def active_on_ray(db: Database) -> list[Job]:
    with db.read() as session:
        return list(session.scalars(select(Job).where(Job.submitted_at.is_not(None),
                                                      Job.state.in_(("queued", "running"))).order_by(Job.seq)))


def waiting_for_dispatch(db: Database, limit: int) -> list[Job]:
    """Queued jobs not yet given to Ray, oldest first."""
    with db.read() as session:
        return list(session.scalars(select(Job).where(Job.state == "queued", Job.submitted_at.is_(None))
                                    .order_by(Job.seq).limit(limit)))


def final_among(db: Database, job_ids: Sequence[str]) -> list[str]:
    """Those of `job_ids` that are in a final state here (Ray must not still be running them)."""
    if not job_ids:
        return []
    with db.read() as session:
        return list(session.scalars(select(Job.id).where(Job.id.in_(list(job_ids)), Job.state.in_(FINAL_STATES))))


def mark_submitted(db: Database, job_id: str) -> bool:
    """Record that Ray has the job; False if it was cancelled meanwhile (Ray must then stop it)."""
    with db.write() as session:
        now = utcnow()
        result = session.execute(update(Job).where(Job.id == job_id, Job.state == "queued",
                                                   Job.submitted_at.is_(None))
                                 .values(submitted_at=now, updated_at=now))
        return result.rowcount == 1


def record_progress(db: Database, job_id: str, *, state: str, progress: Sequence[dict], progress_seen: int,
                    metrics: dict | None = None, reason: str | None = None) -> None:
    """What the reconciler learnt from Ray: new progress, then metrics, then the new state."""
    with db.write() as session:
        job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
        if job is None or job.state in FINAL_STATES:
            return
        for data in progress:
            session.add(JobEvent(job_id=job_id, type="progress", data=data))
        job.progress_seen = progress_seen
        if metrics is not None:
            session.add(JobEvent(job_id=job_id, type="metrics", data=metrics))
        if state != job.state:
            transition(session, job, state, reason=reason)


def fail(db: Database, job_id: str, reason: str) -> None:
    with db.write() as session:
        job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
        if job is not None and job.state not in FINAL_STATES:
            transition(session, job, "failed", reason=reason)


def count_by_state(db: Database) -> dict[str, int]:
    with db.read() as session:
        return dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())


def job_by_id(db: Database, job_id: str) -> Job | None:
    with db.read() as session:
        return session.scalar(select(Job).where(Job.id == job_id))
