"""The ranker's pure parts: featurisation, fine-tuning, the publishing guard, artefacts."""

from __future__ import annotations

import functools
import json
import random

import numpy as np
import pytest
import torch

from models.cooccurrence import CooccurrenceRecommender
from models.ranker import (
    FEATURES,
    ArtefactError,
    Groups,
    RankerMLP,
    evaluate,
    fine_tune,
    from_artefact,
    not_worse,
    to_artefact,
    toy_groups,
)
from streams.runtime.trainer import Example, parse_example, train_step
from streams.settings import load_settings
from streams.tools.reference import StreamReplica

PLAYS = [(f"u{u}", f"i{(u * 7 + k * 3) % 40}", 1e9 + 3600 * (u * 10 + k))
         for u in range(30) for k in range(8)]
GENRES = {f"i{n}": ("Drama",) if n % 3 else ("Comedy", "Romance") for n in range(40)}


def _replica(plays, **overrides) -> StreamReplica:
    replica = StreamReplica(load_settings(**overrides))
    replica.ranking.learn_catalogue(GENRES)
    for user, item, ts in plays:
        replica.learn("play", {"user_id": user, "item_id": item, "ts": ts})
    return replica


def _features(replica: StreamReplica, user: str) -> tuple[list[str], np.ndarray]:
    items, history = replica.model.items, replica.model.histories[user]
    candidates = replica.ranking.candidates(items, user, history, 100)
    return ([c.item_id for c in candidates],
            replica.ranking.features(items, history, candidates))


def test_featurisation_is_deterministic_and_independent_of_user_arrival_order():
    first = _replica(PLAYS)
    shuffled = PLAYS.copy()
    random.Random(3).shuffle(shuffled)  # users interleaved differently; each user's own order
    shuffled.sort(key=lambda p: (p[0], p[2]))  # kept (their events are on one partition)
    second = _replica(shuffled)
    for user in ("u0", "u7", "u29"):
        ids_a, x_a = _features(first, user)
        ids_b, x_b = _features(second, user)
        ids_again, x_again = _features(first, user)
        assert ids_a == ids_again and np.array_equal(x_a, x_again)
        assert ids_a == ids_b and np.array_equal(x_a, x_b)
        assert x_a.shape == (len(ids_a), len(FEATURES)) and x_a.dtype == np.float32
        assert np.isfinite(x_a).all()
        rank = x_a[:, FEATURES.index("rank")]
        assert (np.diff(rank) < 0).all()  # the co-occurrence order
        assert set(np.unique(x_a[:, FEATURES.index("genre_match")])) - {0.0}  # genres used


def _examples(groups: Groups) -> list[Example]:
    """Toy groups as logged examples: candidate ``c`` is item ``i{c}``; 20 users who liked
    nothing (so the trainer's factors give them no ``factor_score``)."""
    width = groups.x.shape[1]
    return [Example(f"u{g % 20}", groups.x[g], int(groups.positive[g]), float(groups.ts[g]),
                    tuple(f"i{c}" for c in range(width)), ()) for g in range(len(groups))]


def test_fine_tune_on_a_learnable_toy_set_lowers_held_out_loss_and_beats_the_baseline_order():
    train, holdout = toy_groups(n_groups=400, seed=2).split(0.25)
    model = RankerMLP()
    model.fit_scaler(train)
    before = evaluate(model, holdout)
    assert before["ndcg@10"] == pytest.approx(evaluate(None, holdout)["ndcg@10"])  # starts equal
    report = fine_tune(model, train, epochs=15, seed=2, device="cpu")
    after = evaluate(model, holdout)
    assert after["loss"] < before["loss"]
    assert after["ndcg@10"] > before["ndcg@10"] + 0.05
    assert report.device == "cpu" and report.examples == 15 * len(train)


def test_the_guard_refuses_a_fine_tune_that_is_worse_on_the_held_out_slice():
    current = _trained()
    # the older 80% (what the step trains on) have random choices: fine-tuning on noise
    noisy = toy_groups(n_groups=500, seed=5)
    positive = noisy.positive.copy()
    positive[:400] = np.random.default_rng(6).integers(0, noisy.x.shape[1], 400)
    groups = Groups(noisy.x, noisy.mask, positive, noisy.ts)
    settings = load_settings(trainer_epochs=15, trainer_lr=0.01, trainer_device="cpu")
    result = train_step(current, _examples(groups), settings)
    assert result.candidate["ndcg@10"] < result.current["ndcg@10"]
    assert not result.published
    assert not not_worse(result.candidate, result.current)
    assert not_worse(result.current, result.current)  # equal is not worse


