"""The MLP ranker on the offline protocol, beside the published rows.

`bench.offline`'s protocol (MS Recommenders' per-user stratified 75/25 split of ML-100K, top-10 of
the items a user did not rate in train, every test rating relevant). The ranker sees only what a
deployment would have logged while learning the train split:

1. the train ratings are learned as a stream, in time order, as the replay sends them (a play,
   then the rating), through the model and `streams.runtime.ranking.Ranking` configured by the
   settings; at ``--example-rate`` of the positive events the worker's training example is logged
   (the candidates the user would have been served just before it, their features, the chosen item);
2. the MLP is trained on those examples (`models.ranker.fine_tune`, the oldest 80% to fit, the
   newest 20% held out for the choice of epochs), with the listwise objective and, as the
   ablation, the pointwise MSE one;
   with the objective ``fold`` (run by default after the workers' one) the examples come from
   folds of the train split instead: each fold holds out a random ``FOLD_SHARE`` of every
   user's train items, learns the rest as a stream and logs, per user, the candidates of that
   end state with each held-out candidate as a positive (what the protocol asks: a random
   share of a user's items, ranked at the end of the stream); the fit/holdout cut is then by
   user, not by time; the objective ``fold+factors`` (also by default) fills the feature
   ``factor_score`` as the trainer does (`models.factors`: implicit ALS item factors fitted on
   the same ratings as the state the examples come from, each user folded in from their liked
   items), where ``fold`` leaves it 0, as a deployment with ``RANKER_FACTORS=0`` would;
3. each test user's list is the top ``ranker_candidates`` co-occurrence candidates of the final
   state, re-ordered by the ranker, train items removed, top 10: the same lists the workers would
   serve (with ``fold+factors``, the ranker carries item factors fitted on the whole train
   split, and the lists are featurised as a worker serving that artefact does). The
   co-occurrence order of the same candidates is the baseline row.

    python -m bench.offline_ranker                       # bench/out/offline_ranker.json
    python -m bench.offline_ranker --example-rate 0.5    # more examples, slower
    python -m bench.offline_ranker --objectives later --losses listwise
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from bench.offline import PUBLISHED, K, Split, evaluate, print_beyond, print_table, seen_by_user
from models.factors import ItemFactors
from models.ranker import FACTOR, Groups, RankerMLP, fine_tune, rerank
from models.ranker import evaluate as evaluate_groups
from streams.runtime.learning import reference_recommender
from streams.runtime.ranking import Ranking, choice_id, sampled
from streams.runtime.trainer import factors_of_baskets
from streams.settings import Settings, get_settings
from streams.tools.datasets import movielens_100k
from streams.tools.replay import ENCODINGS, Encoding, play_completion

Objective = Literal["next", "later", "fold", "fold+factors"]
POSITIVES = 5  # per logged event, with objective "later"
FOLD_SHARE = 0.25  # of each user's train items held out in a fold, as the protocol holds out
OBJECTIVE_NAMES = {"next": ", next item", "later": ", later train items",
                   "fold": ", held-out fold items, no item factors",
                   "fold+factors": ", held-out fold items, item factors"}
# published nDCG@10 on ML-100K with this protocol (MS Recommenders' benchmark table)
PUBLISHED_NDCG = {"SAR": 0.382, "NCF": 0.396, "LightGCN": 0.420, "BPR": 0.442, "BiVAE": 0.475}


def learn_and_log(split: Split, settings: Settings, genres: dict[str, tuple[str, ...]], *,
                  encoding: Encoding, rate: float, objective: Objective = "next"
                  ):  # (model, ranking, groups)
    """Learn the train split as the workers would, logging their training examples.

    ``objective="next"``: the workers' examples (the candidate chosen next). ``"later"``: at the
    same sampled events, the candidates and their features with, as positives, every candidate
    the user rates later in the train split (labels joined after the fact; up to ``POSITIVES``
    of them, seeded, each its own group): what the offline protocol asks, a random share of a
    user's items rather than the next one."""
    model = reference_recommender(settings)
    ranking = Ranking(settings)
    ranking.learn_catalogue(genres)
    weights = settings.feedback_weights()
    examples: list[tuple[np.ndarray, int, float]] = []
    rng = random.Random(settings.trainer_seed)
    remaining: dict[str, Counter[str]] = {}
    for r in split.train:
        remaining.setdefault(r.user_id, Counter())[r.item_id] += 1
    for r in split.train:
        if objective == "later":
            history = model.histories.get(r.user_id)
            if history is not None and sampled(choice_id(r.user_id, r.item_id, r.ts), rate):
                candidates = ranking.candidates(model.items, r.user_id, history,
                                                settings.ranker_candidates)
                later = remaining[r.user_id]
                positives = [k for k, c in enumerate(candidates) if later[c.item_id] > 0]
                if positives:
                    features = ranking.features(model.items, history, candidates)
                    for k in sorted(rng.sample(positives, min(POSITIVES, len(positives)))):
                        examples.append((features, k, r.ts))
            remaining[r.user_id][r.item_id] -= 1
            for weight in (weights.for_play(completion=play_completion(r.rating, encoding)),
                           weights.for_rating(r.rating)):
                model.learn_one(r.user_id, r.item_id, weight=weight, ts=r.ts)
            continue

        played = weights.for_play(completion=play_completion(r.rating, encoding))
        rated = weights.for_rating(r.rating)
        history = model.histories.get(r.user_id)
        if (max(played, rated) > 0 and history is not None and r.item_id not in history.items
                and sampled(choice_id(r.user_id, r.item_id, r.ts), rate)):
            # (one example per choice, as the workers log; an item already liked is no candidate)
            example = ranking.example(model.items, r.user_id, history, item_id=r.item_id,
                                      ts=r.ts)
            if example is not None:
                examples.append((np.asarray(example["features"], dtype=np.float32),
                                 example["positive"], r.ts))
        for weight in (played, rated):
            model.learn_one(r.user_id, r.item_id, weight=weight, ts=r.ts)
    return model, ranking, Groups.of(examples)


