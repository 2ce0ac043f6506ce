"""Prequential review sentiment: score each labelled review, then learn it, one at a time.

All 33,530 IMDB + Rotten Tomatoes texts in a seeded shuffled order, three readers side by side on
the same stream:

- ``river``: ``models.sentiment.ReviewSentiment`` (predict, then learn);
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

    python -m bench.sentiment                 # all texts, seed 7
    python -m bench.sentiment --limit 5000    # a slice
    python -m bench.sentiment --variants      # also the candidate pipelines compared in the model
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

from models.sentiment import ReviewSentiment, clean_text, tokenize
from streams.datasets import LabelledReview, labelled_reviews
from streams.settings import get_settings

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


class RiverPipelineScorer:
    """A river pipeline taking the raw text, seen through the ``OnlineScorer`` interface."""

    def __init__(self, pipeline: object) -> None:
        self.pipeline = pipeline

    def predict_proba_one(self, text: str) -> float:
        return self.pipeline.predict_proba_one(text).get(True, 0.5)

    def learn_one(self, text: str, positive: bool) -> None:
        self.pipeline.learn_one(text, positive)


def unique_tokens(text: str) -> list[str]:
    """Each unigram/bigram once: binary term presence, for the naive Bayes variant."""
    return list(dict.fromkeys(tokenize(text, ngrams=2)))


def river_tfidf_logreg() -> RiverPipelineScorer:
    """The chosen configuration as river's own pipeline (re-tokenises on every call)."""
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


def _reviewsentiment(**options: object) -> Callable[[], OnlineScorer]:
    def build() -> OnlineScorer:
        return ReviewSentiment(**options)

    return build


# river's ComplementNB is left out: its predict_proba_one walks the whole vocabulary.
VARIANTS: dict[str, Callable[[], OnlineScorer]] = {
    "tfidf 1g + logreg lr=2 (chosen)": _reviewsentiment(),
    "tfidf 1g + logreg lr=5": _reviewsentiment(lr=5.0, intercept_lr=0.05),
    "tfidf 1-2g + logreg lr=5": _reviewsentiment(ngrams=2, lr=5.0, intercept_lr=0.05),
    "binary 1-2g + logreg lr=3": _reviewsentiment(
        weighting="binary", ngrams=2, lr=3.0, intercept_lr=0.03
    ),
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
    "river": "river: ReviewSentiment (TF-IDF + LogReg)",
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
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)

    stream = labelled_reviews(get_settings().cache_dir)
    random.Random(args.seed).shuffle(stream)
    if args.limit is not None:
        stream = stream[: args.limit]
    labels = np.array([r.positive for r in stream])
    print(f"{len(stream):,} texts, seed {args.seed}, warm-up {args.warmup:,}", flush=True)

    # The box is shared, so the model's throughput is the best of --repeats identical passes
    # (fresh model each); the scores must agree bit for bit across them.
    river_runs = []
    for _ in range(args.repeats):
        model = ReviewSentiment()
        river_runs.append(run_learner("river", model, stream))
    first = river_runs[0]
    deterministic = all(np.array_equal(r.scores, first.scores) for r in river_runs)
    river = Run("river", first.scores, first.predicted,
                min(r.wall_s for r in river_runs), min(r.cpu_s for r in river_runs))
    runs = [river, run_vader(stream), run_majority(stream)]
    results = {run.name: summarise(run, labels, args.warmup) for run in runs}
    results["river"]["passes_wall_s"] = [round(r.wall_s, 2) for r in river_runs]
    results["river"]["deterministic_across_passes"] = deterministic
    print(table(results), flush=True)

    state = model.to_state()
    state_json = json.dumps(state)
    report: dict = {
        "command": " ".join(["python -m bench.sentiment", *(argv if argv is not None
                                                              else sys.argv[1:])]),
        "n_texts": len(stream),
        "positives": int(labels.sum()),
        "seed": args.seed,
        "warmup": args.warmup,
        "vader_threshold": VADER_THRESHOLD,
        "model": {
            "class": "models.sentiment.ReviewSentiment",
            "config": state["config"],
            "n_terms": model.n_terms,
            "state_json_bytes": len(state_json),
        },
        "throughput_note": "river: best of --repeats passes; vader, variants: one pass",
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
    print(f"state: {model.n_terms:,} terms, {len(state_json) / 1e6:.1f} MB JSON;"
          f" river passes {results['river']['passes_wall_s']} s,"
          f" deterministic: {deterministic}")
    print(f"wrote {args.out / 'sentiment.json'} and {args.out / 'sentiment.png'}")
    return report


if __name__ == "__main__":
    main()
