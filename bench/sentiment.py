"""Prequential review sentiment: score each labelled review, then learn it, one at a time.

All 33,530 IMDB + Rotten Tomatoes texts in a seeded shuffled order, three readers side by side on
the same stream:

- ``tastemaker``: ``models.sentiment.ReviewSentiment`` (predict, then learn);
- ``vader``: VADER's compound score on the text with HTML tags stripped; positive when
  compound >= 0.05 (VADER's own documented cut-off for "positive"); AUC from the compound score;
- ``majority``: no lexicon, no text — its score is the share of positives among the labels seen so
  far (0.5 before any), positive when that share is >= 0.5. Its AUC is computed from that score
  like the others' (about 0.5 on a shuffled stream, not set to 0.5).

Accuracy and exact ROC AUC (ties count half) are reported overall and after the warm-up (the first
``--warmup`` texts dropped). Throughput is learn+predict calls on in-memory texts in one thread
(wall and CPU clocks; nothing else is timed); for the model it is the best of ``--repeats`` passes,
since a shared box's neighbours can halve a single pass. Writes ``bench/out/sentiment.json`` and
``bench/out/sentiment.png`` (rolling accuracy over the stream).

``--curve`` measures learning curves instead (issue 14), the case a new deployment meets: short
texts (<= 300 characters: the Rotten Tomatoes snippets and the shortest IMDB reviews) and long
ones (the other IMDB reviews) apart; in a seeded order, the last 2,000 short / 3,000 long texts are
a fixed held-out set; each model learns the first N of the rest online and scores the held-out set
at N = 250, 500, 1k, 2k, 5k, 10k (where there are that many). Rows: tastemaker, TF-IDF + logistic
regression (the model before issue 14, `bench.sentiment_baselines.TfidfLogReg`), river's
MultinomialNB on a bag of words, VADER (no learning); with ``--variants``, also tastemaker with
other settings (`CURVE_VARIANTS`). It also times tastemaker's learn + predict on
all 33,530 texts (CPU clock), measures its snapshot, and checks that two processes learning the
same texts write the same snapshot bytes. Writes ``sentiment_curve.json`` and
``sentiment_curve.png`` to ``--out`` (docs/results for the committed figures).

    python -m bench.sentiment                 # all texts, seed 7
    python -m bench.sentiment --limit 5000    # a slice
    python -m bench.sentiment --variants      # also the candidate pipelines compared in the model
    python -m bench.sentiment --curve --out docs/results
    python -m bench.sentiment --summaries --out docs/results

``--summaries`` evaluates the per-item review summaries (`models.summary`): MovieLens-100K replayed
as the demo does (`streams.tools.replay.movielens_events`, real review texts of the rating's
polarity, one sentiment model per reviews partition as in the workers); over the items with at least
10 reviews, the Spearman correlation between the summary's sentiment (mean P(positive) of its
sentences) and the item's mean review P(positive); a few summaries printed. Writes
``summaries.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import random
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from bench.sentiment_baselines import (
    RiverPipelineScorer,
    TfidfLogReg,
    river_multinomial_nb,
)
from models.sentiment import ReviewSentiment, clean_text, tokenize
from streams.settings import get_settings
from streams.tools.datasets import LabelledReview, labelled_reviews

logger = logging.getLogger(__name__)

VADER_THRESHOLD = 0.05
_TAG = re.compile(r"<[^>]*>")


class OnlineScorer(Protocol):
    def predict_proba_one(self, text: str) -> float: ...
    def learn_one(self, text: str, positive: bool) -> None: ...


def roc_auc(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks, so tied scores count half).

    >>> roc_auc([False, False, True, True], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([False, True, False, True], [0.5, 0.5, 0.5, 0.5])
    0.5
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def strip_html(text: str) -> str:
    """Drop tags, unescape entities; case and punctuation stay, since VADER reads both."""
    return html.unescape(_TAG.sub(" ", text))


@dataclass(slots=True)
class Run:
    name: str
    scores: np.ndarray
    predicted: np.ndarray
    wall_s: float
    cpu_s: float


def run_learner(name: str, model: OnlineScorer, stream: Sequence[LabelledReview]) -> Run:
    """Prequential: score each text, then learn its label. Only the model calls are in the loop."""
    scores = np.empty(len(stream))
    predict, learn = model.predict_proba_one, model.learn_one
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i, review in enumerate(stream):
        scores[i] = predict(review.text)
        learn(review.text, review.positive)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Run(name, scores, scores >= 0.5, wall, cpu)


def run_vader(stream: Sequence[LabelledReview]) -> Run:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    texts = [strip_html(r.text) for r in stream]  # outside the timed loop: input preparation
    scores = np.empty(len(stream))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i, text in enumerate(texts):
        scores[i] = analyzer.polarity_scores(text)["compound"]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Run("vader", scores, scores >= VADER_THRESHOLD, wall, cpu)


def run_majority(stream: Sequence[LabelledReview]) -> Run:
    scores = np.empty(len(stream))
    positives = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i, review in enumerate(stream):
        scores[i] = positives / i if i else 0.5
        positives += review.positive
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Run("majority", scores, scores >= 0.5, wall, cpu)


def summarise(run: Run, labels: np.ndarray, warmup: int) -> dict:
    correct = run.predicted == labels
    after = slice(warmup, None)
    n = len(labels)
    return {
        "accuracy": round(float(correct.mean()), 4),
        "roc_auc": round(roc_auc(labels, run.scores), 4),
        "accuracy_after_warmup": round(float(correct[after].mean()), 4),
        "roc_auc_after_warmup": round(roc_auc(labels[after], run.scores[after]), 4),
        "reviews_per_s_wall": round(n / run.wall_s) if run.wall_s else None,
        "reviews_per_s_cpu": round(n / run.cpu_s) if run.cpu_s else None,
        "seconds_wall": round(run.wall_s, 2),
    }


def rolling_accuracy(correct: np.ndarray, window: int) -> np.ndarray:
    """Trailing-window accuracy at each position from ``window`` on."""
    csum = np.concatenate([[0], np.cumsum(correct, dtype=float)])
    return (csum[window:] - csum[:-window]) / window


# --- candidate pipelines (--variants) -----------------------------------------------------------


def unique_tokens(text: str) -> list[str]:
    """Each unigram/bigram once: binary term presence, for the naive Bayes variant."""
    return list(dict.fromkeys(tokenize(text, ngrams=2)))


def river_tfidf_logreg() -> RiverPipelineScorer:
    """The TF-IDF + LogReg baseline as river's own pipeline (re-tokenises on every call)."""
    from river import feature_extraction, linear_model, optim

    return RiverPipelineScorer(
        feature_extraction.TFIDF(preprocessor=clean_text, tokenizer=tokenize)
        | linear_model.LogisticRegression(optimizer=optim.SGD(2.0), intercept_lr=0.02)
    )


