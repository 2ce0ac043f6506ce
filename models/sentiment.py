"""Online review sentiment: P(positive | review text), learned one labelled review at a time.

The pipeline is clean → tokenise → TF-IDF → logistic regression:

- ``clean_text`` caps the text at ``max_chars`` (bounded cost per review), strips HTML tags
  (IMDB texts carry ``<br /><br />``), unescapes entities and lowercases;
- ``tokenize`` keeps word tokens (any script, apostrophes inside words), ``!``/``?`` and emoji;
  ``ngrams=2`` adds bigrams (``"not good"``), measured below: +0.012 AUC for ~3x the time and ~18x
  the state, so unigrams are the default;
- TF-IDF uses river's ``feature_extraction.TFIDF`` formula (idf = ln((1+n)/(1+df)) + 1, L2-normed)
  but tokenises once per review, where river's TFIDF re-tokenises on every ``learn_one`` and
  ``transform_one`` call;
- the classifier is river's ``linear_model.LogisticRegression`` with plain SGD.

In ``learn_one`` the classifier learns the vector computed *before* the review's terms enter the
document frequencies — the very vector ``predict_proba_one`` scored — so a prequential
predict-then-learn costs one tokenisation and one TF-IDF transform. (River's pipeline counts the
document first, then transforms again; the bench runs that pipeline too: 0.0002 AUC apart, half
the speed.)

Variants compared, prequential on all 33,530 IMDB + Rotten Tomatoes texts, seeded shuffle (seed 7),
figures after the first 1,000 texts (``python -m bench.sentiment --variants``). Throughput is
learn+predict, one pass, CPU clock, on a shared 2-core box whose neighbours halve it at times
(the chosen model's first pass in the same run: 5,630/s), so compare the rows, not the numbers:

    variant                                   acc     AUC   reviews/s   terms after 33.5k
    tfidf 1g + logreg lr=2 (chosen)         0.847   0.925       3,453   87,077 (4 MB JSON)
    tfidf 1g + logreg lr=5                  0.838   0.916       3,454   87,077
    tfidf 1-2g + logreg lr=5                0.860   0.937       1,046   1,552,268 (88 MB JSON)
    binary 1-2g + logreg lr=3               0.841   0.922       1,788   1,552,268
    river TFIDF | LogReg pipeline, 1g lr=2  0.847   0.924       1,621   same math, re-tokenises
    river binary BoW 1-2g | MultinomialNB   0.846   0.919         401
    VADER compound >= 0.05 (no learning)    0.684   0.758         424

Bigrams buy +0.012 AUC for ~3x the time and ~18x the state. Learning rates were tuned: 1g
lr 1 / 2 / 3 / 5 → AUC 0.922 / 0.925 / 0.923 / 0.916; 1-2g lr 2 / 5 / 10 → 0.931 / 0.937 / 0.932
(the last with an earlier tokeniser). river's ComplementNB was not run in full: its
``predict_proba_one`` walks the whole vocabulary.

The vocabulary is not bounded: every term seen keeps a document frequency and a weight (see
``n_terms``; ~87k unigrams after 33.5k reviews). Hashing into fixed buckets would bound it, but
river's Rust ``feature_hash`` alone costs about as much as the TF-IDF step, and Python's ``hash``
of a str is salted per process, so it cannot key a snapshot.

>>> model = ReviewSentiment()
>>> model.predict_proba_one("a wonderful film")
0.5
>>> for _ in range(3):
...     model.learn_one("a wonderful, moving film", True)
...     model.learn_one("a dull, boring mess", False)
>>> model.predict_proba_one("wonderful") > 0.5 > model.predict_proba_one("boring")
True
>>> sentiment_to_feedback(model.predict_proba_one("dull and boring")) < 0
True
"""

from __future__ import annotations

import collections
import html
import logging
import math
import re
from itertools import pairwise, repeat
from operator import mul, sub
from typing import Any, Literal

from river import linear_model, optim, utils

logger = logging.getLogger(__name__)

__all__ = [
    "ReviewSentiment",
    "clean_text",
    "label_from_rating",
    "sentiment_to_feedback",
    "tokenize",
]

Weighting = Literal["tfidf", "binary"]
NGrams = Literal[1, 2]

STATE_FORMAT = "tastemaker.ReviewSentiment/1"
MAX_CHARS = 5_000

_TAG = re.compile(r"<[^>]*>")
# Words in any script (apostrophes kept inside: "don't"), "!" and "?", and single emoji code points.
_TOKEN = re.compile(r"\w[\w']*|[!?]|[\u2600-\u27bf\U0001f300-\U0001faff]")


def clean_text(text: str, *, max_chars: int = MAX_CHARS) -> str:
    """Cap the length, drop HTML tags, unescape entities, lowercase.

    >>> clean_text("Great!<br /><br />A &quot;must&quot; see &amp; <i>fun</i>")
    'great!  a "must" see &  fun '
    >>> len(clean_text("x" * 10_000))
    5000
    """
    text = text[:max_chars]
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    return text.lower()


def tokenize(text: str, *, ngrams: NGrams = 1) -> list[str]:
    """Word tokens of cleaned text, then (``ngrams=2``) the bigrams joined by a space.

    >>> tokenize("not good !", ngrams=2)
    ['not', 'good', '!', 'not good', 'good !']
    >>> tokenize("映画 😍", ngrams=1)
    ['映画', '😍']
    """
    tokens = _TOKEN.findall(text)
    if ngrams == 1:
        return tokens
    return tokens + list(map(" ".join, pairwise(tokens)))


def label_from_rating(rating: float | None) -> bool | None:
    """A star rating (1-5) as a training label: >= 4 positive, <= 2 negative, else no label.

    >>> [label_from_rating(r) for r in (5, 4, 3.5, 3, 2, 1, None)]
    [True, True, None, None, False, False, None]
    """
    if rating is None or math.isnan(rating):
        return None
    if rating >= 4:
        return True
    if rating <= 2:
        return False
    return None


def sentiment_to_feedback(p_positive: float) -> float:
    """Map P(positive) to a feedback weight in [-1, 1]: ``2p - 1``.

    0.5 (no opinion, or an untrained model) is neutral feedback 0; a confident pan is close to -1
    and a rave close to +1, so the score can scale an implicit-feedback event linearly.
    Out-of-range input is clipped; NaN is treated as neutral.

    >>> [sentiment_to_feedback(p) for p in (0.0, 0.25, 0.5, 1.0, 1.7, float("nan"))]
    [-1.0, -0.5, 0.0, 1.0, 1.0, 0.0]
    """
    if math.isnan(p_positive):
        return 0.0
    return 2.0 * min(1.0, max(0.0, p_positive)) - 1.0


class ReviewSentiment:
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
        weighting: Weighting = "tfidf",
        ngrams: NGrams = 1,
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
        self.weighting: Weighting = weighting
        self.ngrams: NGrams = ngrams
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
    def from_state(cls, state: dict[str, Any]) -> ReviewSentiment:
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
