"""/v1/evaluations: evaluate a checkpoint of a succeeded training job. An evaluation is a job of
kind `evaluate`: its events, logs and artifacts are under /v1/jobs/{id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Response

from services.api import files
from services.api.db import Job as JobRow
from services.api.deps import DatabaseDep, Key, SettingsDep, own_job
from services.api.errors import ApiError
from services.api.kinds import KINDS
from services.api.routes.responses import BODY_ERRORS, ERRORS
from services.api.routes.submission import parent_for, submit, validated_config
from services.api.schemas import JOB_ID_PATTERN, Evaluation, EvaluationCreate
from services.api.settings import Settings

router = APIRouter(tags=["evaluations"])


@router.post("/v1/evaluations", status_code=201, response_model=Evaluation, operation_id="createEvaluation",
             responses={**BODY_ERRORS, 201: {
                 "description": "the evaluation, queued", "links": {"GetEvaluation": {
                     "operationId": "getEvaluation", "parameters": {"evaluation_id": "$response.body#/id"}}}}})
def create_evaluation(body: EvaluationCreate, principal: Key, response: Response, db: DatabaseDep,
                      settings: SettingsDep,
                      idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                                                    max_length=255)] = None) -> Evaluation:
    """Evaluate a checkpoint of a succeeded training job (defection with and without the trigger).
    The evaluation runs as a job of kind `evaluate`."""
    kind = KINDS["evaluate"]
    parent = parent_for(db, settings, principal, kind.name, kind.inherits, body.job_id, field="job_id")
    if body.checkpoint is not None:
        names = [c.name for c in files.list_checkpoints(settings.artifacts, parent.id, parent.config)]
        if body.checkpoint not in names:
            raise ApiError(422, f"checkpoint: job {parent.id} has no {body.checkpoint!r} "
                                f"(it has: {', '.join(names) or 'none'})", param="checkpoint")
    evaluation = {**parent.config.get("evaluation", {}), **body.evaluation.model_dump(exclude_unset=True)}
    config = validated_config(db, settings, principal, kind.parse, {**parent.config, "evaluation": evaluation})
    return to_evaluation(settings, submit(db, principal, response, kind=kind.name, config=config, parent=parent,
                                          checkpoint=body.checkpoint, idempotency_key=idempotency_key,
                                          request=body.model_dump(mode="json")))


@router.get("/v1/evaluations/{evaluation_id}", response_model=Evaluation, operation_id="getEvaluation",
            responses=ERRORS)
def get_evaluation(evaluation_id: Annotated[str, Path(pattern=JOB_ID_PATTERN)], principal: Key, db: DatabaseDep,
                   settings: SettingsDep) -> Evaluation:
    job = own_job(db, principal, evaluation_id)
    if job.kind != "evaluate":
        raise ApiError(404, f"no evaluation {evaluation_id!r}", param="evaluation_id")
    return to_evaluation(settings, job)


def to_evaluation(settings: Settings, job: JobRow) -> Evaluation:
    results = None
    if job.state == "succeeded":
        record = files.run_layout(settings.artifacts, job.id, job.config).record("evaluate")
        # The record's outputs with its timing, as this endpoint has always answered
        results = None if record is None else {**record.outputs.model_dump(), "wall_s": record.wall_s,
                                               "finished_at": record.finished_at.isoformat()}
    return Evaluation(id=job.id, state=job.state, job_id=job.parent_job_id, checkpoint=job.checkpoint,
                      config=job.config["evaluation"], results=results, error=job.error,
                      created_at=job.created_at, finished_at=job.finished_at)
