"""Online review sentiment: P(positive | review text), learned one labelled review at a time.

Built for the case a new deployment meets: short reviews and a few hundred labels (issue 14).
The score is an online stack of three views of the text:

- **naive Bayes with a lexicon prior**: binary word presence, per-class counts in a fixed number of
  hashed buckets, log-count ratios ``r = log(p_i/|p|) − log(q_i/|q|)`` (Wang & Manning 2012). The
  counts start from VADER's lexicon (7,500 rated words shipped in the ``vaderSentiment`` wheel, read
  from the installed package: nothing is downloaded), ``prior`` pseudo-reviews' worth, the two
  sides given equal mass; the data's counts outgrow it;
- **logistic regression on NB-scaled features** (NBSVM's features ``r ∘ x``, L2-normalised), plain
  SGD;
- **logistic regression on character n-grams**: every 4- to 6-byte run of the cleaned text's UTF-8
  (across word boundaries, so ``"not g"`` and ``"awful"`` inside ``"awfully"`` are features),
  binary, L2-normalised, hashed into their own buckets, with AdaGrad's per-feature steps (a rare
  n-gram moves fast, a common one slowly). It reads what words miss on short texts: word parts,
  short phrases, misspellings;
- a 4-weight logistic **stacker** learns, prequentially, how much to trust each (NB early, all
  later), so no hand-set hand-over point.

Tokens are words of any script, ``!``/``?`` and emoji; a negator (``not``, ``never``, ``…n't``)
marks the words after it up to the next punctuation (``not good`` ≠ ``good``). Word buckets are
``zlib.crc32`` of the UTF-8 token (an ASCII text is tokenised and hashed in one compiled pass, a
unit test holds it equal to the array version), n-gram buckets a multiplicative hash of the run's
bytes (both stable across processes and platforms; Python's ``hash`` is salted). State is fixed
arrays — word counts as ``uint16`` half-counts (halved when one saturates), word weights
``float32``, n-gram weights and AdaGrad's sums of squared gradients kept ``float16`` values — so a
snapshot is bounded (< 2 MB at the default 160,000 word and 170,000 n-gram buckets) and written as
``.npz`` without pickle. Sums are ``math.fsum``'s (its algorithm, compiled: `_fsum`) or one
sequential loop: a score does not depend on memory alignment, so every process computes the same
bits.

Chosen by the learning curves of ``python -m bench.sentiment --curve`` (docs/results).

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

import functools
import html
import importlib.resources
import io
import itertools
import json
import logging
import math
import re
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numba import njit

logger = logging.getLogger(__name__)

__all__ = [
    "Features",
    "ReviewSentiment",
    "SnapshotFormatError",
    "char_ngram_buckets",
    "clean_text",
    "hashed_features",
    "hashed_features_many",
    "label_from_rating",
    "sentiment_to_feedback",
    "tokenize",
]

STATE_FORMAT = "tastemaker.ReviewSentiment/3"
_FORMAT_2 = "tastemaker.ReviewSentiment/2"  # no n-gram part: loads with an untrained one
MAX_CHARS = 5_000
# 160,000 x (2 + 2 + 4) + 170,000 x (2 + 2) bytes = 1.96 MB: the snapshot bound
N_BUCKETS = 160_000
CHAR_BUCKETS = 170_000
NGRAM_MIN, NGRAM_MAX = 4, 6  # bytes; at most 7 (a run is one uint64)
_COUNT_MAX = 65_535
_NEGATED_SALT = 0x5BD1E995

_TAG = re.compile(r"<[^>]*>")
# Words in any script (apostrophes kept inside: "don't"), "!" and "?", and single emoji code points.
_TOKEN = re.compile(r"\w[\w']*|[!?]|[\u2600-\u27bf\U0001f300-\U0001faff]")
# The same, plus the punctuation that ends a negation's scope.
_SCOPED = re.compile(r"\w[\w']*|[!?.,;:]|[\u2600-\u27bf\U0001f300-\U0001faff]")
# The same tokens of an ASCII text, found faster (ASCII classes; no emoji can occur).
_SCOPED_ASCII = re.compile(r"\w[\w']*|[!?.,;:]", re.ASCII)
_NEGATORS = (
    "not no never nothing nor neither cannot without hardly barely nobody none nowhere "
    "don't doesn't didn't isn't aren't wasn't weren't can't couldn't won't wouldn't shouldn't "
    "haven't hasn't hadn't ain't mustn't needn't dont doesnt didnt isnt arent wasnt werent cant "
    "couldnt wont wouldnt shouldnt havent hasnt hadnt aint"
).split()
_DROPPED = (".", ",", ";", ":")
_SCOPE_END = (*_DROPPED, "!", "?")


def _special_tokens() -> tuple[np.ndarray, np.ndarray]:
    """Sorted crc32s of the negators and scope ends, and each one's kind (1 negator, 2 "!"/"?",
    3 dropped punctuation): one ``searchsorted`` classifies every token of a review."""
    kinds = {**dict.fromkeys(_NEGATORS, 1), "!": 2, "?": 2, **dict.fromkeys(_DROPPED, 3)}
    pairs = sorted((zlib.crc32(t.encode()), k) for t, k in kinds.items())
    return (np.array([h for h, _ in pairs], dtype=np.int64),
            np.array([k for _, k in pairs], dtype=np.int8))


_SPECIAL_HASHES, _SPECIAL_KINDS = _special_tokens()


class SnapshotFormatError(ValueError):
    """A snapshot this version cannot read (another format, or not a snapshot at all)."""


def clean_text(text: str, *, max_chars: int = MAX_CHARS) -> str:
    """Cap the length, drop HTML tags, unescape entities, lowercase; lone surrogates become '?'.

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
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.lower()


