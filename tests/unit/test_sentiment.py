"""ReviewSentiment: learns, survives hostile text, snapshots to npz exactly and within 2 MB (and
reads the format before the n-gram part), is the same in every process, its compiled passes equal
their plain versions, and it keeps its learning-curve lead over naive Bayes and TF-IDF + LR."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import feature_extraction

from bench.sentiment import roc_auc, split_by_length
from bench.sentiment_baselines import TfidfLogReg, river_multinomial_nb
from models.sentiment import (
    _CRC_TABLE,
    _FORMAT_2,
    _HALF_MAX,
    _NEGATED_SALT,
    _SCOPED,
    _SCOPED_ASCII,
    _SPECIAL_HASHES,
    _SPECIAL_KINDS,
    N_BUCKETS,
    STATE_FORMAT,
    ReviewSentiment,
    SnapshotFormatError,
    _ascii_word_buckets,
    _to_half,
    char_ngram_buckets,
    clean_text,
    hashed_features,
    hashed_features_many,
    label_from_rating,
    sentiment_to_feedback,
    tokenize,
)
from streams.settings import load_settings
from streams.tools.datasets import labelled_reviews

POSITIVE_WORDS = ["wonderful", "moving", "brilliant", "superb", "delightful", "masterpiece"]
NEGATIVE_WORDS = ["boring", "dull", "awful", "tedious", "clumsy", "mess"]

HOSTILE = {
    "empty": "",
    "whitespace": "  \n\t\r  ",
    "long": "a brilliant and moving film. " * 345,  # ~10,000 chars
    "long_unbroken": "x" * 10_000,
    "japanese": "この映画は本当に素晴らしかった。俳優の演技も最高でした！",
    "arabic": "فيلم رائع جدا، أنصح الجميع بمشاهدته",
    "emoji_only": "😍😍🔥👍",
    "html": '<br /><br /><b>Great</b> film &amp; fun &lt;3 &#39;10/10&#39; <a href="x">link</a>',
    "broken_html": "<div class='x'>unclosed < tag & no entity &bogus; <br",
    "control_chars": "good\x00film\x1b[31m\u200b\ufeff",
    "punctuation_only": "!!! ??? ... ---",
    "lone_surrogate": "good \ud800 film",
    "mixed_scripts": "Отличный фильм! 非常好看 🎬 שׁלום <i>very</i> good",
    "negators_only": "not no never don't n't",
}


def toy_corpus(n: int = 120, seed: int = 3) -> list[tuple[str, bool]]:
    rng = random.Random(seed)
    corpus = []
    for i in range(n):
        positive = i % 2 == 0
        words = rng.sample(POSITIVE_WORDS if positive else NEGATIVE_WORDS, 3) + ["the", "film"]
        rng.shuffle(words)
        corpus.append((" ".join(words), positive))
    return corpus


def trained(corpus: list[tuple[str, bool]] | None = None) -> ReviewSentiment:
    model = ReviewSentiment()
    for text, positive in corpus if corpus is not None else toy_corpus():
        model.learn_one(text, positive)
    return model


def test_untrained_model_says_half() -> None:
    model = ReviewSentiment()
    assert model.n_learned == 0
    assert model.predict_proba_one("a brilliant film") == 0.5


def test_learns_a_separable_toy_corpus() -> None:
    corpus = toy_corpus()
    model = trained(corpus[:100])
    assert model.n_learned == 100
    held_out = corpus[100:]
    assert all((model.predict_proba_one(t) > 0.5) == y for t, y in held_out)
    assert model.predict_proba_one("superb delightful") > 0.8
    assert model.predict_proba_one("awful tedious") < 0.2


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_text_scores_and_learns_without_error(name: str) -> None:
    text = HOSTILE[name]
    for model in (ReviewSentiment(), trained()):
        p = model.predict_proba_one(text)
        assert isinstance(p, float) and 0.0 <= p <= 1.0
        model.learn_one(text, True)
        assert 0.0 <= model.predict_proba_one(text) <= 1.0
        assert ReviewSentiment.from_bytes(model.to_bytes()).n_learned == model.n_learned


def test_html_is_stripped_and_lowercased() -> None:
    assert tokenize(clean_text("GREAT<br /><br />Film &amp; <i>FUN</i>"), ngrams=1) == [
        "great",
        "film",
        "fun",
    ]


def test_only_the_first_max_chars_are_read() -> None:
    model = trained()
    head = "a brilliant film " * 300
    assert len(head) > 5_000
    tail = "awful " * 2_000
    assert model.predict_proba_one(head + tail) == model.predict_proba_one(head[:5_000])


def test_non_latin_and_emoji_tokens_are_kept() -> None:
    assert tokenize("映画 最高 😍", ngrams=1) == ["映画", "最高", "😍"]
    model = ReviewSentiment()
    for _ in range(5):
        model.learn_one("😍", True)
        model.learn_one("👎", False)
    assert model.predict_proba_one("😍") > 0.5 > model.predict_proba_one("👎")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_any_text_gives_a_probability(text: str) -> None:
    model = trained(toy_corpus(20))
    p = model.predict_proba_one(text)
    assert 0.0 <= p <= 1.0 and not math.isnan(p)
    model.learn_one(text, False)


def test_deterministic() -> None:
    a, b = trained(), trained()
    assert a.to_bytes() == b.to_bytes()
    probe = [t for t, _ in toy_corpus(30, seed=9)] + list(HOSTILE.values())
    assert [a.predict_proba_one(t) for t in probe] == [b.predict_proba_one(t) for t in probe]


def test_snapshot_round_trips_exactly() -> None:
    model = trained()
    restored = ReviewSentiment.from_bytes(model.to_bytes())
    assert restored.n_learned == model.n_learned and restored.config() == model.config()
    probe = [t for t, _ in toy_corpus(30, seed=9)] + list(HOSTILE.values())
    assert [restored.predict_proba_one(t) for t in probe] == [
        model.predict_proba_one(t) for t in probe
    ]
    # ...and it goes on learning exactly as the original does.
    for text, positive in toy_corpus(40, seed=11):
        model.learn_one(text, positive)
        restored.learn_one(text, positive)
    assert restored.to_bytes() == model.to_bytes()


def test_snapshot_is_npz_without_pickle_and_bounded_at_2_mb() -> None:
    """The worst case: every bucket counted and weighted with incompressible values."""
    model = ReviewSentiment()
    rng = np.random.default_rng(5)
    model._pos = rng.integers(0, 65_535, model.n_buckets, dtype=np.uint16)
    model._neg = rng.integers(0, 65_535, model.n_buckets, dtype=np.uint16)
    model._w = rng.standard_normal(model.n_buckets).astype(np.float32)
    model._char[:, 0] = rng.standard_normal(model.char_buckets).astype(np.float16)
    model._char[:, 1] = rng.integers(0x400, 0x7C00, model.char_buckets, dtype=np.uint16).view(
        np.float16)
    raw = model.to_bytes()
    assert raw[:2] == b"PK"  # a zip of .npy arrays
    assert len(raw) <= 2_000_000, len(raw)
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        assert {npz[k].dtype.kind for k in npz.files} <= {"u", "f"}  # no object arrays


def test_old_and_foreign_snapshots_fail_with_a_clear_error() -> None:
    old = json.dumps({"format": "tastemaker.ReviewSentiment/1", "weights": {}}).encode()
    with pytest.raises(SnapshotFormatError, match="ReviewSentiment/1"):
        ReviewSentiment.from_bytes(old)
    with pytest.raises(SnapshotFormatError, match="not a"):
        ReviewSentiment.from_bytes(b"garbage")
    buffer = io.BytesIO()
    header = json.dumps({"format": STATE_FORMAT.replace("/3", "/9")}).encode()
    np.savez(buffer, header=np.frombuffer(header, dtype=np.uint8))
    with pytest.raises(SnapshotFormatError, match="ReviewSentiment/9"):
        ReviewSentiment.from_bytes(buffer.getvalue())


def test_a_format_2_snapshot_loads_with_an_untrained_ngram_part() -> None:
    """A snapshot from before the n-gram part keeps its words' state; the n-gram part starts
    untrained and out of the stack (weight 0), so the first scores are the word model's."""
    model = trained()
    header = {"format": _FORMAT_2, "n_pos": model._n_pos, "n_neg": model._n_neg,
              "bias": model._bias, "stack": model._stack[:3], "meta": {"offset": 12},
              "config": {k: v for k, v in model.config().items()
                         if k not in ("char_buckets", "char_lr")}}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, header=np.frombuffer(json.dumps(header).encode(), np.uint8),
                        pos=model._pos, neg=model._neg, w=model._w)
    restored, meta = ReviewSentiment.from_bytes_with_meta(buffer.getvalue())
    assert meta == {"offset": 12} and restored.n_learned == model.n_learned
    assert restored._stack == [*model._stack[:3], 0.0] and not restored._char.any()
    assert np.array_equal(restored._w, model._w) and np.array_equal(restored._pos, model._pos)
    restored.learn_one("a wonderful film", True)
    assert restored._char.any() and 0 < restored.predict_proba_one("wonderful") < 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60),
       st.sampled_from([16, 97, N_BUCKETS]))
