"""/v1/jobs/{job_id}/checkpoints: the model checkpoints in a job's run folder."""

from __future__ import annotations

from fastapi import APIRouter

from services.api import files
from services.api.deps import DatabaseDep, JobId, Key, SettingsDep, own_job
from services.api.routes.responses import ERRORS
from services.api.schemas import Checkpoint, CheckpointList

router = APIRouter(tags=["jobs"])


@router.get("/v1/jobs/{job_id}/checkpoints", response_model=CheckpointList, operation_id="listJobCheckpoints",
            responses=ERRORS)
def job_checkpoints(job_id: JobId, principal: Key, db: DatabaseDep, settings: SettingsDep) -> CheckpointList:
    """The model checkpoints the job has written so far, of every stage (backdoor SFT, HHH SFT,
    PPO), each with its step and last training metrics; any of them can be evaluated."""
    job = own_job(db, principal, job_id)
    return CheckpointList(data=[Checkpoint(**vars(c))
                                for c in files.list_checkpoints(settings.artifacts, job.id, job.config)])