def river_binary_mnb() -> RiverPipelineScorer:
    from river import feature_extraction, naive_bayes

    return RiverPipelineScorer(
        feature_extraction.BagOfWords(preprocessor=clean_text, tokenizer=unique_tokens)
        | naive_bayes.MultinomialNB(alpha=1.0)
    )


def _build(cls: Callable[..., OnlineScorer], **options: object) -> Callable[[], OnlineScorer]:
    def build() -> OnlineScorer:
        return cls(**options)

    return build


# river's ComplementNB is left out: its predict_proba_one walks the whole vocabulary.
VARIANTS: dict[str, Callable[[], OnlineScorer]] = {
    "tastemaker, no lexicon prior": _build(ReviewSentiment, prior=0.0),
    "tfidf 1g + logreg lr=2 (before issue 14)": _build(TfidfLogReg),
    "tfidf 1-2g + logreg lr=5": _build(TfidfLogReg, ngrams=2, lr=5.0, intercept_lr=0.05),
    "river TFIDF|LogReg pipeline, 1g lr=2": river_tfidf_logreg,
    "river binary BoW 1-2g | MultinomialNB": river_binary_mnb,
}


# --- main ---------------------------------------------------------------------------------------


def table(rows: dict[str, dict]) -> str:
    lines = [f"{'':40s} {'acc':>6s} {'AUC':>6s} {'acc>wu':>7s} {'AUC>wu':>7s}"
             f" {'rev/s':>7s} {'cpu/s':>7s} {'terms':>9s}"]
    for name, r in rows.items():
        lines.append(
            f"{name:40s} {r['accuracy']:6.4f} {r['roc_auc']:6.4f} {r['accuracy_after_warmup']:7.4f}"
            f" {r['roc_auc_after_warmup']:7.4f} {r['reviews_per_s_wall'] or 0:7d}"
            f" {r['reviews_per_s_cpu'] or 0:7d} {r.get('n_terms') or '':>9}"
        )
    return "\n".join(lines)


