"""Offline top-10 quality on MovieLens-100K with Microsoft Recommenders' protocol.

The protocol of their SAR quick start (``examples/00_quick_start/sar_movielens.ipynb``), so the
figures sit beside the ones they publish:

- **Split**: ``python_stratified_split(data, ratio=0.75, seed=42)`` as it was when the published
  figures were made (recommenders <= 1.1), replicated without pandas: users in id order, each
  user's ratings in the file's order (u.data's, which the RecBole copy keeps) shuffled by
  ``group.sample(frac=1, random_state=seed)`` (= ``RandomState(seed).permutation(count)``, the
  generator seeded afresh for every user), the first ``round(0.75 * count)`` to train. This gives
  the notebook's 74,992 train / 25,008 test ratings. (Later releases draw one global
  ``np.random.rand`` and keep ``rank / count <= 0.75``: 74,646 / 25,354, a different split.)
- **Training**: tastemaker learns the train ratings *as a stream*, in time order, each as the
  replay sends it: a ``play`` then the ``rating``, weighted by the settings' feedback weights, in
  either encoding of `streams.tools.replay` (the play's completion follows the stars, or the play
  has none; both run by default). The baselines are batch models on the same train ratings.
- **Ranking**: each test user's top 10 among the items they did not rate in train
  (``remove_seen=True``).
- **Relevance**: every test rating, whatever its stars (their ranking metrics take all of
  ``rating_true`` as relevant). Metrics are `models.metrics`, averaged over the test users.
- **Beyond accuracy**: `models.metrics.beyond_accuracy` over the test users' lists; an item's
  popularity is its number of train ratings, intra-list similarity the cosine of the items'
  binary train-rater vectors, a list's history its user's train items.

    python -m bench.offline                # writes bench/out/offline.json
    python -m bench.offline --stretch 30   # train timestamps stretched x30 (about 17 years)
    python -m bench.offline --sweep        # + tastemaker settings on this and the prequential bench
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.cooccurrence import CooccurrenceRecommender
from models.feedback import FeedbackWeights
from models.metrics import (
    BEYOND,
    average_precision_at_k,
    beyond_accuracy,
    cosine_similarity,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from models.popularity import DecayedPopularity
from streams.runtime.learning import reference_recommender
from streams.runtime.ranking import Ranking
from streams.settings import Settings, get_settings, load_settings
from streams.tools.datasets import RECBOLE, Rating, fetch_wheel, movielens_100k
from streams.tools.replay import ENCODINGS, Encoding, play_completion

logger = logging.getLogger(__name__)

K = 10
METRICS = ("precision@10", "recall@10", "ndcg@10", "map")
# On the same split and metrics. SAR: MS Recommenders' sar_movielens notebook; BiVAE: their ML-100K
# benchmark table; batch cosine kNN: an approximate figure commonly quoted, not one exact run.
PUBLISHED: dict[str, dict[str, float]] = {
    "SAR (MS Recommenders)": {"precision@10": 0.331, "recall@10": 0.176, "ndcg@10": 0.3825,
                              "map": 0.1106},
    "batch cosine kNN (approx.)": {"precision@10": 0.35, "ndcg@10": 0.41},
    "BiVAE (MS Recommenders)": {"precision@10": 0.412, "ndcg@10": 0.475},
}
PREQUENTIAL_LIMIT = 40_000  # the prequential bench's slice for the sweep (bench.quality)
PREQUENTIAL_EVAL_SHARE = 0.1
PREQUENTIAL_SEED = 7

Ranker = Callable[[str, frozenset[str]], list[str]]  # (user, items seen in train) -> top K


# --- data -----------------------------------------------------------------------------------------
def ratings_in_file_order(cache_dir: Path) -> list[Rating]:
    """ML-100K ratings in the file's own order: the order MS Recommenders draws its split in
    (`movielens_100k` returns them sorted by time)."""
    package, version, stem = RECBOLE
    with zipfile.ZipFile(fetch_wheel(package, version, cache_dir)) as zf:
        lines = zf.read(stem + ".inter").decode("utf-8").splitlines()[1:]
    out = []
    for line in lines:
        user, item, rating, ts = line.split("\t")
        out.append(Rating(user, item, float(rating), float(ts)))
    return out


def time_order(ratings: Sequence[Rating]) -> list[Rating]:
    """The stream's order, as `movielens_100k` sorts: (timestamp, user, item), ids as numbers."""
    return sorted(ratings, key=lambda r: (r.ts, int(r.user_id), int(r.item_id)))


