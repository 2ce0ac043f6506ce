"""ItemSummary: digests never raise, state stays bounded, sides are shown, erasure removes."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.summary import (
    _SENTENCE_END,
    _WORD_OR_BREAK,
    _WORD_OR_BREAK_ASCII,
    MAX_SENTENCE_CHARS,
    PHRASE_CAP,
    POOL_PER_SIDE,
    SUMMARY_SENTENCES,
    TERM_CAP,
    ItemSummary,
    _is_content,
    _phrases,
    _sentences,
    author_tag,
    digest_reading,
    digest_review,
    read_review,
    split_sentences,
)
from tests.unit.test_sentiment import HOSTILE


def keyword_score(sentence: str) -> float:
    """A stand-in sentiment model: positive words push up, negative ones down."""
    words = sentence.lower().split()
    ups = sum(w.strip(".,!") in {"great", "superb", "moving", "fun"} for w in words)
    downs = sum(w.strip(".,!") in {"dull", "awful", "boring", "mess"} for w in words)
    return 0.5 + 0.4 * (ups > downs) - 0.4 * (downs > ups)


def review(positive: bool, rng: random.Random) -> str:
    good = ["The cast is great and the score is superb.", "A moving, fun story about family.",
            "Great special effects and a superb final act."]
    bad = ["The plot is dull and the dialogue is awful.", "A boring mess of a script.",
           "Awful special effects, a dull final act."]
    filler = ["I saw it on a Sunday.", "It runs two hours.", f"Seat {rng.randint(1, 99)}."]
    return " ".join(rng.sample(good if positive else bad, 2) + rng.sample(filler, 1))


def test_hostile_texts_never_raise() -> None:
    summary = ItemSummary()
    for name, text in sorted(HOSTILE.items()):
        for p in (0.0, 0.5, 1.0):
            digest = digest_review(text, p, keyword_score, author=author_tag(name))
            assert len(digest.sentence) <= MAX_SENTENCE_CHARS
            summary.add(digest)
    view = summary.render()
    assert view["count"] == 3 * len(HOSTILE)
    json.dumps(view)
    json.dumps(summary.to_state())


def test_hostile_texts_with_the_real_sentiment_model() -> None:
    from models.sentiment import ReviewSentiment

    model = ReviewSentiment()
    model.learn_one("a wonderful, moving film", True)
    summary = ItemSummary()
    for name, text in sorted(HOSTILE.items()):
        p = model.predict_proba_one(text)
        summary.add(digest_review(text, p, model.predict_proba_one, author=author_tag(name)))
        model.learn_one(text, p < 0.5)
    assert summary.render()["count"] == len(HOSTILE)


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=2_000), st.floats(0.0, 1.0))
def test_any_text_gives_a_digest(text: str, p: float) -> None:
    summary = ItemSummary()
    summary.add(digest_review(text, p, keyword_score, author="x"))
    assert summary.render()["count"] == 1


def test_state_is_bounded_whatever_the_number_of_reviews() -> None:
    rng = random.Random(3)
    words = [f"w{i}" for i in range(5_000)]
    summary = ItemSummary()
    for n in range(3_000):
        text = ". ".join(" ".join(rng.sample(words, 8)) + (" great" if n % 2 else " dull")
                         for _ in range(4)) + "."
        summary.add(digest_review(text, 0.9 if n % 2 else 0.1, keyword_score,
                                  author=author_tag(str(n))))
    assert summary.count == 3_000
    assert len(summary.terms) <= TERM_CAP and len(summary.phrases) <= PHRASE_CAP
    assert all(len(pool) <= POOL_PER_SIDE for pool in summary.pool.values())
    assert len(json.dumps(summary.to_state())) < 40_000


def test_one_sentence_per_side_when_reviewers_disagree() -> None:
    rng = random.Random(1)
    summary = ItemSummary()
    for n in range(40):
        positive = n % 5 < 3  # 60% positive
        summary.add(digest_review(review(positive, rng), 0.8 if positive else 0.2,
                                  keyword_score, author=author_tag(str(n))))
    view = summary.render()
    assert view["disagree"] and view["count"] == 40
    sides = [s["side"] for s in view["sentences"]]
    assert len(sides) == SUMMARY_SENTENCES and sides.count("+") == 2 and sides.count("-") == 1
    assert "special effects" in view["phrases"] or "final act" in view["phrases"]
    assert summary.sentiment() > 0.5


def test_agreeing_reviewers_get_their_side_only() -> None:
    rng = random.Random(2)
    summary = ItemSummary()
    for n in range(20):
        summary.add(digest_review(review(True, rng), 0.9, keyword_score, author=str(n)))
    view = summary.render()
    assert not view["disagree"] and {s["side"] for s in view["sentences"]} == {"+"}
    assert all("Seat" not in s["text"] for s in view["sentences"])  # filler is not opinion


def test_erasure_removes_the_authors_sentences() -> None:
    summary = ItemSummary()
    summary.add(digest_review("A superb and moving film, great fun.", 0.9, keyword_score,
                              author=author_tag("ann")))
    summary.add(digest_review("Great cast, a fun ride for everyone.", 0.9, keyword_score,
                              author=author_tag("bob")))
    assert summary.remove_author(author_tag("ann")) == 1
    texts = [s["text"] for s in summary.render()["sentences"]]
    assert texts == ["Great cast, a fun ride for everyone."]
    assert summary.remove_author(author_tag("ann")) == 0


def test_state_round_trips_through_json() -> None:
    rng = random.Random(4)
    summary = ItemSummary()
    for n in range(30):
        summary.add(digest_review(review(n % 3 > 0, rng), 0.8 if n % 3 else 0.3, keyword_score,
                                  author=str(n)))
    restored = ItemSummary.from_state(json.loads(json.dumps(summary.to_state())))
    assert restored.render() == summary.render()
    with pytest.raises(ValueError, match="format"):
        ItemSummary.from_state({"count": 1})


def test_sentences_are_split_after_punctuation_and_at_paragraphs() -> None:
    assert split_sentences("One. Two!  Three?<br /><br />Four\x00five") == [
        "One.", "Two!", "Three?", "Four five"]
    assert split_sentences("") == []


def test_recs_table_shows_what_reviewers_say() -> None:
    from rich.console import Console

    from streams.client.recs import Recommendation, ReviewSummary, _summary, recommendations_table

    summary = ItemSummary()
    rng = random.Random(5)
    for n in range(12):
        summary.add(digest_review(review(n % 4 > 0, rng), 0.8 if n % 4 else 0.2, keyword_score,
                                  author=str(n)))
    stored = json.dumps({**summary.render(), "state": summary.to_state()}).encode()
    shown = _summary(stored)
    assert isinstance(shown, ReviewSummary) and shown.count == 12 and shown.disagree
    assert _summary(b"not json") is None and _summary(None) is None
    recs = [Recommendation("1", 0.9, "Alien", (), "trending", summary=shown),
            Recommendation("2", 0.8, "Aliens", (), "trending")]
    console = Console(width=200, record=True)
    console.print(recommendations_table("ann", recs))
    text = console.export_text()
    assert "what reviewers say" in text and "(12 reviews)" in text
    assert shown.sentences[0][1][:20] in text


def reference_phrases(words: list[str]) -> list[str]:
    """`_phrases` as first written: one run at a time."""
    out: list[str] = []
    run: list[str] = []
    for w, content in zip([*words, "."], [*map(_is_content, words), False], strict=True):
        if content:
            run.append(w)
            continue
        if run:
            if len(run) <= 3:
                out.append(" ".join(run))
            if len(run) > 1:
                out += [f"{a} {b}" for a, b in zip(run, run[1:], strict=False)
                        if len(run) > 2 or f"{a} {b}" != out[-1]]
            run = []
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["great", "cast", "the", "it", "plot", "!", "-", "10", "x_y",
                                 "superb", "a", "acting"]), max_size=14))
def test_phrases_equal_the_run_by_run_reference(words: list[str]) -> None:
    assert _phrases(words) == reference_phrases(words)


SPACES = ["a", "b", ".", "!", "?", "\n", " ", "\t", "\r", "\x0b", "\x1c", "\x85", "\xa0",
          "\u2028", "\u3000"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(SPACES), max_size=20).map("".join),
       st.sampled_from([1, 2, 6, None]))
def test_sentences_equal_the_lookbehind_split(plain: str, limit: int | None) -> None:
    """`_sentences` finds cut points with a fast regex; the sentences are those of splitting
    at `_SENTENCE_END`, whitespace squeezed, empty ones dropped."""
    expected = [s for s in (" ".join(p.split()) for p in _SENTENCE_END.split(plain)) if s]
    assert _sentences(plain, limit) == expected[:limit]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_the_ascii_word_regex_finds_the_same_words(text: str) -> None:
    assert _WORD_OR_BREAK_ASCII.findall(text) == _WORD_OR_BREAK.findall(text)


def test_digest_reading_equals_digest_review() -> None:
    texts = [review(n % 2 == 0, random.Random(n)) for n in range(20)] + list(HOSTILE.values())
    for n, text in enumerate(texts):
        reading = read_review(text)
        ps = [keyword_score(s) for s in reading.to_score]
        assert digest_reading(reading, 0.3 + n % 2 * 0.4, ps, author="a") == digest_review(
            text, 0.3 + n % 2 * 0.4, keyword_score, author="a")