def fit_factors(ratings: Sequence, settings: Settings) -> ItemFactors | None:
    """The trainer's item factors (`streams.runtime.trainer.factors_of_baskets`) of a set of
    ratings: each user's basket the items they rated."""
    baskets: dict[str, set[str]] = {}
    for r in ratings:
        baskets.setdefault(r.user_id, set()).add(r.item_id)
    return factors_of_baskets(baskets, settings)


def fold_holdout(split: Split, rng: random.Random) -> set[tuple[str, str]]:
    """The (user, item) pairs a fold holds out: a random `FOLD_SHARE` of each user's distinct
    train items, at least one."""
    held: set[tuple[str, str]] = set()
    for user, items in sorted(seen_by_user(split.train).items()):
        held.update((user, i) for i in rng.sample(
            sorted(items), max(1, round(len(items) * FOLD_SHARE))))
    return held


def fold_examples(split: Split, settings: Settings, genres: dict[str, tuple[str, ...]], *,
                  encoding: Encoding, seed: int, factors: bool = False
                  ) -> list[tuple[np.ndarray, int, float]]:
    """Objective ``"fold"``: learn the train split without `fold_holdout` as a stream, then for
    every user with held-out items among their ``ranker_candidates`` candidates of that end
    state, one group per such item (same features, that item the positive). Only train ratings
    are used. A group's "time" is a seeded random number per user, so `Groups.split` cuts by
    user: a user's groups are all on one side. ``factors``: ``factor_score`` filled as the
    trainer fills it (`Groups.with_factor_scores`), from item factors of the same ratings
    (`fit_factors`); 0 otherwise, as the workers log it."""
    rng = random.Random(seed)
    held = fold_holdout(split, rng)
    rest = Split([r for r in split.train if (r.user_id, r.item_id) not in held], {}, {})
    model, ranking, _ = learn_and_log(rest, settings, genres, encoding=encoding, rate=0.0)
    model.items.refresh()
    examples: list[tuple[np.ndarray, int, float]] = []
    candidate_ids: list[list[str]] = []
    liked: list[list[str]] = []
    for user in sorted({user for user, _ in held}):
        history = model.histories.get(user)
        if history is None:
            continue
        candidates = ranking.candidates(model.items, user, history, settings.ranker_candidates)
        positives = [k for k, c in enumerate(candidates) if (user, c.item_id) in held]
        if positives:
            features = ranking.features(model.items, history, candidates)
            when = rng.random()
            examples += [(features, k, when) for k in positives]
            ids = [c.item_id for c in candidates]
            mine = [item for item, _ in history.recent(settings.recent_items)]
            candidate_ids += [ids] * len(positives)
            liked += [mine] * len(positives)
    if factors and examples:
        filled = Groups.of(examples).with_factor_scores(fit_factors(rest.train, settings),
                                                        candidate_ids, liked)
        examples = [(filled.x[g, :len(f)], k, t) for g, (f, k, t) in enumerate(examples)]
    return examples