def stratified_split(ratings: Sequence[Rating], *, ratio: float = 0.75, seed: int = 42
                     ) -> tuple[list[Rating], list[Rating]]:
    """Per-user random split with the semantics of MS Recommenders' ``python_stratified_split``
    (<= 1.1, see the module docstring); ``ratings`` in the file's order, both parts come back in
    time order.

    >>> rs = [Rating("1", str(i), 4.0, float(i)) for i in range(10)] + [Rating("2", "0", 3.0, 0.0)]
    >>> train, test = stratified_split(rs, seed=42)
    >>> len(train), sorted(r.item_id for r in test)  # round(7.5) = 8 and round(0.75) = 1 to train
    (9, ['3', '6'])
    """
    by_user: defaultdict[str, list[Rating]] = defaultdict(list)
    for r in ratings:
        by_user[r.user_id].append(r)
    train, test = [], []
    for user in sorted(by_user, key=_natural):
        rows = by_user[user]
        # pandas' sample(frac=1, random_state=seed) is RandomState(seed).choice(n, n, False),
        # which is RandomState(seed).permutation(n)
        shuffled = [rows[k] for k in np.random.RandomState(seed).permutation(len(rows))]
        cut = round(ratio * len(rows))  # Python's round: half to even, as theirs
        train += shuffled[:cut]
        test += shuffled[cut:]
    return time_order(train), time_order(test)


def _natural(user_id: str) -> tuple[int, int | str]:
    return (0, int(user_id)) if user_id.isdigit() else (1, user_id)


def seen_by_user(ratings: Sequence[Rating]) -> dict[str, frozenset[str]]:
    items: defaultdict[str, set[str]] = defaultdict(set)
    for r in ratings:
        items[r.user_id].add(r.item_id)
    return {user: frozenset(s) for user, s in items.items()}


# --- models ---------------------------------------------------------------------------------------
def learn_stream(model: CooccurrenceRecommender, train: Sequence[Rating],
                 weights: FeedbackWeights, encoding: Encoding = "completion") -> None:
    """Learn ``train`` (time order) as the replay sends it: a play, then the rating."""
    for r in train:
        completion = play_completion(r.rating, encoding)
        model.learn_one(r.user_id, r.item_id,
                        weight=weights.for_play(completion=completion), ts=r.ts)
        model.learn_one(r.user_id, r.item_id, weight=weights.for_rating(r.rating), ts=r.ts)


def tastemaker_ranker(model: CooccurrenceRecommender, ranking: Ranking | None = None) -> Ranker:
    """Top K from the model, with its neighbour lists refreshed once (what ``fresh=True`` gives,
    without recomputing them per user). Train items a user's capped history has evicted are not
    excluded by the model, so a few more are asked for and those filtered out. With ``ranking``
    the list is served as the workers serve it (its ranker and controls)."""
    model.items.refresh()

    def rank(user: str, seen: frozenset[str]) -> list[str]:
        history = model.histories.get(user)
        evicted = len(seen - history.items.keys()) if history is not None else 0
        if ranking is not None and history is not None:
            recs = ranking.top(model.items, user, history, K + evicted)
        else:
            recs = model.recommend(user, K + evicted, explain=False)
        return [r.item_id for r in recs if r.item_id not in seen][:K]

    return rank


class CosineItemKNN:
    """Batch item-kNN on the binary user x item train matrix: ``sim(i, j)`` is the cosine of the
    two item columns; an item's score for a user sums its similarity to each of the user's train
    items, each of those keeping only its ``neighbours`` most similar items (None: all)."""

    def __init__(self, train: Sequence[Rating], *, neighbours: int | None = None) -> None:
        users = sorted({r.user_id for r in train}, key=int)
        self.items = sorted({r.item_id for r in train}, key=int)
        self._user = {u: k for k, u in enumerate(users)}
        item = {i: k for k, i in enumerate(self.items)}
        x = np.zeros((len(users), len(self.items)))
        for r in train:
            x[self._user[r.user_id], item[r.item_id]] = 1.0
        co = x.T @ x
        norm = np.sqrt(np.diag(co))
        sim = co / np.outer(norm, norm)
        np.fill_diagonal(sim, 0.0)
        if neighbours is not None and neighbours < len(self.items) - 1:
            weak = np.argpartition(-sim, neighbours, axis=1)[:, neighbours:]
            np.put_along_axis(sim, weak, 0.0, axis=1)
        self._scores = x @ sim
        self._seen = x.astype(bool)

    def rank(self, user: str, seen: frozenset[str]) -> list[str]:
        u = self._user[user]
        scores = np.where(self._seen[u], -np.inf, self._scores[u])
        top = np.argsort(-scores, kind="stable")[:K]
        return [self.items[t] for t in top if np.isfinite(scores[t])]


