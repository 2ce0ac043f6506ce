"""The vectorised co-occurrence core equals the scalar oracle (`models.cooccurrence_oracle`) on
random streams: histories evicting at their cap, dislikes cancelling likes, erasure, decay,
similar users, tied times and scores, unknown users, rows pruned at ``row_cap``; learned one
event at a time or in batches of any size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models import cooccurrence_oracle as oracle
from models.cooccurrence import CooccurrenceRecommender, ItemCooccurrence, item_key

TS = 1e9

events_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]),
              st.sampled_from([f"i{k}" for k in range(12)]),
              st.sampled_from([1.0, 0.6, 0.2, -0.5, -1.0, 2.0]),
              # few distinct times: ties in eviction, recency and the latest liked items
              st.sampled_from([TS, TS + 1, TS + 86_400.0, TS + 90 * 86_400.0, TS - 86_400.0])),
    max_size=120)

config_strategy = st.fixed_dictionaries({
    "history_cap": st.integers(2, 7),
    "row_cap": st.sampled_from([4, 6, 1000]),
    "user_items_cap": st.integers(1, 4),
    "similar_users": st.sampled_from([0, 3]),
    "likers_cap": st.sampled_from([1, 100]),
    "half_life_days": st.sampled_from([1.0, 180.0]),
})


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def assert_same_items(got: ItemCooccurrence, want: oracle.ItemCooccurrence) -> None:
    # the vectorised core interns every event's item, the oracle those a delta touched: an
    # item one of them lacks has zero statistics and an empty row in the other
    for item in set(got.item_ids()) | set(want.item_ids()):
        assert all(close(x, y) for x, y in zip(got.statistics(item), want.statistics(item),
                                               strict=True)), item
        a, b = got.row(item), want.row(item)
        assert a.keys() == b.keys(), item
        assert all(close(a[k], b[k]) for k in b), item
    assert got._user_items == want._user_items


def assert_same_recommendations(got: CooccurrenceRecommender,
                                want: oracle.CooccurrenceRecommender, users: list[str]) -> None:
    for user in [*users, "nobody"]:
        a = got.recommend(user, 6, fresh=True)
        b = want.recommend(user, 6, fresh=True)
        assert [(r.item_id, r.because, r.source) for r in a] == [
            (r.item_id, r.because, r.source) for r in b], user
        assert [r.score for r in a] == pytest.approx([r.score for r in b], rel=1e-9), user


@settings(max_examples=150, deadline=None)
@given(events=events_strategy, config=config_strategy, cuts=st.lists(st.integers(0, 120)),
       erased=st.sampled_from([None, "a", "b"]))
# 90 half-lives apart, b's like of i0 absorbs a's, then b's history pushes i0 out: erasing a
# would leave float residue below zero (the oracle had -1 where the kernels clamp to 0)
@example(events=[("a", "i0", 1.0, 1e9), ("b", "i0", 1.0, 1e9 + 90 * 86400),
                 ("b", "i1", 1.0, 1e9 + 90 * 86400), ("b", "i2", 1.0, 1e9 + 90 * 86400)],
         config={"history_cap": 2, "row_cap": 4, "user_items_cap": 1, "similar_users": 0,
                 "likers_cap": 1, "half_life_days": 1.0}, cuts=[], erased="a")
def test_the_vectorised_core_equals_the_oracle(events, config, cuts, erased) -> None:
    config = {**config, "neighbour_cap": min(config["row_cap"], 5)}
    fast, slow = CooccurrenceRecommender(**config), oracle.CooccurrenceRecommender(**config)
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    for start, end in zip(bounds, bounds[1:], strict=False):  # batches of random sizes
        fast.learn_many(events[start:end])
    for user, item, weight, ts in events:
        slow.learn_one(user, item, weight=weight, ts=ts)
    assert {u: h.items for u, h in fast.histories.items()} == {
        u: h.items for u, h in slow.histories.items() if h.items}
    assert_same_items(fast.items, slow.items)
    users = sorted(slow.histories)
    assert_same_recommendations(fast, slow, users)

    if erased is not None and erased in slow.histories:
        fast.forget(erased)
        for delta in slow.histories.pop(erased).forget(user_id=erased):
            slow.items.apply(delta)
        assert_same_items(fast.items, slow.items)
        assert_same_recommendations(fast, slow, [u for u in users if u != erased])


@settings(max_examples=60, deadline=None)
@given(events=events_strategy, config=config_strategy)
def test_one_event_at_a_time_equals_one_batch(events, config) -> None:
    config = {**config, "neighbour_cap": min(config["row_cap"], 5)}
    one, many = CooccurrenceRecommender(**config), CooccurrenceRecommender(**config)
    for user, item, weight, ts in events:
        one.learn_one(user, item, weight=weight, ts=ts)
    many.learn_many(events)
    for item in many.items.item_ids():  # the same sums in the same order: bit for bit
        assert one.items.row(item) == many.items.row(item)
        assert one.items.statistics(item) == many.items.statistics(item)
    for user in sorted(many.histories):
        assert one.recommend(user, 6, fresh=True) == many.recommend(user, 6, fresh=True)


def test_explanation_ties_go_to_the_smaller_item_key() -> None:
    """p and q add the same to k's score (no decay, no recency weighting): the smaller item
    key explains it first, though q, the newer, is walked first."""
    model = CooccurrenceRecommender(neighbour_cap=5, explain_items=2, half_life_days=np.inf,
                                    recency_half_life=np.inf)
    model.learn_many([("u", "p", 1.0, TS), ("u", "q", 1.0, TS + 1), ("v", "p", 1.0, TS),
                      ("v", "q", 1.0, TS), ("v", "k", 1.0, TS)])
    (rec,) = model.recommend("u", 4, explain=True)
    assert rec.item_id == "k"
    assert list(rec.because) == sorted(["p", "q"], key=item_key)


def test_rows_pruned_at_the_cap_keep_the_most_similar_with_ties_by_item_key() -> None:
    rng = np.random.default_rng(5)
    events = [(f"u{rng.integers(30)}", f"i{rng.integers(80)}", 1.0, TS + k)
              for k in range(3000)]
    fast = CooccurrenceRecommender(row_cap=10, neighbour_cap=5, history_cap=20)
    slow = oracle.CooccurrenceRecommender(row_cap=10, neighbour_cap=5, history_cap=20)
    fast.learn_many(events)
    for user, item, weight, ts in events:
        slow.learn_one(user, item, weight=weight, ts=ts)
    assert max(fast.items.row_sizes()) <= 10
    assert_same_items(fast.items, slow.items)


@pytest.mark.parametrize("explain_items", [1, 3])
def test_explanations_of_long_neighbour_lists_equal_the_oracle(explain_items: int) -> None:
    """Long lists, many contributors: the explanation walk stops early in most lists
    (`models.kernels._explain_top`), and finds what the oracle's full walk finds."""
    rng = np.random.default_rng(11)
    weights = [1.0, 1.0, 1.0, 0.5, 2.0]  # with ties of equal feedback
    events = [(f"u{rng.integers(40)}", f"i{rng.integers(120)}",
               weights[rng.integers(len(weights))], TS + 3600.0 * rng.integers(30))
              for _ in range(4000)]
    config = {"neighbour_cap": 60, "row_cap": 100, "history_cap": 80,
              "explain_items": explain_items, "similar_users": 3}
    fast, slow = CooccurrenceRecommender(**config), oracle.CooccurrenceRecommender(**config)
    fast.learn_many(events)
    for user, item, weight, ts in events:
        slow.learn_one(user, item, weight=weight, ts=ts)
    users = sorted(fast.histories)
    got = fast.recommend_many(users, 20, fresh=True)
    for user in users:
        want = slow.recommend(user, 20, fresh=True)
        assert [(r.item_id, r.because) for r in got[user]] == [
            (r.item_id, r.because) for r in want], user
        assert all(len(r.because) == explain_items for r in want[:5]), user


