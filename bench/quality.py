"""Prequential quality on MovieLens-100K: recommend, then learn, one event at a time.

In time order, before each rating is learned, the user's top-10 is asked of every model; a hit is
the rated item being in it (every rated item was watched, so it is relevant). Recall@10 and nDCG@10
are averaged over the evaluated events. All models learn every event and are asked at the same
seeded sample of events. Each rating is learned as the replay sends it: a ``play`` then a
``rating``, in either encoding of `streams.tools.replay` (the play's completion follows the stars,
or the play has none); both run by default. Beside Recall@10 and nDCG@10, every model row has the
beyond-accuracy measures of `models.metrics.beyond_accuracy` over the lists it was asked for
(popularity and intra-list similarity from the ratings replayed: see `beyond`).

    python -m bench.quality                 # full ML-100K, writes bench/out/quality.json
    python -m bench.quality --limit 20000   # a slice
    python -m bench.quality --stretch 30    # timestamps stretched x30 (about 17 years)
    python -m bench.quality --reviews       # the replay with review texts: review feedback from
                                            # sentiment vs stars vs none (bench/out/reviews.json)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.cooccurrence import CooccurrenceRecommender, Recommendation
from models.feedback import FeedbackWeights
from models.metrics import beyond_accuracy, cosine_similarity
from models.popularity import DecayedPopularity
from streams.runtime.learning import reference_recommender
from streams.runtime.ranking import Ranking
from streams.settings import Settings, get_settings
from streams.tools.datasets import Rating, movielens_100k
from streams.tools.replay import ENCODINGS, Encoding, play_completion

K = 10


@dataclass(slots=True)
class Score:
    hits: int = 0
    ndcg: float = 0.0
    evaluated: int = 0
    seconds: float = 0.0
    curve: list[float] = field(default_factory=list)  # running recall at checkpoints
    # [events learned, evaluated, hits] at each checkpoint: recall per stretch of the stream
    checkpoints: list[list[int]] = field(default_factory=list)
    lists: list[list[str]] = field(default_factory=list)  # the top-K lists asked for ...
    asked: list[tuple[str, int]] = field(default_factory=list)  # ... (user, history length)

    def add(self, ranked: Sequence[str], item: str) -> None:
        self.evaluated += 1
        self.lists.append(list(ranked[:K]))
        if item in ranked[:K]:
            self.hits += 1
            self.ndcg += 1.0 / math.log2(ranked.index(item) + 2)

    @property
    def recall(self) -> float:
        return self.hits / self.evaluated if self.evaluated else 0.0

    def as_dict(self) -> dict:
        return {"recall@10": round(self.recall, 4),
                "ndcg@10": round(self.ndcg / max(self.evaluated, 1), 4),
                "evaluated": self.evaluated, "seconds": round(self.seconds, 2)}


class BiasedMFRanker:
    """river's ``reco.BiasedMF`` learned online on the stars, used as a ranker: its predicted
    rating for every known item, scored with numpy from the model's own weights (the same numbers
    as ``predict_one``, without 1,682 Python calls per ranking)."""

    def __init__(self, seed: int = 7) -> None:
        from river import optim, reco

        self.model = reco.BiasedMF(n_factors=10, bias_optimizer=optim.SGD(0.025),
                                   latent_optimizer=optim.SGD(0.05), weight_initializer=None,
                                   latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1,
                                                                                seed=seed),
                                   l2_bias=0.0, l2_latent=0.0)
        self.seen: dict[str, set[str]] = {}

    def learn_one(self, user_id: str, item_id: str, stars: float) -> None:
        self.seen.setdefault(user_id, set()).add(item_id)
        self.model.learn_one(user_id, item_id, stars)

    def recommend(self, user_id: str, n: int) -> list[str]:
        m = self.model
        items = [i for i in m.i_biases if i not in self.seen.get(user_id, ())]
        if not items:
            return []
        i_bias = np.array([m.i_biases[i] for i in items])
        scores = i_bias
        if user_id in m.u_latents:
            latents = np.array([m.i_latents[i] for i in items])
            scores = i_bias + latents @ np.asarray(m.u_latents[user_id])
        top = np.argsort(-scores, kind="stable")[:n]
        return [items[t] for t in top]


class ControlledRecommender:
    """The tastemaker model served through the worker's `streams.runtime.ranking.Ranking`: what
    users get with the popularity-bias and diversity controls of ``settings`` (without a ranker)."""

    def __init__(self, settings: Settings) -> None:
        self.model = reference_recommender(settings)
        self.ranking = Ranking(settings)

    def learn_one(self, user_id: str, item_id: str, *, weight: float, ts: float) -> None:
        self.model.learn_one(user_id, item_id, weight=weight, ts=ts)

    def recommend_items(self, user_id: str, n: int) -> list[Recommendation]:
        history = self.model.histories.get(user_id)
        if history is None:
            return self.model.cold_start(n)
        return self.ranking.top(self.model.items, user_id, history, n)

    def recommend(self, user_id: str, n: int) -> list[str]:
        return [r.item_id for r in self.recommend_items(user_id, n)]


def tastemaker(settings: Settings) -> CooccurrenceRecommender | ControlledRecommender:
    """The model as the workers serve it with ``settings``' controls (no ranker)."""
    if Ranking(settings).adjusting:
        return ControlledRecommender(settings)
    return reference_recommender(settings)