def test_the_compiled_ascii_pass_equals_the_array_version(text: str, n_buckets: int) -> None:
    compiled = _ascii_word_buckets(np.frombuffer(text.encode(), dtype=np.uint8), n_buckets,
                                   _SPECIAL_HASHES, _SPECIAL_KINDS,
                                   _CRC_TABLE)
    assert compiled.tolist() == reference_hashed_features(text, n_buckets).tolist()


def test_ngram_weights_and_sums_are_rounded_as_float16_rounds() -> None:
    """numba has no float16: the compiled rounding must give numpy's, ties to even and
    subnormals included (the largest finite value where numpy would give infinity)."""
    rng = np.random.default_rng(1)
    halves = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    values = np.concatenate([rng.random(20_000) * 10.0 ** rng.integers(-9, 6, 20_000), halves,
                             (halves[:-1] + halves[1:]) / 2, [0.0, 65_519.0, 1e9]])
    values = np.concatenate([values, -values])
    buffer = np.empty(1)
    got = [_to_half(v, buffer.view(np.int64), buffer) for v in values]
    expected = np.clip(values, -_HALF_MAX, _HALF_MAX).astype(np.float16).astype(np.float64)
    assert got == expected.tolist()


def test_character_ngrams_are_distinct_and_in_range() -> None:
    for text in [*HOSTILE.values(), "not good", "a" * 100]:
        buckets = char_ngram_buckets(clean_text(text), n_buckets=97)
        assert len(set(buckets.tolist())) == len(buckets)
        assert all(0 <= b < 97 for b in buckets.tolist())
    # " aaa", "aaaa", "aaa " and their 5- and 6-byte kin, each once
    assert len(char_ngram_buckets("a" * 100)) == 9


