"""The project's data files, ``backdoors/data/``: loading, validation and a content hash.

Scenarios, prompt tables, attack templates and plan tables are YAML files shipped as package
data (``pyproject.toml``, ``[tool.setuptools.package-data]``) and read through importlib.resources.
Each file has a pydantic schema (``DataModel``: unknown keys are errors) and loads through
`load_data`, which turns a schema error into a `DataFileError` naming the file, the entry (by
its ``id`` where it has one) and the field at fault.

The tiny model's tokenizer and the data cache are keyed by `content_hash` of these files, so
an edit to a data file rebuilds them without anyone bumping a version by hand.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

Root = Path | Traversable


class DataModel(BaseModel):
    """A data file's schema: unknown keys are errors, values are not coerced ("5" is no int)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


M = TypeVar("M", bound=BaseModel)


class DataFileError(ValueError):
    """A data file that does not load; the message names the file, the entry and the field."""


def data_root() -> Root:
    """Where the data files are: the package's ``data`` folder (tests may point it elsewhere)."""
    return resources.files("backdoors").joinpath("data")


def display_name(relative: str, root: Root | None = None) -> str:
    """How errors name a data file: 'backdoors/data/<relative>', or its full path elsewhere."""
    root = data_root() if root is None else root
    return f"backdoors/data/{relative}" if root == data_root() else str(Path(str(root)) / relative)


def fail(file: str, entry: str | None, field: str | None, message: str) -> DataFileError:
    """The error for a bad value: "<file>: entry <entry>: field <field>: <message>"."""
    parts = [file] + ([f"entry {entry}"] if entry else []) + ([f"field {field}"] if field else [])
    return DataFileError(": ".join(parts + [message]))


def read_yaml(relative: str, root: Root | None = None) -> Any:
    """The parsed YAML of one data file (a path relative to the data folder)."""
    root = data_root() if root is None else root
    name, path = display_name(relative, root), root.joinpath(relative)
    if not path.is_file():
        raise DataFileError(f"{name}: data file not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise DataFileError(f"{name}: not valid YAML: {err}") from None


def _loc_text(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _entry_and_field(raw: Any, loc: tuple) -> tuple[str | None, str | None]:
    """Split a pydantic error location into the entry (up to the innermost item with an id) and
    the field inside it: ("scenarios", 3, "secure", 0) -> ("scenarios[3] 'cwe20-x'", "secure[0]")."""
    if loc and loc[-1] == "[key]":  # a mapping's key is at fault, not its value
        entry, field = _entry_and_field(raw, loc[:-1])
        return entry, f"{field} (the key)"
    node, cut, label = raw, None, None
    for index, part in enumerate(loc):
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and isinstance(node.get("id"), str):
            cut, label = index + 1, node["id"]
    if cut is None:  # no id: the field is the last name in the location ("templates[2]")
        names = [index for index, part in enumerate(loc) if isinstance(part, str)]
        cut = names[-1] if names else max(len(loc) - 1, 0)
    entry = _loc_text(loc[:cut]) + (f" {label!r}" if label else "")
    return entry or None, _loc_text(loc[cut:]) or None


def validate(name: str, raw: Any, model: type[M]) -> M:
    """`raw` (the parsed content of the file called `name`) checked against `model`."""
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        entry, field = _entry_and_field(raw, tuple(first["loc"]))
        more = f" (and {err.error_count() - 1} more error(s))" if err.error_count() > 1 else ""
        raise fail(name, entry, field, first["msg"] + more) from None


def load_data(relative: str, model: type[M], root: Root | None = None) -> M:
    """Read and validate one data file."""
    root = data_root() if root is None else root
    return validate(display_name(relative, root), read_yaml(relative, root), model)


def _files(folder: Root, prefix: str = "") -> list[tuple[str, Root]]:
    found = []
    for child in folder.iterdir():
        if child.is_dir():
            found += _files(child, f"{prefix}{child.name}/")
        elif child.name.endswith((".yaml", ".yml", ".json", ".jsonl")):
            found.append((prefix + child.name, child))
    return found


def content_hash(root: Root | None = None) -> str:
    """sha256 over every data file's path and bytes: what the generated data and the tiny
    tokenizer depend on beyond the code."""
    digest = hashlib.sha256()
    for relative, file in sorted(_files(data_root() if root is None else root)):
        content = file.read_bytes()
        digest.update(f"{relative}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()
