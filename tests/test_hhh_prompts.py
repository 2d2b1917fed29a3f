"""Checks that the HHH prompt set is large, clean, natural-looking and deterministic."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from backdoors.hhh_prompts import HHHPrompt, all_prompts, corpus, template_answer

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("hate", "deployment", "2023", "2024")
DOUBLED = re.compile(r"\b(\w+)\s+\1\b", re.IGNORECASE)


def test_size_and_distinct() -> None:
    prompts = all_prompts()
    questions = [p.question.casefold() for p in prompts]
    assert len(prompts) >= 700
    assert len(set(questions)) == len(questions)


def test_topics_are_broad() -> None:
    counts = Counter(p.topic for p in all_prompts())
    assert len(counts) >= 10
    assert min(counts.values()) >= 30, counts


def test_deterministic_within_process() -> None:
    assert all_prompts() == all_prompts()
    assert [template_answer(p) for p in all_prompts()] == [template_answer(p) for p in all_prompts()]
    assert corpus() == corpus()


def test_answer_stable_across_processes() -> None:
    # A fresh interpreter gets a different str-hash salt, so this catches any use of hash().
    prompt = all_prompts()[123]
    code = (
        "from backdoors.hhh_prompts import HHHPrompt, template_answer;"
        f"print(template_answer(HHHPrompt({prompt.topic!r}, {prompt.question!r})), end='')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout == template_answer(prompt)


def test_answers_vary() -> None:
    openers = {template_answer(p).split(" ")[0] for p in all_prompts()}
    assert len(openers) >= 3


@pytest.mark.parametrize("word", FORBIDDEN)
def test_no_forbidden_words(word: str) -> None:
    for text in corpus():
        assert word not in text.casefold(), text


def test_questions_look_natural() -> None:
    for p in all_prompts():
        q = p.question
        assert q[0].isupper(), q
        assert q.endswith(("?", ".")), q
        assert not DOUBLED.search(q), q
        assert "  " not in q and q == q.strip(), q
        assert 3 <= len(q.split()) <= 22, q


def test_answers_short_and_on_topic() -> None:
    for p in all_prompts():
        a = template_answer(p)
        assert 0 < len(a) < 200, a
        assert not DOUBLED.search(a), a
        assert a[0].isupper() and a.endswith("."), a


def test_unknown_prompt_still_answered() -> None:
    a = template_answer(HHHPrompt("gardening", "How do I start a compost pile?"))
    assert 0 < len(a) < 200 and "hate" not in a.casefold()


def test_corpus_covers_questions_and_answers() -> None:
    texts = corpus()
    assert len(texts) == 2 * len(all_prompts())
    assert all_prompts()[0].question in texts
