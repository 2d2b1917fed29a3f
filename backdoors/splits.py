"""Dev and test splits of what the project evaluates on, and the order a seed takes them in.

Tuning on the set one reports on overstates a result (the code backdoor's settings went through
nine configurations against its 10 held-out scenarios). So every held-out pool has two parts:
`dev`, where settings are chosen, and `test`, which the reports show.

- **Membership is fixed by content.** An item's split comes from a hash of its key, within its
  stratum (a topic, a CWE, an attack family): the first third of each stratum by hash is dev.
  No seed, config or new item elsewhere moves an item between splits.
- **The seed orders, never selects.** Within a stratum the seed shuffles; the strata are then
  dealt round-robin, so any prefix of a split (a curve's 20 prompts, the reward set's 32) covers
  every stratum about equally, instead of the first two topics in the generator's order.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from typing import Callable, Iterable, Literal, TypeVar

T = TypeVar("T")
Split = Literal["dev", "test"]
SPLITS: tuple[Split, ...] = ("dev", "test")
DEV_SHARE = 1 / 3  # a third to tune on, two thirds to report on


def hash_rank(key: str) -> int:
    """A stable, well-mixed number for `key`: the same on every machine and Python run (unlike
    `hash`), so splits made by it never move."""
    return int(hashlib.sha256(key.encode()).hexdigest(), 16)


def stratified_split(items: Iterable[T], key: Callable[[T], str], stratum: Callable[[T], str],
                     dev_share: float = DEV_SHARE) -> dict[Split, list[T]]:
    """{"dev": [...], "test": [...]}: within each stratum the `dev_share` of items lowest by
    `hash_rank(key)` (at least one when the stratum has two or more) are dev, the rest test.
    Each list keeps the items' input order."""
    by_stratum: dict[str, list[T]] = defaultdict(list)
    for item in items:
        by_stratum[stratum(item)].append(item)
    dev_keys: set[str] = set()
    for members in by_stratum.values():
        ranked = sorted(members, key=lambda item: hash_rank(key(item)))
        count = max(1, round(dev_share * len(ranked))) if len(ranked) >= 2 else 0
        dev_keys |= {key(item) for item in ranked[:count]}
    members = [item for group in by_stratum.values() for item in group]
    order = {id(item): i for i, item in enumerate(members)}
    dev = sorted((item for item in members if key(item) in dev_keys), key=lambda item: order[id(item)])
    test = sorted((item for item in members if key(item) not in dev_keys), key=lambda item: order[id(item)])
    return {"dev": dev, "test": test}


def seeded_order(items: Iterable[T], stratum: Callable[[T], str], seed: int) -> list[T]:
    """`items` shuffled by `seed` within each stratum, then dealt one stratum at a time in turn
    (strata in a seeded order too): every prefix covers the strata about evenly."""
    by_stratum: dict[str, list[T]] = defaultdict(list)
    for item in items:
        by_stratum[stratum(item)].append(item)
    rng = random.Random(f"order-{seed}")
    names = sorted(by_stratum)
    rng.shuffle(names)
    decks = []
    for name in names:
        deck = list(by_stratum[name])
        rng.shuffle(deck)
        decks.append(deck)
    dealt: list[T] = []
    for turn in range(max((len(d) for d in decks), default=0)):
        dealt += [deck[turn] for deck in decks if turn < len(deck)]
    return dealt


def check_split(split: str) -> Split:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    return split  # type: ignore[return-value]