def test_a_first_model_is_judged_against_the_cooccurrence_order():
    groups = toy_groups(n_groups=400, seed=8)
    result = train_step(None, _examples(groups),
                        load_settings(trainer_epochs=15, trainer_device="cpu"))
    baseline = evaluate(None, groups.split(0.2)[1])
    assert result.current["ndcg@10"] == pytest.approx(baseline["ndcg@10"])
    assert result.published and result.candidate["ndcg@10"] > result.current["ndcg@10"]


@functools.cache
def _trained() -> RankerMLP:
    """A model that learned the toy set (callers must not change it)."""
    model = RankerMLP()
    groups = toy_groups(n_groups=400, seed=1)
    model.fit_scaler(groups)
    fine_tune(model, groups, epochs=15, seed=1, device="cpu")
    return model


def test_an_artefact_round_trips_to_the_same_scores():
    model = _trained()
    data = to_artefact(model, version=3, metrics={"ndcg@10": 0.5})
    loaded, metadata = from_artefact(data, max_bytes=1 << 20)
    x = toy_groups(n_groups=5, seed=9).x.reshape(-1, len(FEATURES))
    assert np.array_equal(model.score(x), loaded.score(x))
    assert metadata["version"] == "3" and json.loads(metadata["metrics"]) == {"ndcg@10": 0.5}


def _with_metadata(data: bytes, **changes: str) -> bytes:
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header["__metadata__"].update(changes)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + data[8 + size:]


def _nan_weights() -> bytes:
    model = RankerMLP()
    with torch.no_grad():
        model.net[0].weight[0, 0] = float("nan")
    return to_artefact(model, version=1, metrics={})


def _other_shape() -> bytes:
    return to_artefact(RankerMLP(hidden=(8,)), version=1, metrics={})


