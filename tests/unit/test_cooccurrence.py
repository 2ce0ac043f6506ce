"""Pure tests of the co-occurrence model: known answers, order independence, caps, state."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.cooccurrence import (
    CooccurrenceRecommender,
    Delta,
    ItemCooccurrence,
    UserHistory,
    decay_factor,
    decay_factors,
)
from models.feedback import FeedbackWeights
from models.kernels import _kept, _top
from streams.runtime.state import decode_entry, encode_entry

TS = 1e9  # the default decay epoch: g = 1


def learn(model: CooccurrenceRecommender, events) -> CooccurrenceRecommender:
    for user, item, weight, ts in events:
        model.learn_one(user, item, weight=weight, ts=ts)
    return model


TINY = [
    ("ann", "alien", 1.0, TS), ("ann", "aliens", 1.0, TS),
    ("bob", "alien", 1.0, TS), ("bob", "aliens", 1.0, TS), ("bob", "heat", 1.0, TS),
    ("cy", "alien", 1.0, TS),
]


def test_similar_users_add_their_items_with_the_blend_weight():
    model = learn(CooccurrenceRecommender(similar_users=30, user_blend=1.0), TINY)
    # cy liked alien, as did ann (cosine of liked sets 1/sqrt(1*2)) and bob (1/sqrt(1*3)).
    # From users: aliens 0.707 + 0.577 = 1.284, heat 0.577; scaled to a max of 1.
    # From items: aliens 0.816, heat 0.577; scaled: 1 and 0.707.
    recs = model.recommend("cy", 5, fresh=True)
    assert [r.item_id for r in recs] == ["aliens", "heat"]
    assert [r.score for r in recs] == pytest.approx(
        [2.0, 1 / math.sqrt(2) + (1 / math.sqrt(3)) / (1 / math.sqrt(2) + 1 / math.sqrt(3))])


def test_snapshot_keeps_the_similar_user_index():
    model = learn(CooccurrenceRecommender(), TINY)
    restored = CooccurrenceRecommender()
    restored.items.load_bytes(model.items.to_bytes())
    for user, history in model.histories.items():
        restored.set_history(user, history)
    assert restored.recommend("cy", 5, fresh=True) == model.recommend("cy", 5, fresh=True)


def test_tiny_history_gives_known_neighbours_scores_and_explanations():
    model = learn(CooccurrenceRecommender(similar_users=0), [
        ("ann", "alien", 1.0, TS), ("ann", "aliens", 1.0, TS),
        ("bob", "alien", 1.0, TS), ("bob", "aliens", 1.0, TS), ("bob", "heat", 1.0, TS),
        ("cy", "alien", 1.0, TS),
    ])
    # C[alien][aliens] = 2, N[alien] = 3, N[aliens] = 2, C[alien][heat] = 1, N[heat] = 1
    neighbours = model.items.neighbours("alien", fresh=True)
    assert [item for item, _ in neighbours] == ["aliens", "heat"]
    assert [sim for _, sim in neighbours] == pytest.approx([2 / math.sqrt(6), 1 / math.sqrt(3)])
    recs = model.recommend("cy", 5, fresh=True)
    assert [(r.item_id, r.because, r.source) for r in recs] == [
        ("aliens", ("alien",), "items"), ("heat", ("alien",), "items")]
    assert recs[0].score == pytest.approx(2 / math.sqrt(6))
    # ann has seen alien and aliens: only heat is left, explained by both, stronger first
    recs = model.recommend("ann", 5, fresh=True)
    assert [r.item_id for r in recs] == ["heat"]
    assert set(recs[0].because) == {"alien", "aliens"}


def test_low_rating_cancels_a_play_and_negative_feedback_is_not_a_like():
    w = FeedbackWeights(rating=1.0)
    history = UserHistory()
    deltas = history.observe("x", w.for_play(completion=0.2), TS, cap=10, g=1.0)
    assert deltas and deltas[0].popularity > 0
    deltas = history.observe("x", w.for_rating(1.0), TS, cap=10, g=1.0)
    assert history.recent(10) == []  # affinity clipped at zero: no longer liked
    assert sum(d.popularity for d in deltas) == pytest.approx(-0.2)


def test_user_history_is_capped_and_evicts_the_oldest_with_its_contribution():
    model = CooccurrenceRecommender(history_cap=3)
    learn(model, [("u", f"i{n}", 1.0, TS + n) for n in range(5)])
    assert sorted(model.histories["u"].items) == ["i2", "i3", "i4"]
    # only pairs among the three kept items remain (the evicted ones were subtracted)
    assert model.items.neighbours("i0", fresh=True) == []
    assert {i for i, _ in model.items.neighbours("i4", fresh=True)} == {"i2", "i3"}


def test_recommending_does_not_mutate_inputs_or_state():
    model = learn(CooccurrenceRecommender(), [(f"u{n % 7}", f"i{n % 11}", 1.0, TS + n)
                                              for n in range(200)])
    recent = model.histories["u1"].recent(100)
    recent_copy = copy.deepcopy(recent)
    before = model.items.to_bytes()
    history_before = copy.deepcopy(model.histories["u1"].items)
    model.recommend("u1", 10, fresh=True)
    model.items.score(recent, 10, exclude=["i1"])
    assert recent == recent_copy
    assert model.items.to_bytes() == before
    assert model.histories["u1"].items == history_before


def test_learn_one_does_not_mutate_a_delta_applied_twice_to_two_models():
    delta = Delta("a", ("b", "c"), (1.0, 2.0), 1.0, 1.0)
    first, second = ItemCooccurrence(), ItemCooccurrence()
    first.apply(delta)
    second.apply(delta)
    assert delta == Delta("a", ("b", "c"), (1.0, 2.0), 1.0, 1.0)
    assert first.to_bytes() == second.to_bytes()


events_strategy = st.lists(
    st.tuples(st.sampled_from(["u1", "u2", "u3", "u4"]),
              st.sampled_from([f"i{n}" for n in range(8)]),
              st.sampled_from([1.0, 0.6, -1.0, 0.5, 0.2]),
              st.integers(0, 30).map(lambda d: TS + d * 86_400.0)),
    min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(events=events_strategy, seed=st.integers(0, 10_000))
def test_statistics_do_not_depend_on_the_order_events_arrive_in(events, seed):
    """Plays, ratings and reviews come on different topics: a user's events may arrive in any
    order, and different users' in any interleaving. The statistics must not care."""
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    a = learn(CooccurrenceRecommender(history_cap=100), events)
    b = learn(CooccurrenceRecommender(history_cap=100), shuffled)
    for user in {e[0] for e in events}:
        ra = a.recommend(user, 5, fresh=True)
        rb = b.recommend(user, 5, fresh=True)
        assert [r.item_id for r in ra] == [r.item_id for r in rb]
        assert [r.score for r in ra] == pytest.approx([r.score for r in rb], rel=1e-9, abs=1e-12)


