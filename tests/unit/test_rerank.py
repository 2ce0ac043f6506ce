"""models.rerank through the worker's Ranking: each control moves lists the expected way on a
seeded sample, and the lists stay deterministic."""

from __future__ import annotations

import random

import numpy as np
import pytest

from models.cooccurrence import CooccurrenceRecommender, Recommendation
from models.rerank import rerank
from streams.runtime.learning import reference_recommender
from streams.runtime.ranking import Ranking
from streams.settings import load_settings

N_USERS, N_ITEMS, PLAYS = 120, 160, 20
K = 10


def sample(seed: int = 3) -> list[tuple[str, str, float]]:
    """Plays with Zipf-like item popularity and two taste clusters (even and odd items)."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) for rank in range(N_ITEMS)]
    events = []
    for u in range(N_USERS):
        parity = u % 2
        pool = [i for i in range(N_ITEMS) if i % 2 == parity or rng.random() < 0.2]
        chosen = set()
        while len(chosen) < PLAYS:
            chosen.add(rng.choices(pool, weights=[weights[i] for i in pool])[0])
        for n, item in enumerate(sorted(chosen, key=lambda _: rng.random())):
            events.append((f"u{u}", f"i{item}", 1e9 + 3600.0 * (u + N_USERS * n)))
    return sorted(events, key=lambda e: (e[2], e[0]))


EVENTS = sample()


def learned(events=EVENTS) -> CooccurrenceRecommender:
    model = reference_recommender(load_settings())
    for user, item, ts in events:
        model.learn_one(user, item, weight=1.0, ts=ts)
    model.items.refresh()
    return model


@pytest.fixture(scope="module")
def model() -> CooccurrenceRecommender:
    return learned()


@pytest.fixture(scope="module")
def again() -> CooccurrenceRecommender:
    """The same events learned by another model, users interleaved another way (what scale-out
    does: each user's events in order, item statistics summed in another order)."""
    return learned(sorted(EVENTS, key=lambda e: (e[0], e[2])))


def lists(model: CooccurrenceRecommender, **controls: float) -> dict[str, list[str]]:
    """Every user's top K with ``controls`` (the others off, whatever the defaults)."""
    ranking = Ranking(load_settings(**({"popularity_penalty": 0.0, "diversity": 0.0} | controls)))
    return {user: [r.item_id for r in ranking.top(model.items, user, history, K)]
            for user, history in sorted(model.histories.items())}


def mean_log_popularity(model: CooccurrenceRecommender, shown: dict[str, list[str]]) -> float:
    items = [i for top in shown.values() for i in top]
    return float(np.mean(np.log(model.items.item_stats(items)[:, 0])))


def coverage(shown: dict[str, list[str]]) -> int:
    return len({i for top in shown.values() for i in top})


def mean_similarity(model: CooccurrenceRecommender, shown: dict[str, list[str]]) -> float:
    per_list = []
    for top in shown.values():
        sims = [model.items.similarities_to(a, [b])[0] for n, a in enumerate(top)
                for b in top[n + 1:]]
        per_list.append(np.mean(sims))
    return float(np.mean(per_list))


def test_controls_off_serve_the_cooccurrence_order(model):
    shown = lists(model)
    for user in list(shown)[:20]:
        want = model.recommend(user, K, explain=False)
        assert shown[user] == [r.item_id for r in want]


def test_the_popularity_penalty_shows_less_popular_items_and_more_of_the_catalogue(model):
    base = lists(model)
    previous = mean_log_popularity(model, base)
    for beta in (0.25, 0.5, 1.0, 2.0):
        pop = mean_log_popularity(model, lists(model, popularity_penalty=beta))
        assert pop < previous, beta
        previous = pop
    # moderate penalties widen what is shown; a very strong one shows everyone the same few
    # least popular candidates again (why the default is moderate)
    assert coverage(base) < coverage(lists(model, popularity_penalty=0.25)) < coverage(
        lists(model, popularity_penalty=0.5))


def test_diversity_makes_lists_less_alike_inside(model):
    base = mean_similarity(model, lists(model))
    mild = mean_similarity(model, lists(model, diversity=0.3))
    strong = mean_similarity(model, lists(model, diversity=0.7))
    assert strong < mild < base


def test_controlled_lists_come_from_the_candidate_pool(model):
    settings = load_settings(popularity_penalty=1.0, diversity=0.5, rerank_pool=30)
    ranking = Ranking(settings)
    for user, history in list(sorted(model.histories.items()))[:20]:
        pool = {c.item_id for c in ranking.candidates(model.items, user, history, 30)}
        top = ranking.top(model.items, user, history, K)
        assert len(top) == K and len({r.item_id for r in top}) == K
        assert {r.item_id for r in top} <= pool
        assert not {r.item_id for r in top} & history.items.keys()


@pytest.mark.parametrize("controls", [{"popularity_penalty": 0.7},
                                      {"diversity": 0.4},
                                      {"popularity_penalty": 0.7, "diversity": 0.4}])
def test_controlled_lists_are_deterministic(model, again, controls):
    assert lists(model, **controls) == lists(model, **controls) == lists(again, **controls)


def test_rerank_refuses_bad_strengths_and_keeps_scores():
    recs = [Recommendation(f"i{n}", 1.0 / (n + 1), (), "items") for n in range(5)]
    pop = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    with pytest.raises(ValueError):
        rerank(recs, 3, popularity=pop, similarity=lambda i, o: np.zeros(len(o)), beta=-1)
    with pytest.raises(ValueError):
        rerank(recs, 3, popularity=pop, similarity=lambda i, o: np.zeros(len(o)), lam=1.5)
    for controls in ({"beta": 3.0}, {"lam": 0.5}, {"beta": 0.5, "lam": 0.3}):
        out = rerank(recs, 5, popularity=pop, similarity=lambda i, o: np.ones(len(o)), **controls)
        assert sorted(r.item_id for r in out) == sorted(r.item_id for r in recs)
        # scores follow the served order, so a sorted set keyed by them keeps it
        assert [r.score for r in out] == sorted((r.score for r in out), reverse=True)
        assert all(r.because == () and r.source == "items" for r in out)


def test_served_scores_keep_the_controlled_order_on_the_sample(model):
    ranking = Ranking(load_settings(popularity_penalty=0.5, diversity=0.4))
    for user, history in list(sorted(model.histories.items()))[:30]:
        scores = [r.score for r in ranking.top(model.items, user, history, 50)]
        assert scores == sorted(scores, reverse=True)
