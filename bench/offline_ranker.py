"""The MLP ranker on the offline protocol, beside the published rows.

`bench.offline`'s protocol (MS Recommenders' per-user stratified 75/25 split of ML-100K, top-10 of
the items a user did not rate in train, every test rating relevant). The ranker sees only what a
deployment would have logged while learning the train split:

1. the train ratings are learned as a stream, in time order, as the replay sends them (a play,
   then the rating), through the model and `streams.ranking.Ranking` configured by the settings;
   at ``--example-rate`` of the positive events the worker's training example is logged (the
   candidates the user would have been served just before it, their features, the chosen item);
2. the MLP is trained on those examples (`models.ranker.fine_tune`, the oldest 80% to fit, the
   newest 20% held out for the choice of epochs), with the listwise objective and, as the
   ablation, the pointwise MSE one;
3. each test user's list is the top ``ranker_candidates`` co-occurrence candidates of the final
   state, re-ordered by the ranker, train items removed, top 10: the same lists the workers would
   serve. The co-occurrence order of the same candidates is the baseline row.

    python -m bench.offline_ranker                       # bench/out/offline_ranker.json
    python -m bench.offline_ranker --example-rate 0.5    # more examples, slower
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from bench.offline import PUBLISHED, K, Split, evaluate, print_beyond, print_table
from models.ranker import Groups, RankerMLP, fine_tune, rerank
from models.ranker import evaluate as evaluate_groups
from streams.datasets import movielens_100k
from streams.ranking import Ranking, sampled
from streams.replay import ENCODINGS, Encoding, play_completion
from streams.settings import Settings, get_settings
from streams.worker import reference_recommender

Objective = Literal["next", "later"]
POSITIVES = 5  # per logged event, with objective "later"
# published nDCG@10 on ML-100K with this protocol (MS Recommenders' benchmark table)
PUBLISHED_NDCG = {"SAR": 0.382, "NCF": 0.396, "LightGCN": 0.420, "BPR": 0.442, "BiVAE": 0.475}


def learn_and_log(split: Split, settings: Settings, genres: dict[str, tuple[str, ...]], *,
                  encoding: Encoding, rate: float, objective: Objective = "next"
                  ):  # noqa: ANN201 - (model, ranking, groups)
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
            event_id = f"ml-{r.user_id}-{r.item_id}-play"
            if history is not None and sampled(event_id, rate):
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

        for kind, weight in (
                ("play", weights.for_play(completion=play_completion(r.rating, encoding))),
                ("rating", weights.for_rating(r.rating))):
            event_id = f"ml-{r.user_id}-{r.item_id}-{kind}"
            history = model.histories.get(r.user_id)
            if (weight > 0 and history is not None and r.item_id not in history.items
                    and sampled(event_id, rate)):  # (an item already liked is no candidate)
                example = ranking.example(model.items, r.user_id, history, item_id=r.item_id,
                                          ts=r.ts, event_id=event_id)
                if example is not None:
                    examples.append((np.asarray(example["features"], dtype=np.float32),
                                     example["positive"], r.ts))
            model.learn_one(r.user_id, r.item_id, weight=weight, ts=r.ts)
    return model, ranking, Groups.of(examples)


def train(groups: Groups, settings: Settings, *, loss: str, max_epochs: int
          ) -> tuple[RankerMLP, dict[str, Any]]:
    """Fit on the oldest 80%, keep the epoch count with the best held-out nDCG@10 (checked
    every 2 epochs), then return that model."""
    fit, holdout = groups.split(0.2)
    torch.manual_seed(settings.trainer_seed)
    model = RankerMLP()
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
    return best_model or model, info


def ranked_lists(model, ranking: Ranking, ranker: RankerMLP | None):  # noqa: ANN001, ANN201
    """The `bench.offline.Ranker` of the served lists: candidates re-ordered by ``ranker``."""
    s = ranking.settings
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
                                ranking.features(model.items, history, candidates),
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
    parser.add_argument("--objective", choices=["next", "later"], default="next",
                        help="positives: the item chosen next (the workers' examples) or every "
                             "candidate the user rates later in train")
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
    model, ranking, groups = learn_and_log(split, settings, genres, encoding=args.encoding,
                                           rate=rate, objective=args.objective)
    learn_s = time.perf_counter() - started
    print(f"learned {len(split.train):,} train ratings, logged {len(groups):,} examples "
          f"in {learn_s:.0f} s", flush=True)
    table: dict[str, dict[str, float]] = {}
    fits: dict[str, dict[str, Any]] = {}
    table["tastemaker, co-occurrence order"] = evaluate(
        ranked_lists(model, ranking, None), split.train_seen, split.relevant,
        yardstick=yardstick)
    for loss in args.losses:
        t0 = time.perf_counter()
        ranker, info = train(groups, settings, loss=loss, max_epochs=args.epochs)
        info["fit_seconds"] = round(time.perf_counter() - t0, 1)
        fits[loss] = info
        name = (f"tastemaker + MLP ranker ({loss}{', MSE' if loss == 'pointwise' else ''}"
                f"{', later train items' if args.objective == 'later' else ''})")
        table[name] = evaluate(ranked_lists(model, ranking, ranker), split.train_seen,
                               split.relevant, yardstick=yardstick)
        print(f"{loss}: {info}", flush=True)
    print_table(table, "this run (python -m bench.offline_ranker)")
    print_beyond(table)
    print_table(PUBLISHED, "published, same protocol")
    print("published nDCG@10: " + ", ".join(f"{k} {v}" for k, v in PUBLISHED_NDCG.items()))
    result = {"protocol": "MS Recommenders python_stratified_split(ratio=0.75, seed=42), top-10 "
                          "of unseen items, all test ratings relevant",
              "encoding": args.encoding, "example_rate": rate, "objective": args.objective,
              "examples": len(groups), "learn_seconds": round(learn_s, 1),
              "settings": {k: getattr(settings, k) for k in (
                  "half_life_days", "feedback_rating", "ranker_candidates", "trainer_lr")},
              "models": table, "fits": fits, "published_ndcg@10": PUBLISHED_NDCG,
              "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