def test_neighbour_lists_are_capped_and_rows_bounded():
    model = CooccurrenceRecommender(neighbour_cap=5, row_cap=20)
    rng = random.Random(1)
    learn(model, [(f"u{rng.randrange(40)}", f"i{rng.randrange(60)}", 1.0, TS + n)
                  for n in range(3000)])
    assert all(len(model.items.neighbours(i, fresh=True)) <= 5 for i in model.items.item_ids())
    assert max(model.items.row_sizes()) <= 20


def test_the_arena_grows_with_the_rows_not_with_the_row_cap():
    """A large ``ROW_CAP`` costs memory only as rows fill: the room a prune needs is made when
    a row is pruned (reserved for every touched row up front, a delta of 100 items with
    ``row_cap=100_000`` grew the arena by ~8.4 M slots, 100 MB, and the ML-100K replay with no
    effective cap took 45 s instead of 2)."""
    model = CooccurrenceRecommender(row_cap=100_000)
    model.learn_many([("ann", f"i{n}", 1.0, TS + n) for n in range(100)])
    store = model.items._rows
    assert model.items.n_entries() == 100 * 99
    assert len(store.cols) <= 1 << 17, len(store.cols)


def test_a_frozen_copy_serialises_the_statistics_of_its_moment():
    """A snapshot is copied under the worker lock and serialised later, while batches go on:
    what it serialises is what `to_bytes` gave when it was taken, whatever was learned since
    (new items, grown and pruned rows, a compaction)."""
    rng = random.Random(5)
    model = learn(CooccurrenceRecommender(history_cap=5, neighbour_cap=5, row_cap=10), [
        (f"u{rng.randrange(20)}", f"i{rng.randrange(30)}", 1.0, TS + n) for n in range(400)])
    frozen, expected = model.items.frozen(), model.items.to_bytes()
    learn(model, [(f"u{rng.randrange(20)}", f"j{rng.randrange(60)}", rng.choice([1.0, -1.0]),
                   TS + 400 + n) for n in range(600)])
    assert model.compact()  # items every history has let go of
    assert model.items.to_bytes() != expected
    assert frozen.to_bytes() == expected


