"""The fold examples of `bench.offline_ranker` (the ranker's objective for the offline protocol):
only train ratings, a share of each user's items held out, a user's groups on one side of the
fit/holdout cut, the same groups for the same seed; the ``factor_score`` of ``fold+factors``."""

from __future__ import annotations

import random

import numpy as np

from bench.offline import Split
from bench.offline_ranker import (
    FOLD_SHARE,
    fit_factors,
    fold_examples,
    fold_holdout,
    without_factors,
)
from models.factors import factor_scores
from models.ranker import FACTOR, Groups
from streams.settings import load_settings
from streams.tools.datasets import Rating


def toy_split(n_users: int = 40, seed: int = 3) -> Split:
    """Two taste clusters of 15 items; each user rates 8–14 items of one, in time order."""
    rng = random.Random(seed)
    train = []
    for u in range(n_users):
        cluster = u % 2
        items = rng.sample(range(15 * cluster, 15 * cluster + 15), rng.randint(8, 14))
        train += [Rating(f"u{u}", f"i{i}", float(rng.randint(3, 5)), 1e9 + 3600 * (u + k))
                  for k, i in enumerate(items)]
    train.sort(key=lambda r: r.ts)
    return Split(train, {}, {})


def test_a_fold_holds_out_the_share_of_each_users_train_items():
    split = toy_split()
    held = fold_holdout(split, random.Random(1))
    assert held == fold_holdout(split, random.Random(1))
    train = {(r.user_id, r.item_id) for r in split.train}
    assert held <= train
    for user in {u for u, _ in train}:
        mine = {i for u, i in train if u == user}
        assert len({i for u, i in held if u == user}) == max(1, round(len(mine) * FOLD_SHARE))


def test_fold_examples_are_deterministic_and_cut_by_user():
    split, settings = toy_split(), load_settings()
    examples = fold_examples(split, settings, {}, encoding="completion", seed=5)
    again = fold_examples(split, settings, {}, encoding="completion", seed=5)
    assert examples, "a cluster's held-out items are among its users' candidates"
    assert len(examples) <= len(fold_holdout(split, random.Random(5)))
    assert [k for _, k, _ in examples] == [k for _, k, _ in again]
    assert all(np.array_equal(a, b) for (a, _, _), (b, _, _) in zip(examples, again, strict=True))
    fit, holdout = Groups.of(examples).split(0.25)
    assert not set(fit.ts) & set(holdout.ts)  # one "time" per user: no user on both sides


def test_latent_factors_score_a_users_own_cluster_higher():
    split, settings = toy_split(), load_settings()
    held = fold_holdout(split, random.Random(2))
    factors = fit_factors([r for r in split.train if (r.user_id, r.item_id) not in held],
                          settings)
    liked: dict[str, list[str]] = {}
    for r in split.train:
        if (r.user_id, r.item_id) not in held:
            liked.setdefault(r.user_id, []).append(r.item_id)
    mine = other = 0
    for user, item in sorted(held):
        cluster = int(user[1:]) % 2
        stranger = f"i{15 * (1 - cluster)}"  # an item of the other cluster
        scores = factor_scores(factors, np.array([0, 2]), [item, stranger], [liked[user]])
        assert np.abs(scores).max() <= 1.0
        mine += scores[0] > scores[1]
        other += scores[0] <= scores[1]
    # held-out items of the user's own cluster mostly score higher (50% by chance: 32 factors
    # nearly memorise a 40 x 30 toy)
    assert mine > 2 * other


def test_fold_examples_with_factors_differ_only_in_the_factor_column():
    split, settings = toy_split(), load_settings()
    plain = fold_examples(split, settings, {}, encoding="completion", seed=5)
    more = fold_examples(split, settings, {}, encoding="completion", seed=5, factors=True)
    assert [k for _, k, _ in plain] == [k for _, k, _ in more]
    assert all(np.array_equal(a, without_factors(b))
               for (a, _, _), (b, _, _) in zip(plain, more, strict=True))
    assert not any(a[:, FACTOR].any() for a, _, _ in plain)
    assert all(b[:, FACTOR].any() for b, _, _ in more)