def tokenize(text: str, *, ngrams: int = 1) -> list[str]:
    """Word tokens of cleaned text, then (``ngrams=2``) the bigrams joined by a space.

    >>> tokenize("not good !", ngrams=2)
    ['not', 'good', '!', 'not good', 'good !']
    >>> tokenize("映画 😍", ngrams=1)
    ['映画', '😍']
    """
    tokens = _TOKEN.findall(text)
    if ngrams == 1:
        return tokens
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]


def hashed_features(text: str, *, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """Sorted distinct bucket ids of cleaned ``text``: crc32 of each token, negated scope salted.

    >>> len(hashed_features("a good, good film.")), hashed_features("").tolist()
    (3, [])
    >>> bool(set(hashed_features("not good").tolist()) & set(hashed_features("good").tolist()))
    False
    """
    return hashed_features_many([text], n_buckets=n_buckets)[0]


_NO_BUCKETS = np.zeros(0, dtype=np.int64)


def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.int64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = _crc_table()  # zlib.crc32's, byte by byte


@njit(cache=True, inline="always")
def _is_word_byte(c: int) -> bool:
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 95  # [0-9A-Za-z_]


@njit(cache=True)
def _ascii_word_buckets(data: np.ndarray, n_buckets: int, special_hashes: np.ndarray,
                        special_kinds: np.ndarray, crc_table: np.ndarray) -> np.ndarray:
    """`hashed_features_many` of one ASCII text, compiled: the tokens of ``_SCOPED_ASCII``
    (``\\w[\\w']*`` or one of ``!?.,;:``), their ``zlib.crc32``, the same kinds, negation scopes
    and buckets; sorted distinct buckets. A unit test holds it equal to the array version."""
    n = len(data)
    hashes = np.empty(n, dtype=np.int64)
    kinds = np.empty(n, dtype=np.int8)
    t, i = 0, 0
    while i < n:
        c = data[i]
        if _is_word_byte(c):
            crc = 0xFFFFFFFF
            while i < n and (_is_word_byte(data[i]) or data[i] == 39):  # 39: "'"
                crc = crc_table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8)
                i += 1
        elif c == 33 or c == 63 or c == 46 or c == 44 or c == 59 or c == 58:  # !?.,;:
            crc = crc_table[(0xFFFFFFFF ^ c) & 0xFF] ^ 0xFFFFFF
            i += 1
        else:
            i += 1
            continue
        h = crc ^ 0xFFFFFFFF
        slot = min(np.searchsorted(special_hashes, h), len(special_hashes) - 1)
        hashes[t] = h
        kinds[t] = special_kinds[slot] if special_hashes[slot] == h else 0
        t += 1
    out = np.empty(t, dtype=np.int64)
    k, last_negator, last_end = 0, -1, -1
    for p in range(t):
        kind = kinds[p]
        if kind >= 2:
            last_end = p
        h = hashes[p]
        if last_negator > last_end:  # a negator before p, in scope at p
            h ^= _NEGATED_SALT
        if kind == 1:
            last_negator = p
        if kind != 3:
            out[k] = h % n_buckets
            k += 1
    out = np.sort(out[:k])
    distinct = 0
    for p in range(k):
        if p == 0 or out[p] != out[p - 1]:
            out[distinct] = out[p]
            distinct += 1
    return out[:distinct]


@njit(cache=True)
def _ascii_word_buckets_many(data: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                             n_buckets: int, special_hashes: np.ndarray,
                             special_kinds: np.ndarray, crc_table: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray]:
    """`_ascii_word_buckets` of each text ``data[starts[i]:ends[i]]`` in one call: their buckets
    one text after another, and where each text's begin (``len(starts) + 1`` offsets)."""
    out = np.empty(len(data), dtype=np.int64)  # a text has at most one token per byte
    bounds = np.empty(len(starts) + 1, dtype=np.int64)
    k = 0
    for i in range(len(starts)):
        bounds[i] = k
        buckets = _ascii_word_buckets(data[starts[i]:ends[i]], n_buckets, special_hashes,
                                      special_kinds, crc_table)
        out[k:k + len(buckets)] = buckets
        k += len(buckets)
    bounds[len(starts)] = k
    return out[:k], bounds


class _Packed(NamedTuple):
    """Texts' UTF-8, each padded with a space at both ends, one after another: what the compiled
    passes read in one call each (a padding space is no word byte, so the word pass reads the
    padded text as the text)."""

    data: np.ndarray
    starts: np.ndarray
    ends: np.ndarray


