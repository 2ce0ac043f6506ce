"""Per-item review summaries, kept incrementally: a few representative sentences and key phrases.

Issue 14 (the seed names text summarisation). Extractive and bounded, because reviews stream in
and an item may get millions of them:

1. ``digest_review`` reduces one review to what the summary may keep of it: its **one most
   opinionated sentence** on the review's own side (every sentence of the first ``MAX_SENTENCES``
   is scored by the sentiment model the caller passes in), its **candidate key phrases** (runs of
   one to three content words between stop words and punctuation, as RAKE cuts them; at most
   ``MAX_REVIEW_PHRASES``) and content words from its first ``PHRASE_CHARS`` characters, and a
   pseudonymous author tag (erasure).
2. ``ItemSummary.add`` merges a digest: review count, sum of review P(positive), positives; the
   item's content-word and phrase tallies as space-saving counters (``TERM_CAP``/``PHRASE_CAP``
   entries: a new entry replaces the smallest and inherits its count, so frequent words survive
   any order); a pool of at most ``POOL_PER_SIDE`` candidate sentences per side.
3. A sentence's **representativeness** is how much of the item's frequent vocabulary it uses:
   the mean, over its content words, of the share of the item's reviews that use each word, times
   how opinionated it is. The pool keeps the best candidates, re-scored against the current
   tallies whenever one must go.
4. ``ItemSummary.render`` picks ``SUMMARY_SENTENCES`` sentences: the sides in proportion to the
   item's reviews, **at least one per side when reviewers disagree** (each side ≥ 25% of
   reviews), and the key phrases surely seen in at least two reviews (space-saving's lower
   bound), most frequent first.

Why no library: LexRank/TextRank (sumy, pytextrank) rank sentences of a whole document set at
once (a similarity graph over all sentences), which is not incremental and not bounded per item;
sumy's tokenizers need nltk data that cannot be downloaded here. Sentence splitting is a regex
(fine for review prose; abbreviations like "Mr." may split a sentence early).

Pure: no I/O, no clock. The state is a JSON-able dict (``to_state``/``from_state``).

>>> summary = ItemSummary()
>>> def score(sentence: str) -> float:
...     return 0.9 if "great" in sentence else 0.1
>>> for i, text in enumerate(["A great cast and a great script. I laughed a lot.",
...                           "The great cast carries it. Worth it.",
...                           "Dull plot, the cast is wasted. A boring evening."]):
...     summary.add(digest_review(text, score(text), score, author=f"user{i}"))
>>> view = summary.render()
>>> view["count"], [s["side"] for s in view["sentences"]]
(3, ['+', '+', '-'])
>>> view["phrases"]
['great cast']
"""

from __future__ import annotations

import hashlib
import heapq
import html
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ItemSummary",
    "ReviewDigest",
    "ReviewReading",
    "author_tag",
    "digest_reading",
    "digest_review",
    "read_review",
    "split_sentences",
]

STATE_FORMAT = "tastemaker.ItemSummary/1"
MAX_CHARS = 5_000  # of a review read for its sentences (the sentiment model reads as many)
MAX_SENTENCES = 6  # scored per review: bounded cost per review
PHRASE_CHARS = 1_500  # of a review read for key phrases and words
MIN_SENTENCE_CHARS, MAX_SENTENCE_CHARS = 20, 240
MAX_REVIEW_PHRASES = 12
MAX_REVIEW_TERMS = 40
TERM_CAP = 200
PHRASE_CAP = 120
POOL_PER_SIDE = 6
SUMMARY_SENTENCES = 3
SUMMARY_PHRASES = 5
DISAGREE_SHARE = 0.25

_TAG = re.compile(r"<[^>]*>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n\s*\n\s*")  # what splits sentences
_CUT = re.compile(r"[.!?](?=\s)|\n(?=\s*\n)")  # a point inside each of its matches
_WORD_OR_BREAK = re.compile(r"\w[\w'-]*|[^\w\s]")
# The same tokens of an ASCII text, found faster (ASCII classes; \s as str.isspace has it).
_WORD_OR_BREAK_ASCII = re.compile(r"\w[\w'-]*|[^\w\s\x1c-\x1f]", re.ASCII)

STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each even ever every few for
from further get gets getting got had has have having he her here hers herself him himself his how
i if in into is it its itself just let me more most much my myself no nor not now of off on once
only or other our ours ourselves out over own quite rather really same she should so some still
such than that the their theirs them themselves then there these they this those through to too
under until up upon us very was we were what when where which while who whom why will with would
yet you your yours yourself yourselves isn't aren't wasn't weren't don't doesn't didn't can't
couldn't won't wouldn't shouldn't haven't hasn't hadn't it's i'm i've i'd i'll you're you've
he's she's that's there's what's let's they're we're who's one two three first last also well
movie movies film films show shows series season episode episodes watch watched watching seen see
saw make made makes like thing things lot bit way something anything nothing everything time
times people think thought say said go going gone know know really ever never always many may
might must though although however yes oh etc br
""".split())


@dataclass(frozen=True, slots=True)
class ReviewDigest:
    """What an item summary may keep of one review (see the module doc)."""

    p: float  # the review's P(positive)
    sentence: str  # its most opinionated sentence on its side ("" when none qualifies)
    sentence_p: float
    terms: tuple[str, ...]  # the sentence's content words (for representativeness)
    review_terms: tuple[str, ...]  # the review's distinct content words
    phrases: tuple[str, ...]  # the review's distinct candidate key phrases
    author: str  # author_tag(user id)


def author_tag(user_id: str) -> str:
    """A pseudonymous, stable tag of a user id (16 hex digits of SHA-256): enough to remove an
    erased user's sentence, not to read the id back from a summary.

    >>> len(author_tag("196")), author_tag("196") == author_tag("196") != author_tag("197")
    (16, True)
    """
    return hashlib.sha256(user_id.encode("utf-8", "replace")).hexdigest()[:16]


def _plain(text: str) -> str:
    text = text[:MAX_CHARS]
    if "<" in text:
        text = _TAG.sub("\n\n", text)  # IMDB's <br /><br /> separates paragraphs
    if "&" in text:
        text = html.unescape(text)
    text = _CONTROL.sub(" ", text)
    return text.encode("utf-8", "replace").decode("utf-8")


def split_sentences(text: str) -> list[str]:
    """Sentences of a review: HTML dropped, split after . ! ? and at blank lines, whitespace
    squeezed.

    >>> split_sentences("Great film!<br /><br />The cast shines. Go see it")
    ['Great film!', 'The cast shines.', 'Go see it']
    """
    return _sentences(_plain(text))


def _sentences(plain: str, limit: int | None = None) -> list[str]:
    """Non-empty sentences of plain text, split as ``_SENTENCE_END.split`` would, only the first
    ``limit`` cut out (a long review's tail is not split for nothing).

    A separator is a whole run of whitespace after . ! ? or holding two line breaks; `_CUT` finds a
    point inside each such run (its regex scans far faster than the lookbehind), and whitespace
    at a part's ends is squeezed away anyway, so the parts are the same.

    >>> _sentences("One. Two!  Three?", 2)
    ['One.', 'Two!']
    """
    out: list[str] = []
    start = 0
    for end in itertools.chain(map(re.Match.end, _CUT.finditer(plain)), [len(plain)]):
        sentence = " ".join(plain[start:end].split())
        start = end
        if sentence:
            out.append(sentence)
            if len(out) == limit:
                break
    return out


def _words(sentence: str) -> list[str]:
    sentence = sentence.lower()
    return (_WORD_OR_BREAK_ASCII if sentence.isascii() else _WORD_OR_BREAK).findall(sentence)


def _content(words: Iterable[str]) -> list[str]:
    return list(filter(_is_content, words))


def _is_content(word: str) -> bool:
    return len(word) > 2 and word not in STOP_WORDS and word[0].isalnum() and not word.isdigit()


class _Marks(dict):
    """Each word as phrase-finding reads it: itself when a content word, else a line break (the
    end of a run). Remembered: reviews repeat their words, and a dict hit is a fraction of the
    test. A cache, not state (cleared when large)."""

    def __missing__(self, word: str) -> str:
        mark = self[word] = word if _is_content(word) else "\n"
        return mark


_MARKS = _Marks()
_MARKS_MAX = 20_000  # words (~3 MB at most); the common ones are back after a clear


def _marks(words: list[str]) -> list[str]:
    if len(_MARKS) > _MARKS_MAX:
        _MARKS.clear()
    return list(map(_MARKS.__getitem__, words))


def _phrases(words: list[str]) -> list[str]:
    """RAKE-style candidates: maximal runs of content words (cut at stop words and punctuation)
    of 1-3 words, and the word pairs inside longer runs.

    >>> _phrases("the great cast carries it , a great cast".split())
    ['great cast carries', 'great cast', 'cast carries', 'great cast']
    """
    return list(_phrase_stream(_marks(words)))


def _phrase_stream(marks: list[str]) -> Iterator[str]:
    """`_phrases` from the words' `_marks`, in order: words hold no whitespace, so the runs are
    the lines of the marks joined by spaces."""
    for run in " ".join(marks).split("\n"):
        run = run.strip()
        if not run:
            continue
        n = run.count(" ") + 1
        if n <= 3:
            yield run
        if n > 2:  # a run of two is its own pair
            yield from map(" ".join, itertools.pairwise(run.split(" ")))


def _first_distinct(items: Iterable[str], limit: int) -> list[str]:
    """The first ``limit`` distinct items, in order; reads no further than it must."""
    out: dict[str, None] = {}
    for item in items:
        out[item] = None
        if len(out) == limit:
            break
    return list(out)


@dataclass(frozen=True, slots=True)
class ReviewReading:
    """What `digest_review` reads of a review text before scoring anything: the plain text, the
    sentences that may represent it, and which of them need a score of their own (none when the
    review is one sentence: its own P(positive) is the sentence's)."""

    plain: str
    sentences: tuple[str, ...]
    to_score: tuple[str, ...]


def read_review(text: str) -> ReviewReading:
    """The sentences of ``text`` a digest considers (the first `MAX_SENTENCES`, of a sensible
    length), and those to score.

    >>> read_review("Too short. A sentence long enough to count.").to_score
    ('A sentence long enough to count.',)
    >>> read_review("One sentence, the whole review.").to_score
    ()
    """
    plain = _plain(text)
    sentences = tuple(s for s in _sentences(plain, MAX_SENTENCES)
                      if MIN_SENTENCE_CHARS <= len(s) <= MAX_SENTENCE_CHARS)
    whole = len(sentences) == 1 and len(sentences[0]) >= len(plain.strip()) - 2
    return ReviewReading(plain, sentences, () if whole else sentences)


def digest_review(text: str, p: float, score: Callable[[str], float], *, author: str
                  ) -> ReviewDigest:
    """Reduce one review to a `ReviewDigest`; ``score`` gives a sentence's P(positive).

    Never raises on text: empty, huge, non-Latin, emoji, HTML or control characters give a
    digest with fewer (or no) sentences and phrases.
    """
    reading = read_review(text)
    return digest_reading(reading, p, [score(s) for s in reading.to_score], author=author)


def digest_reading(reading: ReviewReading, p: float, sentence_ps: Sequence[float], *,
                   author: str) -> ReviewDigest:
    """`digest_review` from a `read_review` and the P(positive) of its ``to_score`` sentences, in
    order (a caller that scores many texts at once computes them together)."""
    positive = p >= 0.5
    best, best_p, best_strength = "", 0.5, -1.0
    scores = sentence_ps if reading.to_score else [p] * len(reading.sentences)
    for sentence, sp in zip(reading.sentences, scores, strict=True):
        sp = float(sp)
        if (sp >= 0.5) != positive:
            continue  # the summary shows a review's side by a sentence on that side
        strength = abs(sp - 0.5)
        if strength > best_strength:
            best, best_p, best_strength = sentence, sp, strength
    marks = _marks(_words(reading.plain[:PHRASE_CHARS]))
    phrases = _first_distinct(_phrase_stream(marks), MAX_REVIEW_PHRASES)
    distinct = dict.fromkeys(marks)
    distinct.pop("\n", None)
    review_terms = list(distinct)[:MAX_REVIEW_TERMS]
    terms = tuple(dict.fromkeys(_content(_words(best)))) if best else ()
    return ReviewDigest(float(p), best, best_p, terms, tuple(review_terms), tuple(phrases),
                        author)


def _phrase_rank(item: tuple[str, list[int]]) -> tuple[float, str]:
    """Most reviews first (guaranteed count), a longer phrase counting up to twice a word."""
    phrase, (n, error) = item
    return (-(n - error) * (1.0 + 0.5 * min(2, phrase.count(" "))), phrase)


def _space_saving_add(counts: dict[str, list[int]], keys: Sequence[str], cap: int) -> None:
    """Metwally et al.'s space-saving, one review's distinct ``keys`` at a time: at most ``cap``
    entries ``[count, error]``; new keys past the cap replace the smallest entries not in this
    review (ties: the smallest key, so the result does not depend on dict order), inheriting
    their count as ``error``: ``count - error`` is a guaranteed lower bound of the true count,
    ``count`` an upper bound. One ``nsmallest`` per review, not one scan per new key.

    >>> tally = {}
    >>> for review in (["a", "b"], ["a"], ["c"]):
    ...     _space_saving_add(tally, review, 2)
    >>> tally
    {'a': [2, 0], 'c': [2, 1]}
    """
    new = []
    for key in keys:
        entry = counts.get(key)
        if entry is not None:
            entry[0] += 1
        elif len(counts) < cap:
            counts[key] = [1, 0]
        else:
            new.append(key)
    if not new:
        return
    ours = set(keys)
    victims = heapq.nsmallest(len(new), ((c[0], k) for k, c in counts.items() if k not in ours))
    for key, (count, victim) in zip(new, victims, strict=False):
        del counts[victim]
        counts[key] = [count + 1, count]


_ZERO = (0, 0)


class ItemSummary:
    """One item's incremental review summary (see the module doc). Bounded: at most
    ``2 * POOL_PER_SIDE`` sentences of ``MAX_SENTENCE_CHARS``, ``TERM_CAP`` words and
    ``PHRASE_CAP`` phrases, whatever the number of reviews."""

    def __init__(self) -> None:
        self.count = 0
        self.p_sum = 0.0
        self.positives = 0
        self.terms: dict[str, list[int]] = {}  # word -> [count, error] (space-saving)
        self.phrases: dict[str, list[int]] = {}
        self.pool: dict[str, list[dict[str, Any]]] = {"+": [], "-": []}

    def add(self, digest: ReviewDigest) -> None:
        """Merge one review's digest: O(pool + caps) work, whatever the item's review count."""
        self.count += 1
        self.p_sum += digest.p
        self.positives += digest.p >= 0.5
        _space_saving_add(self.terms, digest.review_terms, TERM_CAP)
        _space_saving_add(self.phrases, digest.phrases, PHRASE_CAP)
        if not digest.sentence:
            return
        side = "+" if digest.p >= 0.5 else "-"
        pool = self.pool[side]
        if any(c["text"] == digest.sentence for c in pool):
            return
        pool.append({"text": digest.sentence, "p": digest.sentence_p,
                     "terms": list(digest.terms), "by": digest.author})
        if len(pool) > POOL_PER_SIDE:
            pool.sort(key=self._rank_key)
            del pool[POOL_PER_SIDE:]

    def representativeness(self, candidate: dict[str, Any]) -> float:
        """Mean share of the item's reviews using each of the sentence's content words, times
        how opinionated the sentence is (|p - 0.5| * 2, at least 0.1)."""
        terms = candidate["terms"]
        if not terms or not self.count:
            return 0.0
        usage = sum(self.terms.get(t, _ZERO)[0] for t in terms) / (
            self.count * math.sqrt(len(terms)))
        return usage * max(0.1, abs(candidate["p"] - 0.5) * 2.0)

    def _rank_key(self, candidate: dict[str, Any]) -> tuple[float, str]:
        return (-self.representativeness(candidate), candidate["text"])

    def remove_author(self, author: str) -> int:
        """Drop the sentences written by ``author`` (an erased user); returns how many."""
        removed = 0
        for side, pool in self.pool.items():
            kept = [c for c in pool if c["by"] != author]
            removed += len(pool) - len(kept)
            self.pool[side] = kept
        return removed

    @property
    def mean(self) -> float:
        return self.p_sum / self.count if self.count else 0.5

    def render(self) -> dict[str, Any]:
        """The public summary: count, mean, positive share, whether reviewers disagree, the
        chosen sentences (text, side, p) and the key phrases."""
        share, disagree, sentences = self._chosen()
        # only phrases surely seen twice are shown: the rest need no sorting
        shown = [item for item in self.phrases.items() if item[1][0] - item[1][1] >= 2]
        phrases = [p for p, _ in sorted(shown, key=_phrase_rank)[:SUMMARY_PHRASES]]
        return {"count": self.count, "mean": round(self.mean, 4),
                "positive_share": round(share, 4), "disagree": disagree,
                "sentences": sentences, "phrases": phrases}

    def _chosen(self) -> tuple[float, bool, list[dict[str, Any]]]:
        """`render`'s positive share, whether reviewers disagree, and its sentences."""
        share = self.positives / self.count if self.count else 0.0
        disagree = (self.count > 1 and DISAGREE_SHARE <= share <= 1 - DISAGREE_SHARE
                    and bool(self.pool["+"]) and bool(self.pool["-"]))
        # the sides in proportion to the reviews; at least one each when reviewers disagree
        n_pos = round(SUMMARY_SENTENCES * share)
        if disagree:
            n_pos = min(SUMMARY_SENTENCES - 1, max(1, n_pos))
        n_pos = min(n_pos, len(self.pool["+"]))
        wanted = {"+": n_pos, "-": SUMMARY_SENTENCES - n_pos}
        sentences = []
        for side in ("+", "-"):
            for c in sorted(self.pool[side], key=self._rank_key)[:wanted[side]]:
                sentences.append({"text": c["text"], "side": side, "p": round(c["p"], 4)})
        return share, disagree, sentences

    def sentiment(self) -> float:
        """The summary's own sentiment: the mean P(positive) of its sentences (0.5: none)."""
        sentences = self._chosen()[2]
        return sum(s["p"] for s in sentences) / len(sentences) if sentences else 0.5

    # --- state ----------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "count": self.count, "p_sum": self.p_sum,
                "positives": self.positives, "terms": self.terms, "phrases": self.phrases,
                "pool": self.pool}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ItemSummary:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} state: format={state.get('format')!r}")
        summary = cls()
        summary.count = int(state["count"])
        summary.p_sum = float(state["p_sum"])
        summary.positives = int(state["positives"])
        summary.terms = _tally(state, "terms")
        summary.phrases = _tally(state, "phrases")
        summary.pool = {side: list(state["pool"].get(side, [])) for side in ("+", "-")}
        return summary


def _tally(state: dict[str, Any], name: str) -> dict[str, list[int]]:
    """A copy of the state's space-saving tally ``name`` (word -> ``[count, error]``), its
    counts checked to be integers by one sum in C rather than an ``int()`` each (a summary is
    loaded for every review batch of its item); a malformed one raises `ValueError` naming it.

    >>> _tally({"terms": {"cast": [3, 1]}}, "terms")
    {'cast': [3, 1]}
    >>> _tally({"terms": {"cast": ["3", 1]}}, "terms")
    Traceback (most recent call last):
    ...
    ValueError: malformed tastemaker.ItemSummary/1 state: terms must map words to [count, error]
    """
    try:
        copy = {word: [count, error] for word, (count, error) in state[name].items()}
        # the sum of ints is an int; a float makes it a float, anything else raises TypeError
        counted = type(sum(itertools.chain.from_iterable(copy.values()))) is int
    except (AttributeError, TypeError, ValueError):
        counted = False
    if not counted:
        raise ValueError(f"malformed {STATE_FORMAT} state: {name} must map words to "
                         "[count, error]")
    return copy
