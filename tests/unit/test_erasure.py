"""Erasing a user removes exactly their contribution to the item statistics (pure model)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.cooccurrence import CooccurrenceRecommender, ItemCooccurrence

TOLERANCE = 1e-9


def statistics(items: ItemCooccurrence) -> dict[str, tuple[float, float, dict[str, float]]]:
    """Item id -> (norm, popularity, co-occurrence row by item id)."""
    return {item: (*items.statistics(item)[:2], items.row(item)) for item in items.item_ids()}


def assert_same_statistics(got: ItemCooccurrence, want: ItemCooccurrence) -> None:
    """Equal up to float rounding; an item or entry missing on one side must be zero."""
    a, b = statistics(got), statistics(want)
    scale = max([1.0] + [abs(x) for n, p, row in b.values() for x in (n, p, *row.values())])

    def close(x: float, y: float) -> bool:
        return abs(x - y) <= TOLERANCE * scale

    for item in a.keys() | b.keys():
        n1, p1, r1 = a.get(item, (0.0, 0.0, {}))
        n2, p2, r2 = b.get(item, (0.0, 0.0, {}))
        assert close(n1, n2), (item, "norm", n1, n2)
        assert close(p1, p2), (item, "popularity", p1, p2)
        for other in r1.keys() | r2.keys():
            assert close(r1.get(other, 0.0), r2.get(other, 0.0)), (item, other)
    assert got._user_items == want._user_items


def random_events(seed: int, n: int, users: int, items: int) -> list[tuple[str, str, float, float]]:
    rng = random.Random(seed)
    events = []
    for k in range(n):
        weight = rng.choice([1.0, 0.6, 0.2, -0.5, -1.0])  # dislikes cancel likes too
        events.append((f"u{rng.randrange(users)}", f"i{rng.randrange(items)}", weight,
                       1e9 + rng.uniform(0, 400) * 86_400 + k))
    return events


def model() -> CooccurrenceRecommender:
    # a small history cap: the erased user's evictions are part of what must cancel
    return CooccurrenceRecommender(history_cap=8, row_cap=10_000, neighbour_cap=50,
                                   similar_users=5, user_items_cap=4)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_forgetting_a_user_equals_never_having_seen_them(seed: int) -> None:
    events = random_events(seed, 1500, users=12, items=40)
    erased = "u3"
    seen, never = model(), model()
    for user, item, weight, ts in events:
        seen.learn_one(user, item, weight=weight, ts=ts)
        if user != erased:
            never.learn_one(user, item, weight=weight, ts=ts)
    assert seen.histories[erased].items, "the erased user must have had a history"

    seen.forget(erased)
    assert erased not in seen.histories

    assert_same_statistics(seen.items, never.items)
    for user in sorted(never.histories):
        got = seen.recommend(user, 10, fresh=True)
        want = never.recommend(user, 10, fresh=True)
        assert [(r.item_id, r.because, r.source) for r in got] == [
            (r.item_id, r.because, r.source) for r in want], user
        assert [r.score for r in got] == pytest.approx([r.score for r in want], rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from("vwxyz"),
                                 st.sampled_from([1.0, 0.5, -1.0]),
                                 st.floats(1e9, 1e9 + 3e7)), max_size=40),
       erased=st.sampled_from(["a", "b", "c"]))
def test_forgetting_cancels_any_history(events, erased) -> None:
    seen, never = model(), model()
    for user, item, weight, ts in events:
        seen.learn_one(user, item, weight=weight, ts=ts)
        if user != erased:
            never.learn_one(user, item, weight=weight, ts=ts)
    history = seen.histories.get(erased)
    if history is not None:  # as a worker erases: the deltas of the stored history
        for delta in history.forget(user_id=erased):
            seen.items.apply(delta)
        assert history.items == {}
    assert_same_statistics(seen.items, never.items)