def test_a_batch_allocates_for_its_users_histories_not_for_the_history_cap():
    """``HISTORY_CAP`` bounds a history; a batch's scratch and output arrays are sized from its
    own users' histories (sized for ``history_cap`` per event, a cap of 10**9 asked numpy for
    tens of GB a batch and failed), with the same results as a model with a small cap."""
    events = [(f"u{n % 3}", f"i{n % 7}", 1.0, TS + n) for n in range(40)]
    huge, small = (CooccurrenceRecommender(history_cap=cap) for cap in (10**9, 50))
    huge.learn_many(events)
    small.learn_many(events)
    assert huge.recommend("u0", 5) == small.recommend("u0", 5)
    observer = CooccurrenceRecommender(history_cap=10**9)
    deltas, snapshots = observer.observe_many(events, snapshot=[True] * len(events))
    expected, _ = CooccurrenceRecommender(history_cap=50).observe_many(events)
    assert deltas.end.tolist() == expected.end.tolist()
    assert deltas.other.tolist() == expected.other.tolist()
    assert len(snapshots.size) == len(events)


@pytest.mark.parametrize("seed", [3, 4])
def test_similarity_to_recent_equals_the_matrix_of_each_list(seed):
    """The ranker's two similarity features of many lists in one kernel pass equal row 0 and
    the column means of `ItemCooccurrence.similarity_matrix`, list by list: the first to the
    bit, the means as rows added in order (numpy's ``mean(axis=0)`` adds them in another order:
    within an ulp); unknown items, lists without recent items or candidates included."""
    rng = random.Random(seed)
    model = learn(CooccurrenceRecommender(neighbour_cap=8, row_cap=30),
                  [(f"u{rng.randrange(30)}", f"i{rng.randrange(50)}", rng.choice([1.0, -1.0]),
                    TS + n) for n in range(2000)])
    known = [f"i{k}" for k in range(50)] + ["unknown"]
    recent = [rng.sample(known, rng.choice([0, 1, 3, 10])) for _ in range(40)]
    lists = [rng.sample(known, rng.choice([0, 1, 5, 20])) for _ in range(40)]
    ptr = np.cumsum([0] + [len(c) for c in lists])
    first, mean = model.items.similarity_to_recent(
        recent, ptr, [c for candidates in lists for c in candidates])
    for g, (rows, candidates) in enumerate(zip(recent, lists, strict=True)):
        a, b = ptr[g], ptr[g + 1]
        if rows and candidates:
            near = model.items.similarity_matrix(rows, candidates)
            assert first[a:b].tolist() == near[0].tolist()
            in_order = sum(near[1:], start=near[0].copy()) / len(rows)
            assert mean[a:b].tolist() == in_order.tolist()
            assert mean[a:b] == pytest.approx(near.mean(axis=0), rel=1e-15, abs=0.0)
        else:
            assert not first[a:b].any() and not mean[a:b].any()