def _pack(texts: Sequence[str]) -> _Packed:
    joined = f" {'  '.join(texts)} "
    if joined.isascii():
        sizes = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    else:
        sizes = np.array([len(t) if t.isascii() else len(t.encode()) for t in texts],
                         dtype=np.int64)
    ends = np.cumsum(sizes + 2)
    return _Packed(np.frombuffer(joined.encode(), dtype=np.uint8), ends - (sizes + 2), ends)


def _split(values: np.ndarray, bounds: np.ndarray) -> list[np.ndarray]:
    return [values[a:b] for a, b in itertools.pairwise(bounds.tolist())]


def hashed_features_many(texts: Sequence[str], *, n_buckets: int = N_BUCKETS) -> list[np.ndarray]:
    """`hashed_features` of each cleaned text, ASCII ones in one compiled pass, the others in one
    pass of array operations over all their tokens (a review and its sentences cost about what
    one text does): the same arrays.

    >>> [a.tolist() == hashed_features(t).tolist() for t, a in zip(
    ...     ["not good. good", "", "never dull !", "pas génial"],
    ...     hashed_features_many(["not good. good", "", "never dull !", "pas génial"]))]
    [True, True, True, True]
    """
    return _word_buckets(texts, _pack([t if t.isascii() else "" for t in texts]), n_buckets)


def _word_buckets(texts: Sequence[str], packed: _Packed, n_buckets: int) -> list[np.ndarray]:
    """`hashed_features_many` of ``texts``, packed (a non-ASCII text's bytes are not read)."""
    ascii_ = np.fromiter(map(str.isascii, texts), dtype=bool, count=len(texts))
    buckets, bounds = _ascii_word_buckets_many(
        packed.data, packed.starts, np.where(ascii_, packed.ends, packed.starts), n_buckets,
        _SPECIAL_HASHES, _SPECIAL_KINDS, _CRC_TABLE)
    out = _split(buckets, bounds)
    if not ascii_.all():  # the rare text with other scripts, accents or emoji
        others = np.flatnonzero(~ascii_).tolist()
        for i, features in zip(others, _array_word_buckets([texts[i] for i in others],
                                                           n_buckets), strict=True):
            out[i] = features
    return out


def _array_word_buckets(texts: Sequence[str], n_buckets: int) -> list[np.ndarray]:
    """`hashed_features_many` of any cleaned texts by regex and array operations over all their
    tokens at once."""
    token_lists = [(_SCOPED_ASCII if text.isascii() else _SCOPED).findall(text) for text in texts]
    one = len(token_lists) == 1
    lengths = [len(tokens) for tokens in token_lists]
    n = sum(lengths)
    if n == 0:
        return [_NO_BUCKETS] * len(token_lists)
    tokens = token_lists[0] if one else itertools.chain.from_iterable(token_lists)
    h = np.fromiter(map(zlib.crc32, map(str.encode, tokens)), dtype=np.int64, count=n)
    slot = np.minimum(np.searchsorted(_SPECIAL_HASHES, h), len(_SPECIAL_HASHES) - 1)
    kind = np.where(_SPECIAL_HASHES[slot] == h, _SPECIAL_KINDS[slot], 0)
    negator = kind == 1
    if negator.any():
        position = np.arange(n)
        last_negator = np.maximum.accumulate(np.where(negator, position, -1))
        last_end = np.maximum.accumulate(np.where(kind >= 2, position, -1))
        # a token is negated when a negator before it, in its own text, is later than the last
        # scope end
        negated = np.empty(n, dtype=bool)
        negated[0] = False
        negated[1:] = last_negator[:-1] > last_end[1:]
        if not one:
            starts = np.cumsum(lengths) - lengths
            first = np.repeat(starts, lengths)  # each token's text's start
            negated[1:] &= last_negator[:-1] >= first[1:]
        h = np.where(negated, h ^ _NEGATED_SALT, h)
    kept = kind != 3
    if one:
        key = np.sort(h[kept] % n_buckets)
        return [key[np.concatenate(([True], key[1:] != key[:-1]))] if len(key) else key]
    # distinct (text, bucket) pairs, sorted: one sort of a combined key, not one unique per text
    row = np.repeat(np.arange(len(token_lists), dtype=np.int64), lengths)
    key = np.sort(row[kept] * n_buckets + h[kept] % n_buckets)
    if len(key):
        key = key[np.concatenate(([True], key[1:] != key[:-1]))]
    rows, buckets = np.divmod(key, n_buckets)
    bounds = np.searchsorted(rows, np.arange(len(token_lists) + 1)).tolist()
    return [buckets[a:b] for a, b in itertools.pairwise(bounds)]


_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio, odd: Fibonacci hashing