def test_a_snapshot_round_trip_keeps_every_row() -> None:
    rng = np.random.default_rng(2)
    model = CooccurrenceRecommender(row_cap=50, neighbour_cap=20)
    model.learn_many([(f"u{rng.integers(40)}", f"i{rng.integers(200)}", 1.0, TS + k)
                      for k in range(4000)])
    restored = ItemCooccurrence(row_cap=50, neighbour_cap=20)
    restored.load_bytes(model.items.to_bytes())
    for item in model.items.item_ids():
        assert restored.row(item) == model.items.row(item)
        assert restored.statistics(item) == model.items.statistics(item)
    assert restored.bytes_per_entry() <= 24


def test_items_known_only_from_reviews_or_unknown_score_and_snapshot() -> None:
    model = CooccurrenceRecommender()
    model.learn_many([("a", "x", 1.0, TS), ("a", "y", 1.0, TS)])
    model.items.add_reviews("reviewed-only", 1.0, 0.9)
    assert model.items.neighbours("reviewed-only") == []
    recs = model.items.score([("reviewed-only", 1.0), ("never-seen", 1.0), ("x", 1.0)], 5,
                             exclude=["x", "never-seen"], user_id="nobody", similar_users=3)
    assert [(r.item_id, r.because) for r in recs] == [("y", ("x",))]
    restored = ItemCooccurrence()
    restored.load_bytes(model.items.to_bytes())
    assert restored.row("reviewed-only") == {}


@pytest.mark.parametrize("lam", [0.2, 0.6, 1.0])
def test_the_diversity_kernel_equals_the_readable_mmr(lam: float) -> None:
    from models.rerank import _mmr

    rng = np.random.default_rng(7)
    model = CooccurrenceRecommender(row_cap=60, neighbour_cap=30)
    model.learn_many([(f"u{rng.integers(50)}", f"i{rng.integers(120)}", 1.0, TS + k)
                      for k in range(5000)])
    pool = [f"i{k}" for k in rng.permutation(130)[:100]]  # some never seen
    rel = np.round(rng.random(100), 3)  # ties too
    assert model.items.diversify(pool, rel, 50, lam) == _mmr(
        pool, rel, 50, model.items.similarities_to, lam)