def test_snapshot_round_trip_gives_identical_recommendations():
    model = learn(CooccurrenceRecommender(), [(f"u{n % 9}", f"i{(n * 7) % 23}", 1.0, TS + n)
                                              for n in range(500)])
    restored = CooccurrenceRecommender()
    restored.items.load_bytes(model.items.to_bytes())
    for user, history in model.histories.items():
        restored.set_history(user, history)
    for user in model.histories:
        assert model.recommend(user, 10, fresh=True) == restored.recommend(user, 10, fresh=True)


def test_cold_start_gets_trending_and_a_new_item_is_recommendable_once_it_co_occurs():
    model = learn(CooccurrenceRecommender(similar_users=0), [
        ("a", "hit", 1.0, TS), ("b", "hit", 1.0, TS), ("c", "hit", 1.0, TS),
        ("a", "old", 1.0, TS),
    ])
    recs = model.recommend("newcomer", 2)
    assert [(r.item_id, r.source) for r in recs] == [("hit", "trending"), ("old", "trending")]
    assert recs[0].score > recs[1].score > 0
    model.learn_one("b", "brand-new", weight=1.0, ts=TS + 1)
    assert "brand-new" in [r.item_id for r in model.recommend("c", 5, fresh=True)
                           if r.source == "items"]


def test_no_timestamp_makes_the_decay_raise_or_overflow():
    """A far-future ``ts`` once raised in `decay_factor` and stopped every worker (issue
    "Correctness holes", part 1): the weight saturates instead, and learning it stays finite."""
    assert decay_factor(TS + 86_400.0, half_life_s=86_400.0, epoch=TS) == 2.0
    for ts in (0.0, 1.49e10, 2e10, 32_503_680_000.0, 1e300):
        g = decay_factor(ts, half_life_s=180 * 86_400.0, epoch=1e9)
        assert math.isfinite(g) and g > 0.0
    model = CooccurrenceRecommender()
    for user, ts in (("a", 32_503_680_000.0), ("b", 32_503_680_000.0), ("c", 0.0)):
        for item in ("x", "y"):
            model.learn_one(user, item, weight=5.0, ts=ts)
    recs = model.recommend("c", 5, fresh=True)
    assert all(math.isfinite(r.score) for r in recs)
    assert dict(model.items.neighbours("x", fresh=True))["y"] == pytest.approx(1.0)


@given(st.lists(st.one_of(st.floats(-1e12, 1e12), st.floats(TS - 1e9, TS + 1e9),
                          st.sampled_from([0.0, TS, 1e300, -1e300])), max_size=50))
def test_decay_factors_of_many_times_equal_decay_factor_of_each(times):
    """The batch path (numpy) and the scalar oracle's path give bit-equal weights."""
    want = [decay_factor(t, half_life_s=180 * 86_400.0, epoch=TS) for t in times]
    got = decay_factors(np.array(times), half_life_s=180 * 86_400.0, epoch=TS).tolist()
    assert got == want


@given(st.lists(st.tuples(st.one_of(st.sampled_from([0.0, -0.0, 0.5, 1.0, -1.0]),
                                    st.floats(-1e6, 1e6)),
                          st.integers(0, 20)), max_size=60),
       st.integers(1, 70))
@settings(deadline=None)  # the first call compiles the kernel
def test_top_orders_by_value_then_key_then_place(rows, n):
    """`models.kernels._top` (a partition, one unstable sort, ties fixed up) picks what a
    stable sort by (value descending, key ascending) of ``idx`` picks; -0.0 equals 0.0."""
    values = np.array([v for v, _ in rows])
    keys = np.array([k for _, k in rows], dtype=np.int64)
    idx = np.arange(len(rows))[::-1].copy()  # a place in idx other than the index order
    want = sorted(idx.tolist(), key=lambda i: (-values[i], keys[i]))[:n]
    assert _top(values, keys, idx, n).tolist() == want


@given(st.lists(st.tuples(st.one_of(st.sampled_from([0.0, -0.0, 0.5, 1.0, -1.0]),
                                    st.floats(-1e6, 1e6)),
                          st.integers(-10**18, 10**18)),
                max_size=60, unique_by=lambda row: row[1]),
       st.integers(1, 70))