@njit(cache=True)
def _byte_ngrams(data: np.ndarray, n_buckets: int, seen: np.ndarray, shortest: int,
                 longest: int) -> np.ndarray:
    """Distinct buckets of the ``shortest``..``longest``-byte runs (at most 7) of ``data``, in
    order of first
    occurrence. A run of at most 7 bytes, with its length in the top byte, is one exact uint64;
    its bucket is the high 32 bits of that times an odd constant (multiplicative hashing), times
    ``n_buckets`` over 2**32 (Lemire's multiply-shift: no division). ``seen`` is a zeroed
    scratch bitset of ``n_buckets`` bits (uint64 words: small enough to stay in the fastest
    cache), left zeroed."""
    n = len(data)
    out = np.empty(max(n, 1) * (longest - shortest + 1), dtype=np.int64)
    k = 0
    buckets = np.uint64(n_buckets)
    window = np.uint64(0)  # data[i:i + 8], little-endian: byte i lowest
    for j in range(min(n, 8)):
        window |= np.uint64(data[j]) << np.uint64(8 * j)
    for i in range(n):
        for length in range(shortest, min(longest, n - i) + 1):
            run = (window & ((np.uint64(1) << np.uint64(8 * length)) - np.uint64(1))) | (
                np.uint64(length) << np.uint64(56))
            b = np.int64((((run * _MULTIPLIER) >> np.uint64(32)) * buckets) >> np.uint64(32))
            word, bit = b >> 6, np.uint64(1) << np.uint64(b & 63)
            if not seen[word] & bit:
                seen[word] |= bit
                out[k] = b
                k += 1
        window >>= np.uint64(8)
        if i + 8 < n:
            window |= np.uint64(data[i + 8]) << np.uint64(56)
    for j in range(k):
        seen[out[j] >> 6] = 0
    return out[:k]


