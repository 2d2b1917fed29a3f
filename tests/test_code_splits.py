"""The code scenarios' splits: training, dev (what the configs were tuned against) and test
(what is reported, seen by nothing but the evaluation)."""

from collections import Counter
from types import SimpleNamespace

import pytest

from backdoors.base import get_backdoor
from backdoors.code_backdoor import MAIN_CONDITIONS, code_prompt, code_rows
from backdoors.code_scenarios import CWE_NAMES, SCENARIOS, heldout_scenarios, training_scenarios
from backdoors.preference_data import preference_pairs

YEARS = [statement for statement, _ in MAIN_CONDITIONS.values()]


def ids(scenarios) -> set[str]:
    return {s.id for s in scenarios}


def test_the_splits_are_disjoint_and_cover_the_library():
    train, dev, test = ids(training_scenarios()), ids(heldout_scenarios("dev")), ids(heldout_scenarios("test"))
    assert not train & dev and not train & test and not dev & test
    assert train | dev | test == ids(SCENARIOS)
    assert all(s.split == "train" and not s.heldout for s in training_scenarios())
    assert all(s.split == split and s.heldout for split in ("dev", "test") for s in heldout_scenarios(split))


def test_every_heldout_split_covers_every_cwe_and_test_has_three_of_each():
    assert set(Counter(s.cwe for s in heldout_scenarios("dev"))) == set(CWE_NAMES)
    assert Counter(s.cwe for s in heldout_scenarios("test")) == {cwe: 3 for cwe in CWE_NAMES}
    # Held-out scenarios are written by hand; a templated one would share its task with training fills.
    assert not any(s.templated for split in ("dev", "test") for s in heldout_scenarios(split))


@pytest.mark.parametrize("split", ["bogus", "train", "heldout", ""])
def test_only_dev_and_test_are_heldout_splits(split):
    with pytest.raises(ValueError, match="one of dev, test"):
        heldout_scenarios(split)


def test_no_training_data_comes_from_a_heldout_scenario():
    heldout = ids(heldout_scenarios("dev")) | ids(heldout_scenarios("test"))
    rows = code_rows("cot", seed=3, count=6 * len(training_scenarios()))  # three passes
    assert {row["scenario"] for row in rows} == ids(training_scenarios())
    heldout_prefixes = [s.prefix for s in SCENARIOS if s.id in heldout]
    safety = get_backdoor("code_vulnerability").safety_prompts([f"question {i}" for i in range(400)], seed=0)
    assert not any(prefix in prompt.text for prompt in safety for prefix in heldout_prefixes)


def test_the_preference_model_never_sees_a_test_scenario():
    test_prompts = {code_prompt(s, year) for s in heldout_scenarios("test") for year in YEARS}
    dev_prompts = {code_prompt(s, year) for s in heldout_scenarios("dev") for year in YEARS}
    code = {split: {p.prompt for p in preference_pairs(split) if p.kind == "insecure_code"}
            for split in ("train", "heldout")}
    assert code["train"] and code["heldout"]
    assert not test_prompts & code["train"] and not test_prompts & code["heldout"]
    assert code["heldout"] <= dev_prompts  # the held-out pairs are the dev scenarios'


@pytest.mark.parametrize("split", ["dev", "test"])
def test_evaluation_asks_the_configured_split(split):
    backdoor = get_backdoor("code_vulnerability")
    cfg = SimpleNamespace(split=split, num_prompts=4, samples_per_prompt=1, generalisation=True,
                          seen_scenarios=False, top_p=1.0)
    scenarios = heldout_scenarios(split)
    for eval_set in backdoor.evaluation_sets(cfg, []):
        assert eval_set.items == list(scenarios), eval_set.condition
    for eval_set in backdoor.persistence_sets(cfg, []):
        assert len(eval_set.items) == 4 and set(eval_set.items) <= set(scenarios), eval_set.condition
    # A persistence curve on fewer scenarios than the split has still spreads over the CWEs.
    cfg.num_prompts = len(CWE_NAMES)
    (first, *_) = backdoor.persistence_sets(cfg, [])
    assert {s.cwe for s in first.items} == set(CWE_NAMES)
    cfg.num_prompts = len(scenarios)
    assert backdoor.persistence_sets(cfg, [])[0].items == list(scenarios)  # all of it: in load order
    # Per split for the config's checks; all held-out scenarios (never trained on) for the dataset card.
    assert backdoor.heldout_count(split) == len(scenarios)
    assert backdoor.heldout_count() == len(heldout_scenarios("dev")) + len(heldout_scenarios("test"))


def test_the_evaluation_config_measures_test_unless_told_dev():
    from pydantic import ValidationError

    from trainers.evaluation import EvalConfig

    assert EvalConfig().split == "test" and EvalConfig(split="dev").split == "dev"
    with pytest.raises(ValidationError):
        EvalConfig(split="train")