def popularity_ranker(train: Sequence[Rating]) -> Ranker:
    """Most rated train items (no decay), the user's train items left out."""
    model = DecayedPopularity(half_life_days=1e9)  # no decay: a batch popularity
    for r in train:
        model.learn_one(r.user_id, r.item_id, weight=1.0, ts=r.ts)

    def rank(user: str, seen: frozenset[str]) -> list[str]:
        return model.recommend(user, K)  # the model leaves out what it saw the user rate

    return rank


# --- evaluation -----------------------------------------------------------------------------------
def evaluate(rank: Ranker, train_seen: Mapping[str, frozenset[str]],
             relevant: Mapping[str, frozenset[str]], *, yardstick: Yardstick | None = None
             ) -> dict[str, float]:
    """The four metrics averaged over the users with test ratings; with ``yardstick``, the
    beyond-accuracy measures of the same lists too."""
    totals = dict.fromkeys(METRICS, 0.0)
    lists, histories = [], []
    for user, rel in relevant.items():
        seen = train_seen.get(user, frozenset())
        ranked = rank(user, seen)
        totals["precision@10"] += precision_at_k(ranked, rel, K)
        totals["recall@10"] += recall_at_k(ranked, rel, K)
        totals["ndcg@10"] += ndcg_at_k(ranked, rel, K)
        totals["map"] += average_precision_at_k(ranked, rel, K)
        lists.append(ranked)
        histories.append(sorted(seen))
    out = {m: round(v / len(relevant), 4) for m, v in totals.items()}
    if yardstick is not None:
        out |= beyond_accuracy(lists, histories, counts=yardstick.counts,
                               catalogue=yardstick.catalogue, similarity=yardstick.similarity,
                               k=K)
    return out


@dataclass(frozen=True, slots=True)
class Yardstick:
    """What the beyond-accuracy measures compare with: train ratings per item, the catalogue
    (every item of the data set) and the items' cosine similarity over the train raters."""

    counts: dict[str, float]
    catalogue: list[str]
    similarity: Callable[[str, str], float]

    @classmethod
    def of(cls, train: Sequence[Rating], catalogue: Sequence[str]) -> Yardstick:
        counts: dict[str, float] = {}
        for r in train:
            counts[r.item_id] = counts.get(r.item_id, 0) + 1
        return cls(counts, sorted(catalogue, key=_natural),
                   cosine_similarity((r.user_id, r.item_id) for r in train))


@dataclass(frozen=True, slots=True)
class Split:
    train: list[Rating]  # time order
    train_seen: dict[str, frozenset[str]]
    relevant: dict[str, frozenset[str]]
    catalogue: frozenset[str] = frozenset()  # every item of the data set

    @classmethod
    def of(cls, cache_dir: Path, seed: int, *, stretch: float = 1.0) -> Split:
        from bench.quality import stretch_time

        ratings = ratings_in_file_order(cache_dir)
        train, test = stratified_split(stretch_time(ratings, stretch), seed=seed)
        return cls(train, seen_by_user(train), seen_by_user(test),
                   frozenset(r.item_id for r in ratings))

    def yardstick(self) -> Yardstick:
        return Yardstick.of(self.train, sorted(self.catalogue))


def offline_tastemaker(split: Split, settings: Settings, *, encoding: Encoding = "completion",
                       yardstick: Yardstick | None = None) -> dict[str, float]:
    started = time.perf_counter()
    model = reference_recommender(settings)
    learn_stream(model, split.train, settings.feedback_weights(), encoding)
    ranking = Ranking(settings)
    rank = tastemaker_ranker(model, ranking if ranking.adjusting else None)
    result = evaluate(rank, split.train_seen, split.relevant, yardstick=yardstick)
    return result | {"seconds": round(time.perf_counter() - started, 1)}