@settings(deadline=None)
def test_a_prune_keeps_the_set_that_top_picks(rows, n):
    """`models.kernels._kept` (what a prune keeps, in no order) is the set of `_top`'s picks:
    the first ``n`` by value descending, ties by (distinct) key."""
    values = np.array([v for v, _ in rows])
    keys = np.array([k for _, k in rows], dtype=np.int64)
    idx = np.arange(len(rows))
    kept = _kept(values, keys, n).tolist()
    assert len(kept) == len(set(kept)) == min(n, len(rows))
    assert set(kept) == set(_top(values, keys, idx, n).tolist())


def test_the_arena_grown_outside_the_kernels_keeps_every_row_and_learns_on():
    """`models.stores.RowStore.reserve` (numpy's allocation, for huge pages) copies the slabs
    in use; learning goes on in the larger arena as it would have in the old one."""
    rng = random.Random(7)
    events = [(f"u{rng.randrange(40)}", f"i{rng.randrange(60)}", 1.0, TS + e)
              for e in range(3000)]
    grown, plain = CooccurrenceRecommender(row_cap=20, neighbour_cap=10), \
        CooccurrenceRecommender(row_cap=20, neighbour_cap=10)
    grown.learn_many(events[:1500])
    plain.learn_many(events[:1500])
    store = grown.items._rows
    before = [store.row(i) for i in range(store.n_rows)]
    size = len(store.cols)
    store.reserve(3 * size)
    assert len(store.cols) >= int(store.top[0]) + 3 * size
    for (cols, counts), i in zip(before, range(store.n_rows), strict=True):
        got_cols, got_counts = store.row(i)
        assert got_cols.tolist() == cols.tolist() and got_counts.tolist() == counts.tolist()
    grown.learn_many(events[1500:])
    plain.learn_many(events[1500:])
    users = sorted({u for u, *_ in events})
    assert grown.recommend_many(users, 10, explain=True) == plain.recommend_many(
        users, 10, explain=True)


def test_newer_co_occurrence_counts_more_with_time_decay():
    model = learn(CooccurrenceRecommender(half_life_days=1.0), [
        ("u1", "seed", 1.0, TS), ("u1", "old-friend", 1.0, TS),
        ("u2", "seed", 1.0, TS + 10 * 86_400.0), ("u2", "new-friend", 1.0, TS + 10 * 86_400.0),
    ])
    neighbours = dict(model.items.neighbours("seed", fresh=True))
    assert neighbours["new-friend"] > 30 * neighbours["old-friend"]  # 2^10 weight, cosine-damped


@settings(max_examples=60, deadline=None)
@given(events=events_strategy, cap=st.integers(1, 6), items_cap=st.integers(1, 4))
def test_the_latest_liked_items_follow_the_history(events, cap, items_cap):
    histories: dict[str, UserHistory] = {}
    for user, item, weight, ts in events:
        history = histories.setdefault(user, UserHistory())
        history.observe(item, weight, ts, cap=cap, g=1.0, user_id=user,
                        user_items_cap=items_cap)
        liked = sorted(((t, j) for j, (s, t, _) in history.items.items() if s > 0), reverse=True)
        assert history._latest == tuple((j, t) for t, j in liked[:items_cap])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.sampled_from("abcdefgh"),
                          st.sampled_from([-1.0, 0.5, 1.0, 2.0]),
                          st.integers(0, 5).map(lambda d: TS + d * 86_400.0)),
                max_size=60),
       st.integers(1, 7))
