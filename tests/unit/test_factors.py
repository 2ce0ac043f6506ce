"""Item factors (`models.factors`) and the ranker's ``factor_score`` from the trainer to the
artefact to the worker."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load, save

from models.factors import ItemFactors, factor_scores
from models.ranker import (
    FACTOR,
    FEATURES,
    ArtefactError,
    RankerMLP,
    from_artefact,
    to_artefact,
)
from streams.runtime.trainer import Example, train_step
from streams.settings import load_settings

RANK = FEATURES.index("rank")


def _communities(n_users: int = 60, seed: int = 0) -> dict[str, list[str]]:
    """Users who each like six items of one of two communities, A and B."""
    rng = random.Random(seed)
    return {f"u{u}": rng.sample([f"{'AB'[u % 2]}{k}" for k in range(20)], 6)
            for u in range(n_users)}


def test_factors_separate_two_communities():
    factors = ItemFactors.fit(_communities(), factors=4, seed=1)
    users = factors.fold_in([["A0", "A1"], ["B0", "B1"]])
    a = factors.vectors[[factors.index[f"A{k}"] for k in range(2, 20)]] @ users.T
    b = factors.vectors[[factors.index[f"B{k}"] for k in range(2, 20)]] @ users.T
    assert a[:, 0].mean() > b[:, 0].mean() + 0.2 and b[:, 1].mean() > a[:, 1].mean() + 0.2
    assert np.median(a[:, 0]) > np.percentile(b[:, 0], 90)


def test_fold_in_depends_on_the_basket_as_a_set_and_not_on_its_batch():
    factors = ItemFactors.fit(_communities(), factors=4, seed=1)
    alone = factors.fold_in([["A3", "B2", "A7"]])
    batched = factors.fold_in([["B5"], ["A7", "A3", "B2", "A3", "unknown"], []])
    assert np.array_equal(alone[0], batched[1])
    assert not batched[2].any()  # no known item: no preference
    assert not factors.fold_in([["unknown"]]).any()


def test_max_items_keeps_the_most_liked_items():
    baskets = {"a": ["x", "y"], "b": ["x", "y"], "c": ["x", "z"]}
    assert ItemFactors.fit(baskets, factors=2, seed=0, max_items=2).ids == ("x", "y")


def test_factor_scores_are_per_list_and_zero_for_unknown_items():
    factors = ItemFactors.fit(_communities(), factors=4, seed=1)
    ptr = np.array([0, 3, 5])
    column = factor_scores(factors, ptr, ["A5", "B5", "nope", "B9", "A9"],
                           [["A0", "A1"], ["B0"]])
    assert np.abs(column).max() == pytest.approx(1.0)
    assert column[0] > column[1] and column[2] == 0.0 and column[3] > column[4]
    assert np.abs(column[:3]).max() == pytest.approx(1.0)  # scaled within each list
    assert np.abs(column[3:]).max() == pytest.approx(1.0)
    assert not factor_scores(None, ptr, ["A5"] * 5, [[], []]).any()


def test_an_artefact_carries_the_factors_and_scores_the_same():
    model = RankerMLP()
    model.factors = ItemFactors.fit(_communities(), factors=4, seed=1)
    with torch.no_grad():
        model.net[0].weight.normal_()
        model.net[-1].weight.normal_()
    loaded, _ = from_artefact(to_artefact(model, version=1, metrics={}), max_bytes=1 << 20)
    assert loaded.factors.ids == model.factors.ids
    assert np.array_equal(loaded.factors.vectors, model.factors.vectors)
    assert np.array_equal(loaded.factors.fold_in([["A1"]]), model.factors.fold_in([["A1"]]))
    x = np.random.default_rng(0).normal(size=(7, len(FEATURES))).astype(np.float32)
    assert np.array_equal(loaded.score(x), model.score(x))
    assert from_artefact(to_artefact(RankerMLP(), version=1, metrics={}),
                         max_bytes=1 << 20)[0].factors is None


@pytest.mark.parametrize(("vectors", "ids", "reason"), [
    (np.full((2, 3), np.nan, dtype=np.float32), '["a", "b"]', "NaN"),
    (np.zeros((2, 3), dtype=np.float32), '["a"]', "ids"),
    (np.zeros((2, 3), dtype=np.float32), '["a", "a"]', "repeat"),
    (np.zeros((2, 3), dtype=np.float32), '[1, 2]', "list of item ids"),
    (np.zeros((2, 3), dtype=np.float64), '["a", "b"]', "float32"),
], ids=["nan", "count", "repeat", "not-ids", "dtype"])
def test_bad_factors_in_an_artefact_are_refused(vectors, ids, reason):
    model = RankerMLP()
    model.factors = ItemFactors(("a", "b"), np.zeros((2, 3), dtype=np.float32))
    data = to_artefact(model, version=1, metrics={})
    tensors = load(data)
    tensors["item_factors"] = torch.from_numpy(vectors)
    header = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + header])["__metadata__"]
    metadata["factor_items"] = ids
    with pytest.raises(ArtefactError, match=reason):
        from_artefact(save(tensors, metadata=metadata), max_bytes=1 << 20)


def _community_examples(n: int, seed: int) -> list[Example]:
    """Lists of ten unliked items, five of each community, in a random order (the rank
    feature says nothing); the user chooses one of their own community's."""
    baskets = _communities(seed=seed)
    rng = np.random.default_rng(seed)
    users = sorted(baskets)
    examples = []
    for g in range(n):
        user = users[g % len(users)]
        own, other = "AB"[int(user[1:]) % 2], "BA"[int(user[1:]) % 2]
        pick = [f"{own}{k}" for k in rng.permutation(20) if f"{own}{k}" not in baskets[user]][:5]
        pick += [f"{other}{k}" for k in rng.permutation(20)[:5]]
        order = rng.permutation(10)
        items = tuple(pick[k] for k in order)
        positive = int(np.flatnonzero(order < 5)[rng.integers(5)])
        x = rng.normal(size=(10, len(FEATURES))).astype(np.float32)
        x[:, RANK] = 1.0 / np.log2(2.0 + np.arange(10))
        x[:, FACTOR] = 0.0
        examples.append(Example(user, x, positive, float(g), items, tuple(baskets[user])))
    return examples