def offline_table(split: Split, settings: Settings, *,
                  encodings: Sequence[Encoding] = ENCODINGS) -> dict[str, dict[str, float]]:
    """tastemaker with ``settings`` (in each encoding) beside the batch baselines."""
    yardstick = split.yardstick()
    table = {}
    for encoding in encodings:
        name = "tastemaker-cooccurrence" + ("" if encoding == "completion" else f" ({encoding})")
        table[name] = offline_tastemaker(split, settings, encoding=encoding,
                                         yardstick=yardstick)
    for name, neighbours in [("batch-cosine-knn (k=all)", None), ("batch-cosine-knn (k=100)", 100)]:
        started = time.perf_counter()
        knn = CosineItemKNN(split.train, neighbours=neighbours)
        table[name] = evaluate(knn.rank, split.train_seen, split.relevant,
                               yardstick=yardstick) | {
            "seconds": round(time.perf_counter() - started, 1)}
    table["popularity"] = evaluate(popularity_ranker(split.train), split.train_seen,
                                   split.relevant, yardstick=yardstick)
    return table


# --- sweep ----------------------------------------------------------------------------------------
# Settings overrides (the names of `streams.settings.Settings`). Not a grid: time decay is what
# costs most offline, so the path removes it first, then changes one thing at a time on top.
NO_DECAY = {"half_life_days": 3650.0, "recency_half_life": 1e6, "recent_items": 500}
STARS = {"feedback_rating": 0.0}  # affinity = play completion = 0.2 * stars: low ratings count
WIDE = {"neighbour_cap": 1000, "row_cap": 2000}  # ~all of ML-100K's 1,682 items
SWEEP: dict[str, dict[str, Any]] = {
    "defaults": {},
    "half_life=3650d": {"half_life_days": 3650.0},
    "no decay (hl 3650d, recency off, recent 500)": NO_DECAY,
    "no decay + rating_centre=1": NO_DECAY | {"feedback_rating_centre": 1.0},
    "no decay + rating_weight=0": NO_DECAY | STARS,
    "no decay + rating_weight=0 + alpha=0.7": NO_DECAY | STARS | {"similarity_alpha": 0.7},
    "no decay + rating_weight=0 + neighbours=1000": NO_DECAY | STARS | WIDE,
    # positional recency kept (half-life 200 of the user's items): what the prequential bench likes
    "balanced: no decay + recency_hl=200 + rating_weight=0 + neighbours=1000":
        NO_DECAY | {"recency_half_life": 200.0} | STARS | WIDE,
}