def test_observed_deltas_committed_per_batch_equal_learning(events, batch):
    """What a stream worker does — load the batch's users into a model over shared statistics,
    observe the batch, apply the packed deltas, keep the histories — equals `learn_many`, to
    the bit: the same deltas in the same order; and each snapshot is the history just before
    its event, as of its time (`UserHistory.before`)."""
    params = {"history_cap": 4, "row_cap": 6, "neighbour_cap": 3}
    whole = CooccurrenceRecommender(**params)
    whole.learn_many(events)
    shared = CooccurrenceRecommender(**params)
    stored: dict[str, tuple] = {}
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        model = CooccurrenceRecommender.sharing(shared.items, **params)
        for user in sorted({e[0] for e in chunk} & stored.keys()):
            model.load_history(user, *stored[user])
        before = {u: dict(model.histories[u].items) if u in model.histories else {}
                  for u in {e[0] for e in chunk}}
        flags = [n % 2 == 0 for n in range(len(chunk))]
        deltas, snaps = model.observe_many(chunk, flags)
        shared.items.apply_packed(deltas)
        k = 0
        for n, (user, item, weight, ts) in enumerate(chunk):
            if flags[n]:
                a, size = int(snaps.start[k]), int(snaps.size[k])
                got = {model.items._ids[j]: (s, t) for j, s, t in zip(
                    snaps.item[a:a + size].tolist(), snaps.s[a:a + size].tolist(),
                    snaps.t[a:a + size].tolist(), strict=True)}
                want = UserHistory({j: list(v) for j, v in before[user].items()}).before(ts)
                assert got == {j: (v[0], v[1]) for j, v in want.items.items()}
                k += 1
            UserHistory.observe(h := UserHistory({j: list(v) for j, v in before[user].items()}),
                                item, weight, ts, cap=4, g=decay_factor(
                                    ts, half_life_s=180 * 86_400.0, epoch=1e9))
            before[user] = h.items
        for user in {e[0] for e in chunk}:
            stored[user] = model.history_arrays(user)
    for item in "abcdefgh":
        assert shared.items.row(item) == whole.items.row(item)
        assert shared.items.statistics(item) == whole.items.statistics(item)
    assert shared.items._user_items == whole.items._user_items


# --- forgetting items (issue 19) ----------------------------------------------------------------
def _churning(seed: int, n: int = 3000) -> list[tuple[str, str, float, float]]:
    """Events whose users dislike some items and push old ones out of short histories: many
    items end with nothing left of them."""
    rng = random.Random(seed)
    return [(f"u{rng.randrange(60)}", f"i{rng.randrange(400)}",
             rng.choice([1.0, 1.0, 0.5, -1.0]), TS + k * 1000.0) for k in range(n)]


def _lists(model: CooccurrenceRecommender, users: list[str]) -> dict:
    return {u: [(r.item_id, round(r.score, 9), r.because, r.source) for r in recs]
            for u, recs in model.recommend_many(users, 10, fresh=True).items()}


@pytest.mark.parametrize("seed", [1, 2])
def test_compacting_empty_items_changes_no_recommendation_now_or_later(seed):
    events = _churning(seed)
    kept, compacted = CooccurrenceRecommender(history_cap=20), CooccurrenceRecommender(
        history_cap=20)
    kept.learn_many(events)
    compacted.learn_many(events)
    empty = compacted.items.n_items - compacted.items.n_live
    dropped = compacted.compact()
    assert empty > 0 and 0 < len(dropped) <= empty
    assert compacted.items.n_items == kept.items.n_items - len(dropped)
    assert all(kept.items.statistics(i) == (0.0, 0.0, 0.0) for i in dropped)
    users = [f"u{k}" for k in range(60)]
    assert _lists(compacted, users) == _lists(kept, users)
    later = _churning(seed + 10, 500)
    kept.learn_many(later)
    compacted.learn_many(later)
    assert _lists(compacted, users) == _lists(kept, users)


def test_the_cap_evicts_the_coldest_and_the_rest_equals_a_model_that_never_saw_them():
    # cold items: one old like each, by users of their own; hot items: liked later by others
    cold = [(f"c{k}", f"cold{k}", 1.0, TS) for k in range(30)]
    rng = random.Random(3)
    hot = [(f"h{rng.randrange(40)}", f"hot{rng.randrange(20)}", 1.0, TS + 86_400.0 * (1 + k))
           for k in range(600)]
    capped = CooccurrenceRecommender(max_items=23)  # evicts down to 20 live items
    capped.learn_many(cold)
    capped.learn_many(hot)
    reference = CooccurrenceRecommender()
    reference.learn_many(hot)
    items = capped.items
    assert sorted(items.live_ids()) == sorted(f"hot{k}" for k in range(20))
    for k in range(30):
        assert items.statistics(f"cold{k}") == (0.0, 0.0, 0.0)
        assert items.row(f"cold{k}") == {} and items.neighbours(f"cold{k}") == []
    for k in range(20):
        item = f"hot{k}"
        assert items.statistics(item) == reference.items.statistics(item)
        assert items.row(item) == reference.items.row(item)
    users = [f"h{k}" for k in range(40)]
    assert _lists(capped, users) == _lists(reference, users)
    assert items.trending(100) == reference.items.trending(100)