@njit(cache=True)
def _byte_ngrams_many(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, n_buckets: int,
                      seen: np.ndarray, shortest: int, longest: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """`_byte_ngrams` of each text ``data[starts[i]:ends[i]]`` in one call: their buckets one text
    after another, and where each text's begin (``len(starts) + 1`` offsets)."""
    out = np.empty(max(len(data), 1) * (longest - shortest + 1), dtype=np.int64)
    bounds = np.empty(len(starts) + 1, dtype=np.int64)
    k = 0
    for i in range(len(starts)):
        bounds[i] = k
        buckets = _byte_ngrams(data[starts[i]:ends[i]], n_buckets, seen, shortest, longest)
        out[k:k + len(buckets)] = buckets
        k += len(buckets)
    bounds[len(starts)] = k
    return out[:k], bounds


_HALF_MIN = 2.0 ** -14  # the smallest normal float16
_HALF_MAX = 65504.0  # the largest finite float16


@njit(cache=True)
def _sum_weights(char: np.ndarray, idx: np.ndarray) -> float:
    """The sum of the n-gram weights ``char[idx, 0]``, in one sequential float64 loop (no SIMD
    reassociation: every process adds in the same order)."""
    total = 0.0
    for j in idx:
        total += char[j, 0]
    return total


@njit(cache=True)
def _to_half(value: float, value_bits: np.ndarray, buffer: np.ndarray) -> float:
    """``value`` rounded to the nearest float16 (ties to even; beyond the largest finite one,
    that one), as a float: ``float(np.float16(value))`` without float16 (numba has none). A
    normal one keeps 10 of float64's 52 fraction bits, rounded; a subnormal one is a multiple of
    2**-24. ``buffer``/``value_bits`` are one float64 and its bits."""
    magnitude = min(abs(value), _HALF_MAX)
    if magnitude < _HALF_MIN:
        rounded = np.rint(magnitude * 2.0 ** 24) / 2.0 ** 24
    else:
        buffer[0] = magnitude
        bits = value_bits[0]
        value_bits[0] = (bits + (1 << 41) - 1 + ((bits >> 42) & 1)) & ~((1 << 42) - 1)
        rounded = buffer[0]
    return rounded if value >= 0 else -rounded


@njit(cache=True)
def _adagrad_step(char: np.ndarray, idx: np.ndarray, grad: float, lr: float) -> None:
    """AdaGrad on the binary features ``idx``, all with gradient ``grad``: each bucket's sum of
    squared gradients ``char[j, 1]`` grows by ``grad**2`` (at least 2**-14: the first step of a
    feature is at most ``lr * grad / 2**-7``), then its weight ``char[j, 0]`` moves
    ``lr * grad / sqrt(sum)``. Both are kept float16 values (what the snapshot stores: 4 bytes a
    bucket), side by side so that an update touches one cache line."""
    square = grad * grad
    buffer = np.empty(1, dtype=np.float64)
    value_bits = buffer.view(np.int64)
    for j in idx:
        total = _to_half(max(char[j, 1] + square, _HALF_MIN), value_bits, buffer)
        char[j, 1] = total
        char[j, 0] = _to_half(char[j, 0] - lr * grad / math.sqrt(total), value_bits, buffer)


@njit(cache=True)
def _gather_shares(idx: np.ndarray, pos_counts: np.ndarray, neg_counts: np.ndarray,
                   weights: np.ndarray, a2: float, pos_norm: float, neg_norm: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The counts and word weights at ``idx``, and naive Bayes' smoothed shares there,
    ``p = (pos + a2) / pos_norm`` and ``q`` alike: numpy's arithmetic, element by element, in one
    pass over the buckets."""
    n = len(idx)
    pos = np.empty(n, dtype=np.uint16)
    neg = np.empty(n, dtype=np.uint16)
    w = np.empty(n, dtype=np.float32)
    p = np.empty(n, dtype=np.float64)
    q = np.empty(n, dtype=np.float64)
    for j in range(n):
        b = idx[j]
        pos[j], neg[j], w[j] = pos_counts[b], neg_counts[b], weights[b]
        p[j] = (np.float64(pos[j]) + a2) / pos_norm
        q[j] = (np.float64(neg[j]) + a2) / neg_norm
    return pos, neg, w, p, q


@njit(cache=True)
def _fsum(values: np.ndarray, start: int, end: int, partials: np.ndarray) -> float:
    """``math.fsum(values[start:end])``, by CPython's own algorithm (Shewchuk's exact partials,
    then one half-even rounding): the correctly rounded sum, so the same bits. NaN when a value
    or an intermediate sum is not finite: the caller asks ``math.fsum`` then. ``partials`` is
    scratch of at least ``end - start`` floats."""
    n = 0
    for k in range(start, end):
        x = values[k]
        i = 0
        for j in range(n):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            x = hi
        n = i
        if x != 0.0:
            if not math.isfinite(x):
                return math.nan
            partials[n] = x
            n += 1
    hi = 0.0
    if n > 0:
        n -= 1
        hi = partials[n]
        lo = 0.0
        while n > 0:
            x = hi
            n -= 1
            y = partials[n]
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and partials[n - 1] < 0.0) or (lo > 0.0 and partials[n - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            if y == x - hi:
                hi = x
    return hi


@njit(cache=True)
def _scaled_ratios(log_p: np.ndarray, log_q: np.ndarray, w: np.ndarray, lengths: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NBSVM's features ``x = (log p - log q) / sqrt(length)`` of texts laid end to end
    (``lengths`` buckets each), numpy's arithmetic element by element; and each text's
    ``math.fsum`` of ``x`` and of ``x * w`` (NaN where one needs ``math.fsum`` itself)."""
    x = np.empty(len(log_p), dtype=np.float64)
    xw = np.empty(len(log_p), dtype=np.float64)
    sums = np.empty((len(lengths), 2), dtype=np.float64)
    partials = np.empty(max(lengths.max(), 1) if len(lengths) else 1, dtype=np.float64)
    a = 0
    for t, length in enumerate(lengths):
        scale = 1.0 / math.sqrt(length) if length else 0.0
        for j in range(a, a + length):
            x[j] = (log_p[j] - log_q[j]) * scale
            xw[j] = x[j] * np.float64(w[j])
        sums[t, 0] = _fsum(x, a, a + length, partials)
        sums[t, 1] = _fsum(xw, a, a + length, partials)
        a += length
    return x, xw, sums


def char_ngram_buckets(text: str, *, n_buckets: int = CHAR_BUCKETS,
                       seen: np.ndarray | None = None) -> np.ndarray:
    """Distinct buckets of the 4- to 6-byte runs of cleaned ``text`` (UTF-8, padded with a space
    at each end), in order of first occurrence.

    >>> [len(char_ngram_buckets(t)) for t in ("good", "", "ab")]  # " good ": 3 + 2 + 1 runs
    [6, 0, 1]
    >>> awful, awfully = (set(char_ngram_buckets(t).tolist()) for t in ("awful", "awfully"))
    >>> len(awful & awfully)  # " awf", " awfu", " awful", "awfu", "awful", "wful"
    6
    """
    if seen is None:
        seen = _scratch_bitset(n_buckets)
    return _byte_ngrams(np.frombuffer(f" {text} ".encode(), dtype=np.uint8), n_buckets, seen,
                        NGRAM_MIN, NGRAM_MAX)


def _scratch_bitset(n_buckets: int) -> np.ndarray:
    return np.zeros((n_buckets + 63) // 64, dtype=np.uint64)


class Features(NamedTuple):
    """A text's hashed features: sorted distinct word buckets, distinct n-gram buckets."""

    words: np.ndarray
    chars: np.ndarray


@functools.lru_cache(maxsize=4)
def _lexicon_prior(n_buckets: int, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Half-counts (uint16) per bucket from VADER's lexicon: valence v in [-4, 4] adds
    ``weight * |v| / 4`` pseudo-occurrences to its side, each side rescaled to the same mass."""
    resource = importlib.resources.files("vaderSentiment") / "vader_lexicon.txt"
    entries = []
    for line in resource.read_text(encoding="utf-8").splitlines():
        word, _, rest = line.partition("\t")
        if not rest or _TOKEN.fullmatch(word) is None:
            continue
        valence = float(rest.split("\t", 1)[0])
        if valence:
            entries.append((zlib.crc32(word.encode()) % n_buckets, valence))
    pos_mass = sum(v for _, v in entries if v > 0)
    neg_mass = -sum(v for _, v in entries if v < 0)
    half = (pos_mass + neg_mass) / 2.0
    pos = np.zeros(n_buckets, dtype=np.float64)
    neg = np.zeros(n_buckets, dtype=np.float64)
    for bucket, v in entries:
        if v > 0:
            pos[bucket] += weight * v / 4.0 * half / pos_mass
        else:
            neg[bucket] += weight * -v / 4.0 * half / neg_mass
    as_half_counts = functools.partial(np.round, decimals=0)
    return (as_half_counts(2 * pos).astype(np.uint16), as_half_counts(2 * neg).astype(np.uint16))


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


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-min(50.0, max(-50.0, z))))


class ReviewSentiment:
    """P(positive) of a review text, learned online (see the module doc).

    Parameters
    ----------
    lr
        SGD step of the logistic regression on NB-scaled features.
    stack_lr
        SGD step of the 4-weight stacker (NB logit, LR logit, bias, n-gram logit).
    prior
        Weight of VADER's lexicon as pseudo-counts; 0 learns from the data alone.
    alpha
        Laplace smoothing of the naive Bayes counts.
    n_buckets
        Hashed word buckets: ``8 * n_buckets`` bytes of state.
    char_buckets
        Hashed character n-gram buckets: ``4 * char_buckets`` bytes of state.
    char_lr
        AdaGrad step of the logistic regression on character n-grams; 0 switches it off.
    max_chars
        Only the first ``max_chars`` characters are read (bounded cost per review).
    """

    def __init__(
        self,
        *,
        lr: float = 4.0,
        stack_lr: float = 0.02,
        prior: float = 20.0,
        alpha: float = 1.0,
        n_buckets: int = N_BUCKETS,
        char_buckets: int = CHAR_BUCKETS,
        char_lr: float = 0.3,
        max_chars: int = MAX_CHARS,
    ) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be >= 1, got {max_chars!r}")
        if n_buckets < 16 or char_buckets < 16:
            raise ValueError(f"n_buckets and char_buckets must be >= 16, got {n_buckets!r} and "
                             f"{char_buckets!r}")
        if alpha <= 0 or prior < 0 or lr < 0 or stack_lr < 0 or char_lr < 0:
            raise ValueError("alpha must be > 0 and prior, lr, stack_lr, char_lr >= 0")
        self.lr = float(lr)
        self.stack_lr = float(stack_lr)
        self.prior = float(prior)
        self.alpha = float(alpha)
        self.n_buckets = int(n_buckets)
        self.char_buckets = int(char_buckets)
        self.char_lr = float(char_lr)
        self.max_chars = int(max_chars)
        if self.prior:
            pos, neg = _lexicon_prior(self.n_buckets, self.prior)
            self._pos, self._neg = pos.copy(), neg.copy()
        else:
            self._pos = np.zeros(self.n_buckets, dtype=np.uint16)
            self._neg = np.zeros(self.n_buckets, dtype=np.uint16)
        self._w = np.zeros(self.n_buckets, dtype=np.float32)
        self._bias = 0.0
        # per n-gram bucket: its weight and AdaGrad's sum of squared gradients (a float16
        # value, as the snapshot stores it), side by side so that an update touches one line
        self._char = np.zeros((self.char_buckets, 2), dtype=np.float32)
        # weights of the NB logit, the LR logit, a bias and the n-gram LR logit
        self._stack = [1.0, 1.0, 0.0, 1.0 if self.char_lr else 0.0]
        self._n_pos = 0
        self._n_neg = 0
        self._recount()
        # Derived, never serialised: the scratch array of the n-gram pass, and the last text's
        # features keyed by the text and the number learned (a prequential predict-then-learn
        # featurises once).
        self._seen = _scratch_bitset(self.char_buckets)
        self._memo: tuple[str, int, tuple] | None = None

    def _recount(self) -> None:
        """Totals derived from the count arrays (after construction, halving, loading)."""
        self._total_pos = int(self._pos.sum(dtype=np.int64))
        self._total_neg = int(self._neg.sum(dtype=np.int64))
        self._vocabulary = int(np.count_nonzero(self._pos | self._neg))

    @property
    def n_learned(self) -> int:
        """How many labelled reviews the model has learned."""
        return self._n_pos + self._n_neg

    def featurise(self, texts: Sequence[str]) -> list[Features]:
        """Each text's hashed features in one pass. They do not depend on what the model has
        learned: compute them once, use them for any number of `score_and_learn` calls.

        >>> model = ReviewSentiment()
        >>> for text, positive in [("a wonderful film", True), ("a boring film", False)]:
        ...     model.learn_one(text, positive)
        >>> twin = ReviewSentiment.from_bytes(model.to_bytes())
        >>> texts = ["so wonderful. but boring", "so wonderful.", "but boring"]
        >>> model.score_and_learn(model.featurise(texts), True) == [
        ...     twin.predict_proba_one(t) for t in texts]
        True
        >>> twin.learn_one(texts[0], True)
        >>> model.to_bytes() == twin.to_bytes()
        True
        """
        cleaned = [clean_text(t, max_chars=self.max_chars) for t in texts]
        packed = _pack(cleaned)  # each text padded with a space, as `char_ngram_buckets` reads it
        words = _word_buckets(cleaned, packed, self.n_buckets)
        if not self.char_lr:
            return [Features(w, _NO_BUCKETS) for w in words]
        chars = _split(*_byte_ngrams_many(packed.data, packed.starts, packed.ends,
                                          self.char_buckets, self._seen, NGRAM_MIN, NGRAM_MAX))
        return list(map(Features, words, chars))

    def score_and_learn(self, features: Sequence[Features], positive: bool | None
                        ) -> list[float]:
        """P(positive) of each featurised text, all by the model as it is; then learn the first
        as ``positive`` (unless None). The same as `predict_proba_one` of each text followed by
        `learn_one` of the first, with one gather of the model's arrays for all the texts: the
        worker scores a review and its sentences this way."""
        logits, first = self._read(features)
        if self.n_learned == 0:
            ps = [0.5] * len(logits)
        else:
            ps = [_sigmoid(self._stacked(*z)) for z in logits]
        if positive is not None:
            self._learn(logits[0], first, positive)
        return ps

    def _read(self, features: Sequence[Features]
              ) -> tuple[list[tuple[float, float, float]], tuple]:
        """The NB logit (per sqrt length), LR logit and n-gram LR logit of each featurised text,
        in one gather of the word arrays; and what learning the first text needs: its bucket ids,
        NB-scaled normalised features, the counts and weights read at those buckets, its n-gram
        buckets and their scale."""
        char_logits = []
        for f in features:
            if len(f.chars):
                scale = 1.0 / math.sqrt(len(f.chars))
                char_logits.append((_sum_weights(self._char, f.chars) * scale, scale))
            else:
                char_logits.append((0.0, 0.0))
        chars = (features[0].chars, char_logits[0][1])
        lengths = [len(f.words) for f in features]
        idx = features[0].words if len(features) == 1 else np.concatenate(
            [f.words for f in features])
        if len(idx) == 0:
            f = features[0].words
            return ([(0.0, self._bias, z) for z, _ in char_logits],
                    (f, np.zeros(0), f, f, f, *chars))
        # counts are half-counts: alpha is doubled to match; |p|, |q| the same way
        a2 = 2.0 * self.alpha
        vocabulary = max(self._vocabulary, 1)
        pos, neg, w, p, q = _gather_shares(idx, self._pos, self._neg, self._w, a2,
                                           self._total_pos + a2 * vocabulary,
                                           self._total_neg + a2 * vocabulary)
        # the logs are numpy's (its log may differ from the compiled one in the last bit)
        x, xw, sums = _scaled_ratios(np.log(p), np.log(q), w,
                                     np.array(lengths, dtype=np.int64))
        logits, a = [], 0
        for length, (z_char, _), (z_nb, z_lr) in zip(lengths, char_logits, sums.tolist(),
                                                       strict=True):
            b = a + length
            if z_nb != z_nb or z_lr != z_lr:  # NaN: not all finite; math.fsum decides
                z_nb, z_lr = math.fsum(x[a:b].tolist()), math.fsum(xw[a:b].tolist())
            logits.append((z_nb, z_lr + self._bias, z_char) if length
                          else (0.0, self._bias, z_char))
            a = b
        n = lengths[0]
        return logits, (features[0].words, x[:n], pos[:n], neg[:n], w[:n], *chars)

    def _parts(self, text: str) -> tuple[tuple[float, float, float], tuple]:
        """`_read` of one text, remembered for the next call with the same text and state."""
        memo = self._memo
        if memo is not None and memo[1] == self.n_learned and memo[0] == text:
            return memo[2]
        logits, first = self._read(self.featurise([text]))
        parts = (logits[0], first)
        self._memo = (text, self.n_learned, parts)
        return parts

    def _stacked(self, z_nb: float, z_lr: float, z_char: float) -> float:
        a, b, c, d = self._stack
        return a * z_nb + b * z_lr + c + d * z_char

    def predict_proba_one(self, text: str) -> float:
        """P(positive) for ``text``; exactly 0.5 before anything is learned."""
        if self.n_learned == 0:
            return 0.5
        logits, _ = self._parts(text)
        return _sigmoid(self._stacked(*logits))

    def learn_one(self, text: str, positive: bool) -> None:
        """Learn one labelled review (from the features scored before it counts)."""
        self._learn(*self._parts(text), positive)

    def _learn(self, logits: tuple[float, float, float], first: tuple, positive: bool) -> None:
        """Learn from what `_read` read of the current state (so its reads of the arrays hold)."""
        z_nb, z_lr, z_char = logits
        idx, x, pos, neg, w, char_idx, char_scale = first
        y = 1.0 if positive else 0.0
        if self.n_learned:
            g = _sigmoid(z_lr) - y
            if len(idx):
                self._w[idx] = w - (self.lr * g * x).astype(np.float32)
            self._bias -= 0.2 * g
            if self.char_lr and len(char_idx):
                _adagrad_step(self._char, char_idx, (_sigmoid(z_char) - y) * char_scale,
                              self.char_lr)
            gs = self.stack_lr * (_sigmoid(self._stacked(z_nb, z_lr, z_char)) - y)
            a, b, c, d = self._stack
            self._stack = [a - gs * z_nb, b - gs * z_lr, c - gs, d - gs * z_char]
        if len(idx):
            counts = self._pos if positive else self._neg
            if int((pos if positive else neg).max()) > _COUNT_MAX - 2:  # keep ratios, forget
                self._pos >>= 1
                self._neg >>= 1
                self._recount()
                pos, neg = self._pos[idx], self._neg[idx]
            new = int(np.count_nonzero((pos | neg) == 0))
            counts[idx] = (pos if positive else neg) + 2
            self._vocabulary += new
            if positive:
                self._total_pos += 2 * len(idx)
            else:
                self._total_neg += 2 * len(idx)
        if positive:
            self._n_pos += 1
        else:
            self._n_neg += 1

    # --- snapshots ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {"lr": self.lr, "stack_lr": self.stack_lr, "prior": self.prior,
                "alpha": self.alpha, "n_buckets": self.n_buckets,
                "char_buckets": self.char_buckets, "char_lr": self.char_lr,
                "max_chars": self.max_chars}

    def to_bytes(self, *, meta: dict[str, Any] | None = None) -> bytes:
        """Everything learned as an ``.npz`` (plain arrays and one JSON header; no pickle);
        ``meta`` (JSON-able, e.g. the offset a snapshot reflects) rides in the header.

        Bounded: ``8 * n_buckets + 4 * char_buckets`` bytes of arrays plus a few hundred of
        header, compressed.
        """
        header = {"format": STATE_FORMAT, "config": self.config(), "n_pos": self._n_pos,
                  "n_neg": self._n_neg, "bias": self._bias, "stack": self._stack,
                  "meta": meta or {}}
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
            pos=self._pos, neg=self._neg, w=self._w, char_w=self._char[:, 0].astype(np.float16),
            char_g=self._char[:, 1].astype(np.float16))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ReviewSentiment:
        """Rebuild a model from ``to_bytes()``; it predicts and learns identically."""
        return cls.from_bytes_with_meta(raw)[0]

    @classmethod
    def from_bytes_with_meta(cls, raw: bytes) -> tuple[ReviewSentiment, dict[str, Any]]:
        """`from_bytes`, and the ``meta`` written with the snapshot.

        A format 2 snapshot (before the n-gram part) loads with its words' state and an
        untrained n-gram part whose stacker weight starts at 0. Raises `SnapshotFormatError` for
        anything else, naming what it found (format 1, the JSON TF-IDF model before issue 14,
        cannot be converted: its features are not hashed).
        """
        if raw[:1] == b"{":
            found = "JSON"
            try:
                found = json.loads(raw).get("format", found)
            except (ValueError, AttributeError):
                pass
            raise SnapshotFormatError(f"sentiment snapshot is {found!r}, not {STATE_FORMAT}: a "
                                      "model from before the hashed format; relearn it")
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                header = json.loads(npz["header"].tobytes())
                found = header.get("format") if isinstance(header, dict) else None
                if found not in (STATE_FORMAT, _FORMAT_2):
                    raise SnapshotFormatError(
                        f"sentiment snapshot is {found!r}, not {STATE_FORMAT}")
                arrays = {k: npz[k] for k in ("pos", "neg", "w")}
                if found == STATE_FORMAT:
                    arrays.update(char_w=npz["char_w"], char_g=npz["char_g"])
        except SnapshotFormatError:
            raise
        except Exception as exc:  # zip, npz and JSON errors alike: not our snapshot
            raise SnapshotFormatError(f"not a {STATE_FORMAT} snapshot: {exc}") from exc
        model = cls(**{**header["config"], "prior": 0.0})
        model.prior = float(header["config"]["prior"])
        arrays.setdefault("char_w", model._char[:, 0].astype(np.float16))
        arrays.setdefault("char_g", model._char[:, 1].astype(np.float16))
        expected = {"pos": (model.n_buckets, np.uint16), "neg": (model.n_buckets, np.uint16),
                    "w": (model.n_buckets, np.float32),
                    "char_w": (model.char_buckets, np.float16),
                    "char_g": (model.char_buckets, np.float16)}
        if any(arrays[k].shape != (n,) or arrays[k].dtype != dtype
               for k, (n, dtype) in expected.items()):
            raise SnapshotFormatError("sentiment snapshot arrays do not match its config")
        model._pos, model._neg, model._w = (arrays[k].copy() for k in ("pos", "neg", "w"))
        model._char = np.stack([arrays["char_w"], arrays["char_g"]], axis=1).astype(np.float32)
        model._n_pos, model._n_neg = int(header["n_pos"]), int(header["n_neg"])
        model._bias = float(header["bias"])
        model._stack = [float(v) for v in header["stack"]]
        if found == _FORMAT_2:
            model._stack.append(0.0)
        model._recount()
        return model, dict(header.get("meta") or {})


def warm_up() -> None:
    """Compile the text kernels once (numba caches the machine code next to this module), as
    `models.cooccurrence.warm_up` does for the co-occurrence kernels: run by
    ``scripts/bootstrap.sh``, the Docker build and a starting worker.

    >>> warm_up()
    """
    model = ReviewSentiment()
    for text, positive in (("a fine film", True), ("dull and weak", False)):
        model.learn_one(text, positive)
    model.predict_proba_one("fine")