def without_factors(features: np.ndarray) -> np.ndarray:
    """``features`` with ``factor_score`` 0, as a deployment without item factors has it."""
    out = features.copy()
    out[:, FACTOR] = 0.0
    return out


def train(groups: Groups, settings: Settings, *, loss: str, max_epochs: int
          ) -> tuple[RankerMLP | None, dict[str, Any]]:
    """Fit on the oldest 80%, keep the epoch count with the best held-out nDCG@10 (checked
    every 2 epochs), then return that model; None when no epoch beat the co-occurrence order
    on the held-out groups (the trainer's guard would publish none: the lists stay in that
    order)."""
    fit, holdout = groups.split(0.2)
    torch.manual_seed(settings.trainer_seed)
    model = RankerMLP(columns=groups.x.shape[2])
    model.fit_scaler(fit)
    best, best_model, curve = evaluate_groups(None, holdout)["ndcg@10"], None, []
    for epoch in range(2, max_epochs + 1, 2):
        fine_tune(model, fit, epochs=2, lr=settings.trainer_lr, device="cpu",
                  seed=settings.trainer_seed + epoch, loss=loss)  # type: ignore[arg-type]
        score = evaluate_groups(model, holdout)["ndcg@10"]
        curve.append([epoch, round(score, 4)])
        if score > best:
            best, best_model = score, copy.deepcopy(model)
    info = {"fit_groups": len(fit), "holdout_groups": len(holdout),
            "holdout_ndcg_cooccurrence": round(evaluate_groups(None, holdout)["ndcg@10"], 4),
            "holdout_ndcg_best": round(best, 4), "curve": curve,
            "used": best_model is not None}
    return best_model, info