def stretch_time(ratings: Sequence[Rating], factor: float) -> list[Rating]:
    """The same ratings with the time since the first one multiplied by ``factor`` (ML-100K's
    seven months x30: about 17 years), to see what depends on the data's time span.

    >>> [r.ts for r in stretch_time([Rating("u", "i", 4.0, 10.0), Rating("u", "j", 4.0, 12.0)], 30)]
    [10.0, 70.0]
    """
    if factor == 1.0 or not ratings:
        return list(ratings)
    t0 = min(r.ts for r in ratings)
    return [Rating(r.user_id, r.item_id, r.rating, t0 + factor * (r.ts - t0)) for r in ratings]


def run(ratings: Sequence[Rating], *, eval_share: float, seed: int,
        models: dict[str, Callable[[], object]] | None = None,
        feedback: FeedbackWeights | None = None,
        encoding: Encoding = "completion") -> dict[str, Score]:
    """Replay ``ratings`` prequentially through each model, each rating sent in ``encoding``;
    return their scores."""
    feedback = feedback or FeedbackWeights()
    rng = random.Random(seed)
    evaluate = [rng.random() < eval_share for _ in ratings]
    factories = models or default_models()
    scores: dict[str, Score] = {}
    checkpoints = max(len(ratings) // 20, 1)
    for name, factory in factories.items():
        model = factory()
        score = scores[name] = Score()
        history_length: dict[str, int] = {}
        started = time.perf_counter()
        for n, (r, asked) in enumerate(zip(ratings, evaluate, strict=True)):
            if asked:
                score.add(_ask(model, r.user_id), r.item_id)
                score.asked.append((r.user_id, history_length.get(r.user_id, 0)))
            history_length[r.user_id] = history_length.get(r.user_id, 0) + 1
            _learn(model, r, feedback, encoding)
            if (n + 1) % checkpoints == 0:
                score.curve.append(round(score.recall, 4))
                score.checkpoints.append([n + 1, score.evaluated, score.hits])
        score.seconds = time.perf_counter() - started
    return scores


def beyond(scores: dict[str, Score], ratings: Sequence[Rating]) -> dict[str, dict[str, float]]:
    """`models.metrics.beyond_accuracy` of each model's asked lists. The yardsticks come from
    the ratings replayed: an item's popularity is its number of ratings among them, the long tail
    the items outside the most rated ones that hold 20% of them, intra-list similarity the cosine
    of the items' binary rater vectors; a list's history is its user's ratings before it."""
    counts: dict[str, float] = {}
    by_user: dict[str, list[str]] = {}
    for r in ratings:
        counts[r.item_id] = counts.get(r.item_id, 0) + 1
        by_user.setdefault(r.user_id, []).append(r.item_id)
    catalogue = sorted(counts)
    similarity = cosine_similarity((r.user_id, r.item_id) for r in ratings)
    return {name: beyond_accuracy(
        s.lists, [by_user.get(user, [])[:length] for user, length in s.asked], counts=counts,
        catalogue=catalogue, similarity=similarity, k=K) for name, s in scores.items()}


def default_models() -> dict[str, Callable[[], object]]:
    settings = get_settings()
    return {
        "tastemaker-cooccurrence": lambda: tastemaker(settings),
        "popularity-decayed": lambda: DecayedPopularity(half_life_days=settings.half_life_days),
        "river-BiasedMF": BiasedMFRanker,
    }


def _ask(model: object, user_id: str) -> list[str]:
    if isinstance(model, CooccurrenceRecommender):
        return [r.item_id for r in model.recommend(user_id, K, explain=False)]
    return model.recommend(user_id, K)  # type: ignore[attr-defined]


def _learn(model: object, r: Rating, feedback: FeedbackWeights, encoding: Encoding) -> None:
    if isinstance(model, BiasedMFRanker):
        model.learn_one(r.user_id, r.item_id, r.rating)
        return
    completion = play_completion(r.rating, encoding)  # as the replay sends it
    model.learn_one(r.user_id, r.item_id, weight=feedback.for_play(completion=completion), ts=r.ts)  # type: ignore[attr-defined]
    model.learn_one(r.user_id, r.item_id, weight=feedback.for_rating(r.rating), ts=r.ts)  # type: ignore[attr-defined]


def run_replay(events: Sequence[tuple[str, dict]], *, eval_share: float, seed: int,
               variants: Sequence[str] = ("sentiment", "stars", "none")) -> dict[str, Score]:
    """Prequential over the stream the replay sends (plays, ratings, reviews with real texts),
    through `streams.tools.reference.StreamReplica` — the workers' computation — once per way of
    turning a review into feedback. Asked at each play (one per rating) before it is learned."""
    from streams.tools.reference import StreamReplica

    rng = random.Random(seed)
    asked = [kind == "play" and rng.random() < eval_share for kind, _ in events]
    scores: dict[str, Score] = {}
    for variant in variants:
        replica = StreamReplica(get_settings(), review_feedback=variant)  # type: ignore[arg-type]
        score = scores[f"tastemaker, reviews by {variant}"] = Score()
        started = time.perf_counter()
        for (kind, value), ask in zip(events, asked, strict=True):
            if ask:
                recs = replica.model.recommend(str(value["user_id"]), K, explain=False)
                score.add([r.item_id for r in recs], str(value["item_id"]))
            replica.learn(kind, value)
        score.seconds = time.perf_counter() - started
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--eval-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--encoding", choices=[*ENCODINGS, "both"], default="both")
    parser.add_argument("--stretch", type=float, default=1.0,
                        help="multiply the time since the first rating by this")
    parser.add_argument("--reviews", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.reviews:
        main_reviews(args)
        return
    args.out = args.out or Path("bench/out/quality.json")
    ratings, _ = movielens_100k(get_settings().cache_dir)
    ratings = stretch_time(ratings[: args.limit], args.stretch)
    encodings = ENCODINGS if args.encoding == "both" else (args.encoding,)
    tables = {}
    for encoding in encodings:
        scores = run(ratings, eval_share=args.eval_share, seed=args.seed, encoding=encoding,
                     feedback=get_settings().feedback_weights())
        extra = beyond(scores, ratings)
        result = {name: s.as_dict() | extra[name] | {"curve": s.curve,
                                                     "checkpoints": s.checkpoints}
                  for name, s in scores.items()}
        base = max(v["recall@10"] for k, v in result.items() if k != "tastemaker-cooccurrence")
        ours = result["tastemaker-cooccurrence"]["recall@10"]
        tables[encoding] = {"recall_ratio_vs_best_baseline": round(ours / base, 3) if base
                            else None, "models": result}
        print(f"\nencoding {encoding}, time x{args.stretch:g}")
        print_table(result)
        print(f"recall ratio vs best baseline: {tables[encoding]['recall_ratio_vs_best_baseline']}")
    first = tables[encodings[0]]
    summary = {"events": len(ratings), "eval_share": args.eval_share, "seed": args.seed,
               "stretch": args.stretch, "encoding": encodings[0],
               "recall_ratio_vs_best_baseline": first["recall_ratio_vs_best_baseline"],
               "models": first["models"], "encodings": tables,
               "beyond_accuracy": "models.metrics.beyond_accuracy; popularity = ratings among "
                                  "those replayed, ild@10 = 1 - cosine of binary rater vectors"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))


def print_table(result: dict[str, dict]) -> None:
    columns = ("recall@10", "ndcg@10", "coverage@10", "gini@10", "novelty", "ild@10",
               "popularity_lift", "long_tail_share")
    print(f"{'model':28} " + " ".join(f"{c[:11]:>11}" for c in columns) + f" {'seconds':>8}")
    for name, v in result.items():
        print(f"{name:28} " + " ".join(f"{v[c]:>11}" for c in columns) + f" {v['seconds']:>8}")


def main_reviews(args: argparse.Namespace) -> None:
    from streams.tools.replay import load_dataset, movielens_events

    ratings, reviews, _ = load_dataset(get_settings(), "movielens-100k")
    events = list(movielens_events(ratings[: args.limit], reviews, seed=args.seed))
    scores = run_replay(events, eval_share=args.eval_share, seed=args.seed)
    result = {name: s.as_dict() for name, s in scores.items()}
    out = args.out or Path("bench/out/reviews.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"events": len(events), "eval_share": args.eval_share,
                               "seed": args.seed, "models": result}, indent=2))
    print(f"{'model':34} {'recall@10':>10} {'ndcg@10':>8} {'evaluated':>9} {'seconds':>8}")
    for name, v in result.items():
        print(f"{name:34} {v['recall@10']:>10} {v['ndcg@10']:>8} {v['evaluated']:>9} "
              f"{v['seconds']:>8}")


if __name__ == "__main__":
    main()
