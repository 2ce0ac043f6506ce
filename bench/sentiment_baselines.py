"""The review sentiment baselines of ``bench.sentiment``, kept runnable for comparison.

``TfidfLogReg`` is tastemaker's model before issue 14 (TF-IDF → river LogisticRegression, plain
SGD, unbounded vocabulary), moved here unchanged when ``models.sentiment.ReviewSentiment`` became
the hashed NB-prior model; ``river_multinomial_nb`` is river's MultinomialNB on a bag of words.
"""

from __future__ import annotations

import collections
import math
from itertools import repeat
from operator import mul, sub
from typing import Any

from river import feature_extraction, linear_model, naive_bayes, optim, utils

from models.sentiment import MAX_CHARS, clean_text, tokenize

STATE_FORMAT = "tastemaker.TfidfLogReg/1"


class TfidfLogReg:
    """P(positive) of a review text, learned online: TF-IDF → river LogisticRegression (SGD).

    Keyword-only options exist so the bench can compare variants; the defaults are the measured
    choice. Deterministic: no randomness, and river's ``VectorDict.dot`` sums in the input's
    insertion order, which follows the text.
    """

    def __init__(
        self,
        *,
        lr: float = 2.0,
        intercept_lr: float = 0.02,
        weighting: str = "tfidf",
        ngrams: int = 1,
        max_chars: int = MAX_CHARS,
    ) -> None:
        if weighting not in ("tfidf", "binary"):
            raise ValueError(f"weighting must be 'tfidf' or 'binary', got {weighting!r}")
        if ngrams not in (1, 2):
            raise ValueError(f"ngrams must be 1 or 2, got {ngrams!r}")
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars!r}")
        self.lr = float(lr)
        self.intercept_lr = float(intercept_lr)
        self.weighting = weighting
        self.ngrams = ngrams
        self.max_chars = max_chars
        self._clf = linear_model.LogisticRegression(
            optimizer=optim.SGD(self.lr), intercept_lr=self.intercept_lr
        )
        self._df: collections.Counter[str] = collections.Counter()
        self._n = 0
        # The last text's feature vector and the n it was computed at: a prequential
        # predict-then-learn on the same text featurises once. Derived, never serialised.
        self._memo_text: str | None = None
        self._memo_n = -1
        self._memo_x: dict[str, float] = {}

    @property
    def n_learned(self) -> int:
        """How many labelled reviews the model has learned."""
        return self._n

    @property
    def n_terms(self) -> int:
        """Distinct terms with a weight: what the state's size grows with."""
        return len(self._clf.weights)

    def _features(self, text: str) -> dict[str, float]:
        if text == self._memo_text and self._memo_n == self._n:
            return self._memo_x
        counts = collections.Counter(
            tokenize(clean_text(text, max_chars=self.max_chars), ngrams=self.ngrams)
        )
        if not counts:
            x: dict[str, float] = {}
        elif self.weighting == "binary":
            x = dict.fromkeys(counts, 1.0 / math.sqrt(len(counts)))
        else:
            # count * (ln(1+n) + 1 - ln(1+df)), then L2-normed; tf's division by the document
            # length cancels in the norm. Chained maps keep the per-term loop in C (~15% faster).
            base = math.log1p(self._n) + 1.0
            idf = map(sub, repeat(base), map(math.log1p, map(self._df.get, counts, repeat(0))))
            values = list(map(mul, counts.values(), idf))
            inv_norm = 1.0 / math.sqrt(sum(map(mul, values, values)))
            x = dict(zip(counts, map(mul, values, repeat(inv_norm)), strict=True))
        self._memo_text, self._memo_n, self._memo_x = text, self._n, x
        return x

    def learn_one(self, text: str, positive: bool) -> None:
        """Learn one labelled review (the vector is the one scored before this review counts)."""
        x = self._features(text)
        self._clf.learn_one(x, bool(positive))
        if self.weighting == "tfidf":
            self._df.update(x.keys())  # +1 per distinct term, counted in C
        self._n += 1

    def predict_proba_one(self, text: str) -> float:
        """P(positive) for ``text``; exactly 0.5 before anything is learned."""
        if self._n == 0:
            return 0.5
        return self._clf.predict_proba_one(self._features(text))[True]

    def to_state(self) -> dict[str, Any]:
        """Everything learned, as a JSON-serialisable dict (no pickle).

        River's LogisticRegression keeps its learned state in ``_weights`` (a Rust VectorDict,
        exported by the public ``weights`` property), ``intercept`` and the optimizer's
        ``n_iterations`` (only read by learning-rate schedulers; kept so a restored model is the
        same object in every respect). Loss, initializer and constant learning rates are
        configuration. Floats survive JSON exactly (``repr`` round-trips).
        """
        return {
            "format": STATE_FORMAT,
            "config": {
                "lr": self.lr,
                "intercept_lr": self.intercept_lr,
                "weighting": self.weighting,
                "ngrams": self.ngrams,
                "max_chars": self.max_chars,
            },
            "n_learned": self._n,
            "document_frequency": dict(self._df),
            "weights": self._clf.weights,
            "intercept": float(self._clf.intercept),
            "optimizer_iterations": self._clf.optimizer.n_iterations,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TfidfLogReg:
        """Rebuild a model from ``to_state()``'s dict; it predicts and learns identically."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} state: format={state.get('format')!r}")
        model = cls(**state["config"])
        model._n = int(state["n_learned"])
        model._df = collections.Counter(
            {str(t): int(k) for t, k in state["document_frequency"].items()}
        )
        # No public setter for the weights: this mirrors LinearModel.__init__'s own assignment.
        model._clf._weights = utils.VectorDict(
            {str(t): float(w) for t, w in state["weights"].items()}
        )
        model._clf.intercept = float(state["intercept"])
        model._clf.optimizer.n_iterations = int(state["optimizer_iterations"])
        return model


class RiverPipelineScorer:
    """A river pipeline taking the raw text, seen through ``predict_proba_one``/``learn_one``."""

    def __init__(self, pipeline: object) -> None:
        self.pipeline = pipeline

    def predict_proba_one(self, text: str) -> float:
        return self.pipeline.predict_proba_one(text).get(True, 0.5)

    def learn_one(self, text: str, positive: bool) -> None:
        self.pipeline.learn_one(text, positive)


def river_multinomial_nb() -> RiverPipelineScorer:
    """river's MultinomialNB (alpha 1) on a bag of words (counts), same cleaning and tokens."""
    return RiverPipelineScorer(
        feature_extraction.BagOfWords(preprocessor=clean_text, tokenizer=tokenize)
        | naive_bayes.MultinomialNB(alpha=1.0)
    )