def test_counts_halve_instead_of_overflowing() -> None:
    model = trained()
    bucket = int(hashed_features("wonderful", n_buckets=model.n_buckets)[0])
    model._pos[bucket] = 65_534
    before = model.predict_proba_one("wonderful")
    model.learn_one("wonderful", True)
    assert model._pos[bucket] == 65_534 // 2 + 2
    assert model.predict_proba_one("wonderful") > 0.5 and before > 0.5


def test_negation_changes_the_features() -> None:
    assert set(hashed_features("good").tolist()) <= set(hashed_features("not bad. good").tolist())
    assert not set(hashed_features("good").tolist()) & set(hashed_features("not good").tolist())
    good = set(hashed_features("good").tolist())
    assert set(hashed_features("isn't good, good").tolist()) >= good


def reference_hashed_features(text: str, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """`hashed_features` as it was written before the batched pass: one text, its own regex."""
    tokens = _SCOPED.findall(text)
    if not tokens:
        return np.zeros(0, dtype=np.int64)
    n = len(tokens)
    h = np.fromiter(map(zlib.crc32, map(str.encode, tokens)), dtype=np.int64, count=n)
    slot = np.minimum(np.searchsorted(_SPECIAL_HASHES, h), len(_SPECIAL_HASHES) - 1)
    kind = np.where(_SPECIAL_HASHES[slot] == h, _SPECIAL_KINDS[slot], 0)
    negator = kind == 1
    if negator.any():
        position = np.arange(n)
        last_negator = np.maximum.accumulate(np.where(negator, position, -1))
        last_end = np.maximum.accumulate(np.where(kind >= 2, position, -1))
        negated = np.empty(n, dtype=bool)
        negated[0] = False
        negated[1:] = last_negator[:-1] > last_end[1:]
        h = np.where(negated, h ^ _NEGATED_SALT, h)
    return np.unique(h[kind != 3] % n_buckets)


TEXTS = st.lists(st.sampled_from([*"ab c!?.,;:'-\n", "not ", "never ", "isn't ", "é", "😍", "映"]),
                 max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXTS, max_size=6), st.sampled_from([16, 97, N_BUCKETS]))