@pytest.mark.parametrize(("make", "reason"), [
    (lambda good: b"", "readable"),
    (lambda good: b"\x00" * 64, "readable"),
    (lambda good: good[: len(good) // 2], "readable"),
    (lambda good: bytes(random.Random(1).randbytes(len(good))), "readable"),
    (lambda good: _with_metadata(good, features="a,b,c"), "incompatible features"),
    (lambda good: _with_metadata(good, feature_version="0"), "incompatible features"),
    (lambda good: _with_metadata(good, format="pickle"), "not a tastemaker ranker"),
    (lambda good: _with_metadata(good, hidden="8"), "tensor"),
    (lambda good: _with_metadata(good, hidden="-1"), "hidden"),
    (lambda good: _nan_weights(), "NaN"),
    (lambda good: good + b"\x00" * (1 << 20), "limit"),
], ids=["empty", "zeros", "truncated", "random", "features", "feature-version", "format",
        "hidden-mismatch", "hidden-invalid", "nan", "oversize"])
def test_a_corrupt_or_incompatible_artefact_is_refused(make, reason):
    good = to_artefact(_trained(), version=1, metrics={})
    assert from_artefact(good, max_bytes=1 << 20)  # the good one loads
    with pytest.raises(ArtefactError, match=reason):
        from_artefact(make(good), max_bytes=1 << 20)


def test_a_model_with_other_hidden_sizes_is_refused_by_its_tensors():
    with pytest.raises(ArtefactError, match="tensor"):
        from_artefact(_with_metadata(_other_shape(), hidden="32,16"), max_bytes=1 << 20)


def test_the_worker_example_record_parses_and_malformed_ones_are_refused():
    replica = _replica(PLAYS, ranker_example_rate=1.0)
    history = replica.model.histories["u3"]
    ids, _ = _features(replica, "u3")
    example = replica.ranking.example(replica.model.items, "u3", history, item_id=ids[2],
                                      ts=2e9)
    raw = replica.ranking.encode_example(example)
    example_id, parsed = parse_example(raw)
    assert (parsed.features == example["features"]).all()  # float32 written exactly
    example["features"] = example["features"].tolist()
    assert (example_id, parsed.positive, parsed.ts) == (f"u3|{ids[2]}|2000000000.0", 2, 2e9)
    assert parsed.features.shape == (len(ids), len(FEATURES))
    assert parsed.user_id == "u3" and list(parsed.items) == ids
    assert set(parsed.liked) == {i for i, (s, _, _) in history.items.items() if s > 0}
    assert not parsed.features[:, FEATURES.index("factor_score")].any()  # the trainer's column
    for bad in (b"", b"{}", b"[1]", json.dumps({**example, "positive": 999}).encode(),
                json.dumps({**example, "feature_version": "0"}).encode(),
                json.dumps({**example, "features": [[1.0, 2.0]]}).encode(),
                json.dumps({**example, "items": ids[:-1]}).encode(),
                json.dumps({**example, "liked": [1, 2]}).encode(),
                json.dumps({k: v for k, v in example.items() if k != "liked"}).encode()):
        with pytest.raises(ValueError):
            parse_example(bad)


def test_ranking_without_a_model_is_the_cooccurrence_order_and_with_one_a_reordering():
    replica = _replica(PLAYS, diversity=0.0)  # the controls re-rank after: tests/unit/test_rerank
    items, history = replica.model.items, replica.model.histories["u5"]
    plain = replica.ranking.recommend(items, "u5", history)
    assert plain == items.score(history.recent(500), 50, exclude=history.items.keys(),
                                recency_half_life=200.0, user_id="u5", similar_users=30)
    replica.ranking.model = _trained()
    ranked = replica.ranking.recommend(items, "u5", history)
    candidates = replica.ranking.candidates(items, "u5", history, 100)
    assert {r.item_id for r in ranked} <= {c.item_id for c in candidates}
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)


def test_a_batch_logs_the_examples_the_events_would_log_one_by_one():
    """The worker draws a batch's training examples from snapshots of the histories just before
    each sampled event, scored in one pass (`Ranking.examples`); they equal `Ranking.example`
    called before each event is observed, one event at a time (the item statistics, in both, as
    they were before the batch: a worker applies a batch's deltas after it commits)."""
    from models.cooccurrence import UserHistory
    from streams.runtime.learning import CooccurrenceConfig

    settings = load_settings(ranker_example_rate=1.0)
    warm, batch = PLAYS[:160], PLAYS[160:]
    replica = _replica(warm, ranker_example_rate=1.0)
    items = replica.model.items

    def batch_model() -> CooccurrenceRecommender:
        model = CooccurrenceConfig.of(settings).sharing(items)
        for user in {u for u, _, _ in batch}:
            if user in replica.model.histories:
                model.set_history(user, replica.model.histories[user])
        return model

    one_by_one, want = batch_model(), []
    for user, item, ts in batch:
        history = one_by_one.histories.get(user, UserHistory())  # a new user's: empty
        example = replica.ranking.example(items, user, history, item_id=item, ts=ts)
        if example is not None:
            want.append(example)
        one_by_one.observe_many([(user, item, 1.0, ts)])
    model = batch_model()
    _, snapshots = model.observe_many([(u, i, 1.0, ts) for u, i, ts in batch],
                                      [True] * len(batch))
    got = replica.ranking.examples(model, snapshots, batch)
    encode = replica.ranking.encode_example
    assert len(want) > 20 and [encode(e) for e in got] == [encode(e) for e in want]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batchs_examples_do_not_depend_on_the_order_its_topics_arrived_in(seed):
    """A play, its rating and its review share a time and come on three unordered topics; a
    user may choose several items in the same second. Whatever order they arrive in, each
    choice gives the same example (the snapshot holds only entries older than the event), and
    a rating that arrives first (weight 0 here) does not hide its play's item from the list."""
    from streams.runtime.learning import CooccurrenceConfig

    settings = load_settings(ranker_example_rate=1.0)
    replica = _replica(PLAYS[:160], ranker_example_rate=1.0)
    items = replica.model.items
    events = []  # (user, item, weight, ts): play 1.0, rating 0.0, review 0.6 of one choice
    for u in range(20, 30):
        ts = 3e9 + u
        for item in (f"i{(u * 5) % 40}", f"i{(u * 5 + 11) % 40}"):  # two choices, one second
            events += [(f"u{u}", item, 1.0, ts), (f"u{u}", item, 0.0, ts),
                       (f"u{u}", item, 0.6, ts)]

    def logged(order):
        model = CooccurrenceConfig.of(settings).sharing(items)
        for user in {e[0] for e in order}:
            if user in replica.model.histories:
                model.set_history(user, replica.model.histories[user])
        positive = [e for e in order if e[2] > 0]
        _, snapshots = model.observe_many(order, [e[2] > 0 for e in order])
        got = replica.ranking.examples(model, snapshots, [(u, i, ts) for u, i, _, ts in positive])
        encode = replica.ranking.encode_example
        return {e["id"]: encode(e) for e in got}

    in_order = logged(events)
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    ratings_first = sorted(events, key=lambda e: e[2] != 0.0)  # stable: each rating first
    assert len(in_order) >= 10
    assert logged(shuffled) == in_order and logged(ratings_first) == in_order