def test_an_evicted_item_comes_back_from_zero_and_statistics_never_go_negative():
    model = CooccurrenceRecommender(max_items=5)  # 6 live items: down to 4
    model.learn_many([("old", "gone", 1.0, TS)] + [
        (f"u{k}", f"item{k % 5}", 1.0, TS + 10.0 * k) for k in range(20)])
    assert model.items.n_live == 4
    assert model.items.statistics("gone") == (0.0, 0.0, 0.0)
    # the old liker's dislike would take its like back: floored at zero, not negative
    model.learn_many([("old", "gone", -2.0, TS + 200.0)])
    assert model.items.statistics("gone") == (0.0, 0.0, 0.0)
    model.learn_many([("new", "gone", 1.0, TS + 300.0)])  # 5 live items: under the cap
    norm, popularity, mass = model.items.statistics("gone")
    assert norm == popularity == pytest.approx(1.0, rel=1e-4) and mass == 1.0  # g(t) ~ 1


def test_followers_of_one_stream_evict_alike_from_a_snapshot_or_from_the_start():
    source = CooccurrenceRecommender(history_cap=10)
    rng = random.Random(5)
    entries = []
    for batch in range(40):
        events = [(f"u{rng.randrange(30)}", f"i{batch * 5 + rng.randrange(8)}", 1.0,
                   TS + batch * 100.0 + k) for k in range(25)]
        deltas, _ = source.observe_many(events)
        entries.append(deltas)
    def follower() -> ItemCooccurrence:
        return ItemCooccurrence(max_items=50)
    # every follower interns ids its own way: deltas travel by item id, as the stream's do
    wire = [encode_entry(d, source.items.names) for d in entries]
    whole, late = follower(), follower()
    for k, entry in enumerate(wire):
        whole.apply_packed(decode_entry(entry, whole))
        if k == 19:
            late.load_bytes(whole.to_bytes())
        elif k > 19:
            late.apply_packed(decode_entry(entry, late))
    assert whole.n_live <= 50 < whole.n_items
    assert whole.to_bytes() == late.to_bytes()


def test_a_history_of_dislikes_alone_is_kept_whole_by_statistics_that_never_saw_its_items():
    items = ItemCooccurrence(max_items=10)  # nothing interned: a dislike makes no delta
    s = np.array([-1.0, 0.0])
    assert items.held(["a", "b"], s).tolist() == [True, True]
    assert items.held(["a", "b"], np.array([1.0, -1.0])).tolist() == [False, True]


def test_users_whose_latest_like_is_oldest_leave_the_similar_user_index_past_its_cap():
    model = CooccurrenceRecommender(max_users=4)  # 5 users: down to 3
    model.learn_many([(f"u{k}", "shared", 1.0, TS + 10.0 * k) for k in range(5)]
                     + [("u0", "own", 1.0, TS + 100.0)])  # u0's latest like is now the newest
    items = model.items
    assert sorted(items._user_items) == ["u0", "u3", "u4"]
    assert set(items._likers["shared"]) == {"u0", "u3", "u4"}
    assert items.n_unindexed_users == 2
    items.compact()  # forgets the users who left: their interned ids go
    assert items.n_unindexed_users == 0 and sorted(items._uids) == ["u0", "u3", "u4"]
    # a like brings a user back, with their latest liked items
    model.learn_many([("u1", "again", 1.0, TS + 200.0)])
    assert set(items._user_items["u1"]) == {"shared", "again"}