def test_batched_features_equal_one_text_at_a_time(texts: list[str], n_buckets: int) -> None:
    """Negation scopes end at each text's end: a negator at the end of one text does not reach
    into the next one of the batch."""
    batched = hashed_features_many(texts, n_buckets=n_buckets)
    assert len(batched) == len(texts)
    for text, features in zip(texts, batched, strict=True):
        assert features.dtype == np.int64
        assert features.tolist() == reference_hashed_features(text, n_buckets).tolist()
        assert features.tolist() == hashed_features(text, n_buckets=n_buckets).tolist()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_the_ascii_tokeniser_finds_the_same_tokens(text: str) -> None:
    assert _SCOPED_ASCII.findall(text) == _SCOPED.findall(text)


def test_score_and_learn_equals_predict_then_learn() -> None:
    """The batched path reads the arrays once for a review and its sentences and learns from
    what it read; the one-text path must give the same bits, through count halving too."""
    batched, one = trained(toy_corpus(40)), trained(toy_corpus(40))
    texts = [t for t, _ in toy_corpus(60, seed=11)] + list(HOSTILE.values())
    for i, text in enumerate(texts):
        group = [text, *texts[max(0, i - 3):i], ""]
        label = None if i % 3 == 2 else i % 2 == 0
        if i == 30:  # a bucket about to saturate: the next learn halves every count
            for model in (batched, one):
                model._pos[hashed_features(clean_text(text))[:1]] = 65_534
                model._neg[hashed_features(clean_text(text))[:1]] = 65_534
                model._recount()
        ps = batched.score_and_learn(batched.featurise(group), label)
        expected = [one.predict_proba_one(t) for t in group]
        if label is not None:
            one.learn_one(text, label)
        assert ps == expected
        assert batched.to_bytes() == one.to_bytes()
    assert ReviewSentiment().score_and_learn(ReviewSentiment().featurise(["a", ""]), None) == [
        0.5, 0.5]


_SUBPROCESS = """
import hashlib, sys
from models.sentiment import ReviewSentiment
from tests.unit.test_sentiment import HOSTILE, toy_corpus
model = ReviewSentiment()
for text, positive in toy_corpus(200, seed=4) + [(t, True) for t in HOSTILE.values()]:
    model.predict_proba_one(text)
    model.learn_one(text, positive)
print(hashlib.sha256(model.to_bytes()).hexdigest(), repr(model.predict_proba_one("dull film")))
"""


