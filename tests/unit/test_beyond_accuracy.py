"""models.metrics, beyond accuracy: every measure on a hand-made case whose values are worked out
in the comments."""

from __future__ import annotations

import math

import pytest

from models.metrics import (
    beyond_accuracy,
    catalogue_coverage,
    cosine_similarity,
    exposure_gini,
    gini,
    intra_list_diversity,
    long_tail,
    long_tail_share,
    novelty,
    popularity_lift,
)

# five items; interactions a:6, b:2, c:1, d:1, e:0 (10 in all); two users shown two items each
COUNTS = {"a": 6, "b": 2, "c": 1, "d": 1, "e": 0}
CATALOGUE = ["a", "b", "c", "d", "e"]
LISTS = [["a", "b"], ["a", "c"]]
HISTORIES = [["c"], ["d", "b"]]
SIMS = {frozenset("ab"): 0.5}


def similarity(i: str, j: str) -> float:
    return 1.0 if i == j else SIMS.get(frozenset((i, j)), 0.0)


def test_coverage_counts_distinct_items_shown_over_the_catalogue():
    assert catalogue_coverage(LISTS, len(CATALOGUE), k=2) == 3 / 5
    assert catalogue_coverage(LISTS, len(CATALOGUE), k=1) == 1 / 5  # only "a" in the top 1


def test_gini_of_exposure_includes_items_never_shown():
    # exposure sorted: 0, 0, 1, 1, 2 -> sum((2i - n - 1) x_i) / (n sum x) = (0 + 2 + 8) / 20
    assert exposure_gini(LISTS, CATALOGUE, k=2) == pytest.approx(0.5)
    assert gini([3, 3, 3]) == 0.0
    assert gini([0] * 9 + [5]) == pytest.approx(0.9)
    assert gini([]) == 0.0


def test_novelty_is_the_mean_self_information_of_the_items_shown():
    bits = {i: -math.log2(c / 10) for i, c in COUNTS.items() if c}
    assert novelty(LISTS, COUNTS, k=2) == pytest.approx((2 * bits["a"] + bits["b"] + bits["c"]) / 4)
    assert novelty([["e"]], COUNTS, k=1) == pytest.approx(math.log2(10))  # unseen counts as one


def test_intra_list_diversity_averages_pairwise_dissimilarity_per_list():
    # list 1: 1 - 0.5; list 2: 1 - 0
    assert intra_list_diversity(LISTS, similarity, k=2) == pytest.approx(0.75)
    assert intra_list_diversity([["a"]], similarity, k=2) == 0.0  # no pair: no list counted


def test_popularity_lift_compares_lists_with_the_users_own_histories():
    # shown: (6 + 2) / 2 = 4 and (6 + 1) / 2 = 3.5, mean 3.75; histories: 1 and 1.5, mean 1.25
    assert popularity_lift(LISTS, HISTORIES, COUNTS, k=2) == pytest.approx(3.75 / 1.25 - 1)
    assert popularity_lift([["c"]], [["d"]], COUNTS, k=1) == 0.0  # as popular as their taste


def test_long_tail_is_everything_outside_the_head_holding_the_share():
    assert long_tail(COUNTS, head_share=0.2) == {"b", "c", "d", "e"}  # "a" alone holds 60%
    assert long_tail(COUNTS, head_share=0.7) == {"c", "d", "e"}  # a + b = 80% >= 70%
    assert long_tail_share(LISTS, long_tail(COUNTS), k=2) == 0.5  # b and c of a, b, a, c


def test_cosine_similarity_of_binary_rater_vectors():
    sim = cosine_similarity([("u1", "a"), ("u2", "a"), ("u1", "b"), ("u3", "c")])
    assert sim("a", "b") == pytest.approx(1 / math.sqrt(2))
    assert sim("a", "c") == 0.0
    assert sim("b", "b") == pytest.approx(1.0)


def test_beyond_accuracy_reports_all_six_from_the_same_lists():
    out = beyond_accuracy(LISTS, HISTORIES, counts=COUNTS, catalogue=CATALOGUE,
                          similarity=similarity, k=2)
    assert out == {"coverage@10": 0.6, "gini@10": 0.5,
                   "novelty": round(novelty(LISTS, COUNTS, k=2), 4), "ild@10": 0.75,
                   "popularity_lift": 2.0, "long_tail_share": 0.5}