def ranked_lists(model, ranking: Ranking, ranker: RankerMLP | None):
    """The `bench.offline.Ranker` of the served lists: candidates re-ordered by ``ranker`` as
    a worker serving it would (its item factors, if any, giving ``factor_score``)."""
    s = ranking.settings
    serving = Ranking(s, ranking.catalogue, model=ranker)
    model.items.refresh()

    def rank(user: str, seen: frozenset[str]) -> list[str]:
        history = model.histories.get(user)
        if history is None:
            return []
        evicted = len(seen - history.items.keys())
        candidates = ranking.candidates(model.items, user, history,
                                        s.ranker_candidates + evicted)
        if ranker is not None:
            candidates = rerank(ranker, candidates,
                                serving.features(model.items, history, candidates),
                                len(candidates))
        return [c.item_id for c in candidates if c.item_id not in seen][:K]

    return rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--encoding", choices=ENCODINGS, default="completion")
    parser.add_argument("--example-rate", type=float, default=None,
                        help="share of positive events logged (default: the setting)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--objectives", nargs="+",
                        choices=["next", "later", "fold", "fold+factors"],
                        default=["next", "fold", "fold+factors"],
                        help="positives: the item chosen next (the workers' examples), every "
                             "candidate the user rates later in train, or the held-out train "
                             "items of folds of the train split, those with a latent-factor "
                             "score as a feature too (fold+factors: not in the product) (next "
                             "and later exclude each other: one stream logs them)")
    parser.add_argument("--folds", type=int, default=3, help="with objective fold")
    parser.add_argument("--fold-seed", type=int, default=17, help="seed of the first fold")
    parser.add_argument("--losses", nargs="+", default=["listwise", "pointwise"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/out/offline_ranker.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = get_settings()
    rate = settings.ranker_example_rate if args.example_rate is None else args.example_rate
    _, movies = movielens_100k(settings.cache_dir)
    genres = {m.item_id: tuple(m.genres) for m in movies.values()}
    split = Split.of(settings.cache_dir, args.seed)
    yardstick = split.yardstick()

    started = time.perf_counter()
    logged: Objective = "later" if "later" in args.objectives else "next"
    model, ranking, logged_groups = learn_and_log(
        split, settings, genres, encoding=args.encoding,
        rate=rate if logged in args.objectives else 0.0, objective=logged)
    groups = {logged: logged_groups} if logged in args.objectives else {}
    folds = [o for o in ("fold", "fold+factors") if o in args.objectives]
    if folds:  # one learn per fold for both: the plain examples are the others less a column
        examples = [e for k in range(args.folds) for e in fold_examples(
            split, settings, genres, encoding=args.encoding, seed=args.fold_seed + k,
            factors="fold+factors" in folds)]
        if "fold" in folds:
            groups["fold"] = Groups.of([(without_factors(f), k, t) for f, k, t in examples])
        if "fold+factors" in folds:
            groups["fold+factors"] = Groups.of(examples)
    factors = (fit_factors(split.train, settings)
               if "fold+factors" in args.objectives else None)
    learn_s = time.perf_counter() - started
    print(f"learned {len(split.train):,} train ratings, logged "
          + ", ".join(f"{len(g):,} {o} examples" for o, g in groups.items())
          + f" in {learn_s:.0f} s", flush=True)
    table: dict[str, dict[str, float]] = {}
    fits: dict[str, dict[str, Any]] = {}
    table["tastemaker, co-occurrence order"] = evaluate(
        ranked_lists(model, ranking, None), split.train_seen, split.relevant,
        yardstick=yardstick)
    for objective, objective_groups in groups.items():
        for loss in args.losses:
            t0 = time.perf_counter()
            ranker, info = train(objective_groups, settings, loss=loss, max_epochs=args.epochs)
            if ranker is not None and objective == "fold+factors":
                ranker.factors = factors  # published with the MLP, as the trainer does
            info["fit_seconds"] = round(time.perf_counter() - t0, 1)
            fits[f"{objective}, {loss}"] = info
            name = (f"tastemaker + MLP ranker ({loss}"
                    f"{', MSE' if loss == 'pointwise' else ''}{OBJECTIVE_NAMES[objective]})"
                    f"{'' if ranker else ' [guard: no fit beat the co-occurrence order]'}")
            table[name] = evaluate(
                ranked_lists(model, ranking, ranker),
                split.train_seen, split.relevant, yardstick=yardstick)
            print(f"{objective}, {loss}: {info}", flush=True)
    print_table(table, "this run (python -m bench.offline_ranker)")
    print_beyond(table)
    print_table(PUBLISHED, "published, same protocol")
    print("published nDCG@10: " + ", ".join(f"{k} {v}" for k, v in PUBLISHED_NDCG.items()))
    result = {"protocol": "MS Recommenders python_stratified_split(ratio=0.75, seed=42), top-10 "
                          "of unseen items, all test ratings relevant",
              "encoding": args.encoding, "example_rate": rate, "objectives": args.objectives,
              **({"folds": args.folds, "fold_seed": args.fold_seed, "fold_share": FOLD_SHARE}
                 if {"fold", "fold+factors"} & set(args.objectives) else {}),
              "examples": {o: len(g) for o, g in groups.items()},
              "learn_seconds": round(learn_s, 1),  # the split and the folds
              "settings": {k: getattr(settings, k) for k in (
                  "half_life_days", "feedback_rating", "ranker_candidates", "trainer_lr")},
              "models": table, "fits": fits, "published_ndcg@10": PUBLISHED_NDCG,
              "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