def test_the_trainer_learns_a_preference_that_only_the_factors_see():
    examples = _community_examples(1200, seed=3)
    settings = load_settings(trainer_epochs=15, trainer_device="cpu", trainer_lr=0.01,
                             ranker_factors=4)
    with_factors = train_step(None, examples, settings)
    without = train_step(None, examples, load_settings(
        trainer_epochs=15, trainer_device="cpu", trainer_lr=0.01, ranker_factors=0))
    assert with_factors.model.factors is not None and without.model.factors is None
    # 960 in the training share: the first of 4 time chunks has no older factors to score it
    assert (with_factors.train_groups, without.train_groups) == (720, 960)
    assert with_factors.published
    assert with_factors.candidate["ndcg@10"] > without.candidate["ndcg@10"] + 0.1
    # the next step judges the current version with its own factors
    again = train_step(with_factors.model, examples, settings)
    assert again.current["ndcg@10"] == pytest.approx(with_factors.candidate["ndcg@10"])


def test_a_worker_serving_factors_ranks_a_batch_as_it_ranks_each_user_alone():
    from tests.unit.test_ranker import PLAYS, _replica, _trained

    replica = _replica(PLAYS, diversity=0.0)
    model = replica.model
    baskets = {u: [i for i, (s, _, _) in h.items.items() if s > 0]
               for u, h in model.histories.items()}
    ranker = RankerMLP()
    ranker.load_state_dict(_trained().state_dict())
    with torch.no_grad():  # lean on factor_score, so that it decides the order
        ranker.net[0].weight[:, FACTOR] = 3.0
    ranker.factors = ItemFactors.fit(baskets, factors=4, seed=0)
    replica.ranking.model = ranker
    items = model.items
    items.refresh()
    users = ["u1", "u4", "u9", "u17"]
    batched = replica.ranking.top_model(model, users)
    for user in users:
        history = model.histories[user]
        assert batched[user] == replica.ranking.recommend(items, user, history)
        candidates = replica.ranking.candidates(items, user, history, 100)
        column = replica.ranking.features(items, history, candidates)[:, FACTOR]
        assert np.abs(column).max() == pytest.approx(1.0, abs=1e-6)
    replica.ranking.model = _trained()  # the same MLP without factors orders differently
    assert replica.ranking.top_model(model, users) != batched


def test_item_factors_too_large_for_an_artefact_fail_at_start():
    from streams.settings import SettingsError

    with pytest.raises(SettingsError, match="TASTEMAKER_RANKER_FACTOR_ITEMS.*TASTEMAKER_RANKER_"
                                            "FACTORS.*TASTEMAKER_RANKER_MAX_ARTEFACT_BYTES"):
        load_settings(ranker_factor_items=100_000)  # 12.8 MB of vectors for a 4 MiB artefact
    assert load_settings(ranker_factor_items=100_000,
                         ranker_max_artefact_bytes=32 << 20).ranker_factor_items == 100_000