def test_same_snapshot_bytes_in_another_process() -> None:
    """crc32 buckets (not Python's salted hash) and fsum scores: another interpreter, with another
    hash seed, learns the same bytes."""
    model = ReviewSentiment()
    for text, positive in toy_corpus(200, seed=4) + [(t, True) for t in HOSTILE.values()]:
        model.predict_proba_one(text)
        model.learn_one(text, positive)
    digest = hashlib.sha256(model.to_bytes()).hexdigest()
    here = f"{digest} {model.predict_proba_one('dull film')!r}"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    there = subprocess.run([sys.executable, "-c", _SUBPROCESS], capture_output=True, text=True,
                           check=True, cwd=root,
                           env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": root})
    assert there.stdout.strip() == here


def test_the_tfidf_baseline_matches_rivers_formula() -> None:
    docs = [t for t, _ in toy_corpus(30)] + ["the the film <br />is a MESS", "brilliant!"]
    river_tfidf = feature_extraction.TFIDF(preprocessor=clean_text, tokenizer=tokenize)
    model = TfidfLogReg()
    for doc in docs:
        river_tfidf.learn_one(doc)
        model.learn_one(doc, True)
    probe = "the film is a brilliant mess mess, unseen words"
    expected = river_tfidf.transform_one(probe)
    got = model._features(probe)
    assert got.keys() == expected.keys()
    assert all(math.isclose(got[t], expected[t], rel_tol=1e-12) for t in expected)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"alpha": 0}, "alpha"), ({"n_buckets": 3}, "n_buckets"), ({"max_chars": 0}, "max"),
     ({"prior": -1}, "prior"), ({"char_buckets": 3}, "char_buckets"), ({"char_lr": -1}, "char_lr")],
)
def test_bad_options_fail_loudly(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReviewSentiment(**options)


def test_label_from_rating_and_feedback_bounds() -> None:
    assert label_from_rating(float("nan")) is None
    assert [label_from_rating(r) for r in (4.5, 2.5, 0.5)] == [True, None, False]
    values = [sentiment_to_feedback(p / 100) for p in range(101)]
    assert values == sorted(values) and values[0] == -1.0 and values[-1] == 1.0


def test_accuracy_floor_on_real_reviews() -> None:
    """5,000 real reviews learned (seeded shuffle); the next 1,000 scored better than 0.75."""
    reviews = labelled_reviews(load_settings().cache_dir)
    random.Random(7).shuffle(reviews)
    model = ReviewSentiment()
    for review in reviews[:5_000]:
        model.learn_one(review.text, review.positive)
    test = reviews[5_000:6_000]
    correct = sum((model.predict_proba_one(r.text) >= 0.5) == r.positive for r in test)
    assert correct / len(test) > 0.75, f"accuracy {correct / len(test):.3f}"


def _curve_point(build, train, test) -> tuple[float, float]:
    model = build()
    for review in train:
        model.predict_proba_one(review.text)
        model.learn_one(review.text, review.positive)
    labels = np.array([r.positive for r in test])
    scores = np.array([model.predict_proba_one(r.text) for r in test])
    return float(((scores >= 0.5) == labels).mean()), roc_auc(labels, scores)


@pytest.mark.parametrize(("part", "n_train", "n_test"), [("short", 250, 1_000),
                                                         ("short", 1_000, 1_000),
                                                         ("long", 500, 400)])
def test_learning_curve_lead_over_naive_bayes_and_tfidf_logreg(part: str, n_train: int,
                                                               n_test: int) -> None:
    """A quality floor from ``bench.sentiment --curve`` on a small seeded sample: tastemaker's
    accuracy and AUC are at least those of the better of river's MultinomialNB and TF-IDF + LR
    (the full curves: docs/results/sentiment_curve.json)."""
    started = time.monotonic()
    reviews = labelled_reviews(load_settings().cache_dir)
    random.Random(7).shuffle(reviews)
    texts = split_by_length(reviews)[part]
    test, train = texts[-n_test:], texts[:n_train]
    ours = _curve_point(ReviewSentiment, train, test)
    nb = _curve_point(river_multinomial_nb, train, test)
    lr = _curve_point(TfidfLogReg, train, test)
    assert ours[0] >= max(nb[0], lr[0]), (ours, nb, lr)
    assert ours[1] >= max(nb[1], lr[1]), (ours, nb, lr)
    assert time.monotonic() - started < 30