def sweep_one(name: str, overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    """One configuration on both benches (run in a worker process)."""
    from bench.quality import run as prequential

    settings = load_settings(**overrides)
    split = Split.of(settings.cache_dir, seed)
    offline = offline_tastemaker(split, settings)
    ratings, _ = movielens_100k(settings.cache_dir)
    started = time.perf_counter()
    scores = prequential(ratings[:PREQUENTIAL_LIMIT], eval_share=PREQUENTIAL_EVAL_SHARE,
                         seed=PREQUENTIAL_SEED,
                         models={name: lambda: reference_recommender(settings)},
                         feedback=settings.feedback_weights())
    preq = scores[name].as_dict()
    return {"overrides": overrides, "offline": offline,
            "prequential": {"recall@10": preq["recall@10"], "ndcg@10": preq["ndcg@10"],
                            "seconds": round(time.perf_counter() - started, 1)}}


def prequential_popularity() -> dict[str, float]:
    from bench.quality import run as prequential

    settings = get_settings()
    ratings, _ = movielens_100k(settings.cache_dir)
    scores = prequential(ratings[:PREQUENTIAL_LIMIT], eval_share=PREQUENTIAL_EVAL_SHARE,
                         seed=PREQUENTIAL_SEED,
                         models={"popularity-decayed": lambda: DecayedPopularity(
                             half_life_days=settings.half_life_days)},
                         feedback=settings.feedback_weights())
    return scores["popularity-decayed"].as_dict()


def run_configs(configs: Mapping[str, dict[str, Any]], seed: int, workers: int
                ) -> dict[str, dict[str, Any]]:
    # the slowest (widest neighbour lists) first, so the workers finish together
    slow_first = sorted(configs, key=lambda name: -configs[name].get("neighbour_cap", 0))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {name: pool.submit(sweep_one, name, configs[name], seed) for name in slow_first}
        return {name: futures[name].result() for name in configs}


# --- report ---------------------------------------------------------------------------------------
def print_table(table: Mapping[str, Mapping[str, float]], title: str) -> None:
    print(f"\n{title}")
    print(f"{'model':34} " + " ".join(f"{m:>12}" for m in METRICS))
    for name, row in table.items():
        print(f"{name:34} " + " ".join(
            f"{row[m]:>12.4f}" if m in row else f"{'-':>12}" for m in METRICS))


def print_beyond(table: Mapping[str, Mapping[str, float]]) -> None:
    print(f"\n{'model':34} " + " ".join(f"{m[:12]:>12}" for m in BEYOND))
    for name, row in table.items():
        print(f"{name:34} " + " ".join(
            f"{row[m]:>12.4f}" if m in row else f"{'-':>12}" for m in BEYOND))


def plot_sweep(sweep: Mapping[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 6))
    for number, (name, r) in enumerate(sweep.items(), start=1):
        x, y = r["offline"]["ndcg@10"], r["prequential"]["recall@10"]
        ax.scatter(x, y, color="C3" if name == "defaults" else "C0", label=f"{number}: {name}")
        ax.annotate(str(number), (x, y), fontsize=8, xytext=(4, 3), textcoords="offset points")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, handlelength=0.8)
    ax.set_xlabel("offline nDCG@10 (MS Recommenders protocol, ML-100K)")
    ax.set_ylabel(f"prequential Recall@10 (first {PREQUENTIAL_LIMIT:,} ratings)")
    ax.set_title("tastemaker settings on both benches")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--stretch", type=float, default=1.0,
                        help="multiply the time since the first rating by this")
    parser.add_argument("--encoding", choices=[*ENCODINGS, "both"], default="both")
    parser.add_argument("--sweep", action="store_true",
                        help="also run tastemaker settings on this and the prequential bench")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=Path("bench/out/offline.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    settings = get_settings()
    split = Split.of(settings.cache_dir, args.seed, stretch=args.stretch)
    n_test = sum(len(v) for v in split.relevant.values())
    print(f"split seed {args.seed}: {len(split.train):,} train / {n_test:,} test ratings, "
          f"{len(split.relevant)} test users, time x{args.stretch:g}")
    encodings = ENCODINGS if args.encoding == "both" else (args.encoding,)
    table = offline_table(split, settings, encodings=encodings)
    print_table(table, "this run (python -m bench.offline)")
    print_beyond(table)
    print_table(PUBLISHED, "published, same protocol")
    ours, knn = next(iter(table.values())), table["batch-cosine-knn (k=all)"]
    result: dict[str, Any] = {
        "protocol": "MS Recommenders python_stratified_split(ratio=0.75), top-10 of unseen items, "
                    "all test ratings relevant",
        "seed": args.seed, "stretch": args.stretch, "train_ratings": len(split.train),
        "test_ratings": n_test,
        "test_users": len(split.relevant), "models": table, "published": PUBLISHED,
        "ndcg_ratio_vs_batch_knn": round(ours["ndcg@10"] / knn["ndcg@10"], 3),
    }
    if args.sweep:
        started = time.perf_counter()
        sweep = run_configs(SWEEP, args.seed, args.workers)
        pop = prequential_popularity()
        result["sweep"] = sweep
        result["sweep_prequential_popularity"] = pop
        result["sweep_seconds"] = round(time.perf_counter() - started, 1)
        print(f"\nsweep ({result['sweep_seconds']} s): offline on this split; prequential "
              f"bench.quality.run on the first {PREQUENTIAL_LIMIT:,} ratings, eval_share "
              f"{PREQUENTIAL_EVAL_SHARE}, seed {PREQUENTIAL_SEED}")
        print(f"{'configuration':72} {'P@10':>7} {'R@10':>7} {'nDCG':>7} {'MAP':>7} "
              f"{'preqR@10':>9} {'preqnDCG':>9}")
        for name, r in sweep.items():
            o, p = r["offline"], r["prequential"]
            print(f"{name[:72]:72} {o['precision@10']:>7.4f} {o['recall@10']:>7.4f} "
                  f"{o['ndcg@10']:>7.4f} {o['map']:>7.4f} {p['recall@10']:>9.4f} "
                  f"{p['ndcg@10']:>9.4f}")
        print(f"{'popularity-decayed (prequential baseline)':72} {'':>7} {'':>7} {'':>7} "
              f"{'':>7} {pop['recall@10']:>9.4f} {pop['ndcg@10']:>9.4f}")
        plot_sweep(sweep, args.out.with_name(args.out.stem + "_sweep.png"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\ntastemaker nDCG@10 / batch cosine kNN: {result['ndcg_ratio_vs_batch_knn']}"
          f"  -> {args.out}")


if __name__ == "__main__":
    main()