PLOT_LABELS = {
    "tastemaker": "tastemaker: ReviewSentiment (NB prior + NB-LR + n-gram LR stack)",
    "vader": f"VADER (compound >= {VADER_THRESHOLD})",
    "majority": "majority label so far",
}


def plot(runs: Sequence[Run], labels: np.ndarray, window: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = np.arange(window, len(labels) + 1)
    for run in runs:
        ax.plot(x, rolling_accuracy(run.predicted == labels, window),
                label=PLOT_LABELS.get(run.name, run.name), linewidth=1.2)
    ax.set_xlabel("reviews seen (stream position)")
    ax.set_ylabel(f"accuracy over the last {window:,} reviews")
    ax.set_title(title)
    ax.set_ylim(0.3, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="first N texts of the shuffle")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--window", type=int, default=1_000, help="rolling accuracy window")
    parser.add_argument("--variants", action="store_true", help="also run the candidates")
    parser.add_argument("--repeats", type=int, default=3, help="model passes; best time counts")
    parser.add_argument("--summaries", action="store_true",
                        help="evaluate per-item review summaries (see the module doc)")
    parser.add_argument("--curve", action="store_true",
                        help="learning curves, short and long texts apart (see the module doc)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)

    command = " ".join(["python -m bench.sentiment", *(argv if argv is not None
                                                        else sys.argv[1:])])
    stream = labelled_reviews(get_settings().cache_dir)
    random.Random(args.seed).shuffle(stream)
    if args.curve:
        return curve_main(stream, args, command)
    if args.summaries:
        return summaries_main(stream, args, command)
    if args.limit is not None:
        stream = stream[: args.limit]
    labels = np.array([r.positive for r in stream])
    print(f"{len(stream):,} texts, seed {args.seed}, warm-up {args.warmup:,}", flush=True)

    # The box is shared, so the model's throughput is the best of --repeats identical passes
    # (fresh model each); the scores must agree bit for bit across them.
    model_runs = []
    for _ in range(args.repeats):
        model = ReviewSentiment()
        model_runs.append(run_learner("tastemaker", model, stream))
    first = model_runs[0]
    deterministic = all(np.array_equal(r.scores, first.scores) for r in model_runs)
    best = Run("tastemaker", first.scores, first.predicted,
               min(r.wall_s for r in model_runs), min(r.cpu_s for r in model_runs))
    runs = [best, run_vader(stream), run_majority(stream)]
    results = {run.name: summarise(run, labels, args.warmup) for run in runs}
    results["tastemaker"]["passes_wall_s"] = [round(r.wall_s, 2) for r in model_runs]
    results["tastemaker"]["deterministic_across_passes"] = deterministic
    print(table(results), flush=True)

    snapshot = model.to_bytes()
    report: dict = {
        "command": command,
        "n_texts": len(stream),
        "positives": int(labels.sum()),
        "seed": args.seed,
        "warmup": args.warmup,
        "vader_threshold": VADER_THRESHOLD,
        "model": {
            "class": "models.sentiment.ReviewSentiment",
            "config": model.config(),
            "snapshot_bytes": len(snapshot),
        },
        "throughput_note": "tastemaker: best of --repeats passes; vader, variants: one pass",
        "results": results,
    }

    if args.variants:
        variants = {}
        for name, build in VARIANTS.items():
            candidate = build()
            run = run_learner(name, candidate, stream)
            variants[name] = summarise(run, labels, args.warmup)
            variants[name]["n_terms"] = getattr(candidate, "n_terms", None)
            print(table({name: variants[name]}).splitlines()[1], flush=True)
        report["variants"] = variants
        print(table(variants))

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sentiment.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(runs, labels, min(args.window, len(stream)), args.out / "sentiment.png",
         f"Prequential review sentiment, {len(stream):,} texts (seed {args.seed})")
    print(f"snapshot: {len(snapshot) / 1e6:.2f} MB npz;"
          f" passes {results['tastemaker']['passes_wall_s']} s,"
          f" deterministic: {deterministic}")
    print(f"wrote {args.out / 'sentiment.json'} and {args.out / 'sentiment.png'}")
    return report


# --- learning curves (--curve) ------------------------------------------------------------------

CURVE_N = (250, 500, 1_000, 2_000, 5_000, 10_000)
SHORT_CHARS = 300
HELD_OUT = {"short": 2_000, "long": 3_000}
CURVE_ROWS: dict[str, Callable[[], OnlineScorer]] = {
    "tastemaker": ReviewSentiment,
    "tfidf_logreg": TfidfLogReg,
    "river_mnb": river_multinomial_nb,
}
# --curve --variants: the choices behind the defaults, same split
CURVE_VARIANTS: dict[str, Callable[[], OnlineScorer]] = {
    "tastemaker, no character n-grams": _build(ReviewSentiment, char_lr=0.0),
    "tastemaker, lexicon weight 8, LR step 8 (the defaults before)": _build(
        ReviewSentiment, prior=8.0, lr=8.0),
    "tastemaker, no lexicon prior": _build(ReviewSentiment, prior=0.0),
    "tastemaker, lexicon weight 8": _build(ReviewSentiment, prior=8.0),
    "tastemaker, LR step 8": _build(ReviewSentiment, lr=8.0),
    "tastemaker, 131,072 word buckets": _build(ReviewSentiment, n_buckets=1 << 17),
}
CURVE_LABELS = {
    "tastemaker": "tastemaker (NB lexicon prior + NB-LR + n-gram LR stack, hashed)",
    "tfidf_logreg": "TF-IDF + logistic regression (before issue 14)",
    "river_mnb": "river MultinomialNB, bag of words",
    "vader": "VADER compound (no learning)",
}


def split_by_length(stream: Sequence[LabelledReview]) -> dict[str, list[LabelledReview]]:
    """Short (<= 300 characters) and long texts, each in the stream's order."""
    return {"short": [r for r in stream if len(r.text) <= SHORT_CHARS],
            "long": [r for r in stream if len(r.text) > SHORT_CHARS]}


def learning_curve(build: Callable[[], OnlineScorer], train: Sequence[LabelledReview],
                   test: Sequence[LabelledReview], sizes: Sequence[int]) -> list[dict]:
    """One model learns ``train`` online (predict, then learn, as in the stream); at each N of
    ``sizes`` it scores ``test`` without learning it. Prequential, so N labels = the first N."""
    model = build()
    labels = np.array([r.positive for r in test])
    points, done, cpu = [], 0, 0.0
    for n in sizes:
        cpu0 = time.process_time()
        for review in train[done:n]:
            model.predict_proba_one(review.text)
            model.learn_one(review.text, review.positive)
        cpu += time.process_time() - cpu0
        done = n
        scores = np.array([model.predict_proba_one(r.text) for r in test])
        points.append({"n": n, "accuracy": round(float(((scores >= 0.5) == labels).mean()), 4),
                       "roc_auc": round(roc_auc(labels, scores), 4),
                       "learn_cpu_s": round(cpu, 3)})
    return points


def vader_point(test: Sequence[LabelledReview]) -> dict:
    run = run_vader(test)
    labels = np.array([r.positive for r in test])
    return {"accuracy": round(float((run.predicted == labels).mean()), 4),
            "roc_auc": round(roc_auc(labels, run.scores), 4)}


def snapshot_digest_in_subprocess(n: int, seed: int) -> str:
    """sha256 of the snapshot another Python process writes after learning the first ``n``
    texts of the seeded order: crc32 buckets and fsum scores make it the same bytes."""
    import subprocess

    code = ("import hashlib, random; from bench.sentiment import learned_snapshot; "
            f"print(hashlib.sha256(learned_snapshot({n}, {seed})).hexdigest())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**__import__("os").environ,
                                           "PYTHONHASHSEED": "random"})
    return done.stdout.strip()


def learned_snapshot(n: int, seed: int) -> bytes:
    stream = labelled_reviews(get_settings().cache_dir)
    random.Random(seed).shuffle(stream)
    model = ReviewSentiment()
    for review in stream[:n]:
        model.predict_proba_one(review.text)
        model.learn_one(review.text, review.positive)
    return model.to_bytes()


def curve_main(stream: list[LabelledReview], args: argparse.Namespace, command: str) -> dict:
    import hashlib

    report: dict = {"command": command, "seed": args.seed, "short_chars": SHORT_CHARS,
                    "held_out": HELD_OUT, "sizes": list(CURVE_N), "rows": CURVE_LABELS,
                    "curves": {}, "checks": {}}
    for part, texts in split_by_length(stream).items():
        test, train = texts[-HELD_OUT[part]:], texts[:-HELD_OUT[part]]
        sizes = [n for n in CURVE_N if n <= len(train)]
        curves: dict = {"n_train_available": len(train), "n_test": len(test),
                        "test_positives": sum(r.positive for r in test),
                        "skipped_sizes": [n for n in CURVE_N if n > len(train)]}
        rows = {**CURVE_ROWS, **(CURVE_VARIANTS if args.variants else {})}
        for name, build in rows.items():
            curves[name] = learning_curve(build, train, test, sizes)
            print(part, name, " ".join(f"{p['n']}:{p['accuracy']:.3f}/{p['roc_auc']:.3f}"
                                       for p in curves[name]), flush=True)
        curves["vader"] = vader_point(test)
        print(part, "vader", curves["vader"], flush=True)
        report["curves"][part] = curves
        report["checks"][part] = best_at_every_n(curves)

    # throughput: learn + predict on every text, one core, CPU clock; best of --repeats passes
    passes = []
    for _ in range(args.repeats):
        model = ReviewSentiment()
        passes.append(run_learner("tastemaker", model, stream))
    snapshot = model.to_bytes()
    digest_here = hashlib.sha256(learned_snapshot(2_000, args.seed)).hexdigest()
    digest_there = snapshot_digest_in_subprocess(2_000, args.seed)
    report["throughput"] = {
        "texts": len(stream),
        "reviews_per_s_cpu": round(len(stream) / min(r.cpu_s for r in passes)),
        "reviews_per_s_wall": round(len(stream) / min(r.wall_s for r in passes)),
        "passes_cpu_s": [round(r.cpu_s, 2) for r in passes],
        "note": "learn + predict per text, in-memory texts, one thread; best of the passes",
    }
    report["snapshot"] = {"after_texts": len(stream), "bytes": len(snapshot),
                          "bound_bytes": 8 * model.n_buckets + 4 * model.char_buckets,
                          "format": "npz, no pickle"}
    report["determinism"] = {"same_snapshot_in_two_processes": digest_here == digest_there,
                             "sha256": digest_here, "after_texts": 2_000}
    print(json.dumps({k: report[k] for k in ("throughput", "snapshot", "determinism",
                                              "checks")}, indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sentiment_curve.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_curves(report, args.out / "sentiment_curve.png")
    print(f"wrote {args.out / 'sentiment_curve.json'} and {args.out / 'sentiment_curve.png'}")
    return report


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties).

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 25])
    0.8
    """
    def ranks(x: Sequence[float]) -> np.ndarray:
        _, inverse, counts = np.unique(np.asarray(x, dtype=float), return_inverse=True,
                                       return_counts=True)
        return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]

    return round(float(np.corrcoef(ranks(a), ranks(b))[0, 1]), 6)


def summaries_main(reviews: list[LabelledReview], args: argparse.Namespace, command: str
                   ) -> dict:
    from aiokafka.partitioner import DefaultPartitioner

    from models.sentiment import label_from_rating
    from models.summary import ItemSummary, author_tag, digest_review
    from streams.tools.datasets import movielens_100k
    from streams.tools.replay import movielens_events

    settings = get_settings()
    ratings, movies = movielens_100k(settings.cache_dir)
    partitions = list(range(settings.topic_partitions))
    partitioner = DefaultPartitioner()
    models: dict[int, ReviewSentiment] = {}
    summaries: dict[str, ItemSummary] = {}
    stars: dict[str, list[float]] = {}
    cpu0 = time.process_time()
    n_reviews = 0
    for kind, event in movielens_events(ratings, labelled_reviews(settings.cache_dir),
                                        seed=args.seed):
        if kind == "rating":
            stars.setdefault(event["item_id"], []).append(event["rating"])
        if kind != "review":
            continue
        partition = partitioner(event["user_id"].encode(), partitions, partitions)
        model = models.setdefault(partition, ReviewSentiment())
        text = event["text"]
        p = model.predict_proba_one(text)
        digest = digest_review(text, p, model.predict_proba_one,
                               author=author_tag(event["user_id"]))
        label = label_from_rating(event.get("rating"))
        if label is not None:
            model.learn_one(text, label)
        summaries.setdefault(event["item_id"], ItemSummary()).add(digest)
        n_reviews += 1
    cpu = time.process_time() - cpu0
    rich = sorted((i for i, s in summaries.items() if s.count >= 10),
                  key=lambda i: (-summaries[i].count, int(i)))
    mean_p = [summaries[i].mean for i in rich]
    summary_p = [summaries[i].sentiment() for i in rich]
    mean_stars = [float(np.mean(stars[i])) for i in rich]
    sizes = [len(json.dumps(s.to_state())) for s in summaries.values()]
    shown = rich[:2] + [i for i in rich if summaries[i].render()["disagree"]][:2]
    examples = [{"item_id": i, "title": movies[i].title if i in movies else None,
                 **summaries[i].render()} for i in dict.fromkeys(shown)]
    report = {
        "command": command, "seed": args.seed, "reviews": n_reviews,
        "items_with_10_reviews": len(rich),
        "spearman_summary_vs_mean_review_sentiment": spearman(summary_p, mean_p),
        "spearman_summary_vs_mean_stars": spearman(summary_p, mean_stars),
        "spearman_mean_review_sentiment_vs_mean_stars": spearman(mean_p, mean_stars),
        "disagreeing_items": sum(summaries[i].render()["disagree"] for i in rich),
        "state_json_bytes": {"max": max(sizes), "mean": round(float(np.mean(sizes)))},
        "cpu_s_score_digest_learn_merge": round(cpu, 2),
        "note": "review texts are real IMDB/RT reviews of the rating's polarity, drawn at random: "
                "they are not about the MovieLens title they are attached to",
        "examples": examples,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "examples"}, indent=1))
    for example in examples:
        print(f"\n{example['title']} ({example['count']} reviews, mean {example['mean']:.2f},"
              f" disagree: {example['disagree']})")
        for sentence in example["sentences"]:
            print(f"  {sentence['side']} {sentence['text']}")
        print(f"  key phrases: {', '.join(example['phrases'])}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summaries.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'summaries.json'}")
    return report


def best_at_every_n(curves: dict) -> dict:
    """Whether tastemaker is >= the better of NB and LR, in accuracy and in AUC, at every N."""
    misses = []
    for i, point in enumerate(curves["tastemaker"]):
        for metric in ("accuracy", "roc_auc"):
            best = max(curves[row][i][metric] for row in ("river_mnb", "tfidf_logreg"))
            if point[metric] < best:
                misses.append({"n": point["n"], "metric": metric, "tastemaker": point[metric],
                               "best_baseline": best})
    return {"best_at_every_n": not misses, "misses": misses}


def plot_curves(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    for row, part in enumerate(("short", "long")):
        curves = report["curves"][part]
        for col, metric in enumerate(("accuracy", "roc_auc")):
            ax = axes[row][col]
            for name in CURVE_ROWS:
                points = curves[name]
                ax.plot([p["n"] for p in points], [p[metric] for p in points], marker="o",
                        label=CURVE_LABELS[name], linewidth=2 if name == "tastemaker" else 1)
            ax.axhline(curves["vader"][metric], color="grey", linestyle=":",
                       label=CURVE_LABELS["vader"])
            ax.set_xscale("log")
            ax.set_title(f"{part} texts ({curves['n_test']:,} held out): "
                         f"{'accuracy' if metric == 'accuracy' else 'ROC AUC'}", fontsize=10)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("labelled texts learned (N, log scale)")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Review sentiment learning curves (seed {report['seed']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
