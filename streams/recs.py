"""Reading a user's recommendations back from Redis, with titles, explanations and sentiment.

Read-only and layout-driven: every key comes from `streams.keys.Keys`. Two round trips, whatever
``n``: first ``ZREVRANGE recs:{user} WITHSCORES`` and ``HGETALL explain:{user}`` in one MULTI, so
both come from the same worker write (the worker deletes and rewrites the two together, so
``explain`` holds at most ``top_n`` entries); then one pipeline for the ``item:{id}`` titles and
``sentiment:{id}`` aggregates and ``summary:{id}`` review summaries of the recommended items and
the titles of the items that explain
them. The top-N has to come back before anything can be asked for by item, hence two trips.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from streams.keys import Keys
from streams.settings import Settings, get_settings

if TYPE_CHECKING:
    import redis
    from rich.table import Table

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Because:
    """An item the user liked that led to a recommendation."""

    item_id: str
    title: str | None


@dataclass(frozen=True, slots=True)
class Sentiment:
    """Review sentiment aggregate of an item (`Keys.item_sentiment`)."""

    count: int
    mean: float  # mean P(positive) over the item's reviews
    recent: float  # the same, reviews weighted by time decay


@dataclass(frozen=True, slots=True)
class ReviewSummary:
    """An item's review summary (`Keys.summary`, built by `models.summary.ItemSummary`)."""

    count: int  # reviews it rests on
    sentences: tuple[tuple[str, str], ...]  # (side "+"/"-", text), most representative first
    phrases: tuple[str, ...]
    disagree: bool

    def short(self, width: int = 90) -> str:
        """One line: the first sentence (cut to ``width``), the key phrases, the count."""
        def cut(sentence: str, limit: int) -> str:
            return sentence if len(sentence) <= limit else sentence[:limit - 1] + "…"

        text = ""
        if self.sentences:
            side, sentence = self.sentences[0]
            text = f"{side} \u201c{cut(sentence, width)}\u201d"
        if self.disagree and len(self.sentences) > 1:
            other = next((s for s in self.sentences if s[0] != self.sentences[0][0]), None)
            if other is not None:
                text += f" / {other[0]} \u201c{cut(other[1], width // 2)}\u201d"
        if self.phrases:
            text += f" [{', '.join(self.phrases[:3])}]"
        return f"{text} ({self.count} reviews)".strip()


@dataclass(frozen=True, slots=True)
class Recommendation:
    item_id: str
    score: float
    title: str | None  # None when the item has no metadata hash
    because: tuple[Because, ...]
    source: str | None  # "items" | "users" | "trending"; None without an explanation
    sentiment: Sentiment | None = None
    summary: ReviewSummary | None = None

    @property
    def label(self) -> str:
        return self.title or self.item_id


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _explanation(raw: Any) -> tuple[list[str], str | None]:
    """(because item ids, source) from an explain hash value; empty when missing or unreadable."""
    if raw is None:
        return [], None
    try:
        obj = orjson.loads(raw)
        because = [str(item) for item in obj.get("because", [])]
        source = obj.get("source")
        return because, None if source is None else str(source)
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        logger.debug("unreadable explanation %r", raw)
        return [], None


def _sentiment(count: Any, total: Any, decayed_sum: Any, decayed_weight: Any
               ) -> Sentiment | None:
    try:
        n, s = float(_text(count) or 0), float(_text(total) or 0)
        ds, dw = float(_text(decayed_sum) or 0), float(_text(decayed_weight) or 0)
    except ValueError:
        return None
    if n <= 0:
        return None
    return Sentiment(int(n), s / n, ds / dw if dw > 0 else s / n)


def _summary(raw: Any) -> ReviewSummary | None:
    if raw is None:
        return None
    try:
        obj = orjson.loads(raw)
        sentences = tuple((str(s["side"]), str(s["text"])) for s in obj.get("sentences", []))
        return ReviewSummary(int(obj.get("count", 0)), sentences,
                             tuple(str(p) for p in obj.get("phrases", [])),
                             bool(obj.get("disagree", False)))
    except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError, ValueError):
        logger.debug("unreadable summary %r", raw)
        return None


def get_recommendations(
    user_id: str,
    n: int = 10,
    *,
    settings: Settings | None = None,
    client: redis.Redis | None = None,
) -> list[Recommendation]:
    """The user's top ``n`` recommendations, best first; empty when there are none (yet)."""
    if n < 1:
        return []
    settings = settings or get_settings()
    keys = Keys(settings.key_prefix)
    own_client = client is None
    if client is None:
        from streams.connections import redis_sync

        client = redis_sync(settings)
    try:
        return _read(client, keys, str(user_id), n)
    finally:
        if own_client:
            client.close()


def _read(client: redis.Redis, keys: Keys, user_id: str, n: int) -> list[Recommendation]:
    with client.pipeline(transaction=True) as pipe:  # recs and explanations of the same write
        pipe.zrevrange(keys.recs(user_id), 0, n - 1, withscores=True)
        pipe.hgetall(keys.explain(user_id))
        top_raw, explain_raw = pipe.execute()
    top = [(_text(item) or "", float(score)) for item, score in top_raw]
    if not top:
        return []
    explain = {_text(item): raw for item, raw in explain_raw.items()}
    explanations = [_explanation(explain.get(item)) for item, _ in top]

    items = [item for item, _ in top]
    because_items = sorted({b for because, _ in explanations for b in because} - set(items))
    with client.pipeline(transaction=False) as pipe:
        for item in items:
            pipe.hget(keys.item(item), "title")
            pipe.hmget(keys.item_sentiment(item), ["count", "sum", "decayed_sum", "decayed_weight"])
            pipe.get(keys.summary(item))
        for item in because_items:
            pipe.hget(keys.item(item), "title")
        replies = pipe.execute()
    titles: dict[str, str | None] = {}
    sentiments: dict[str, Sentiment | None] = {}
    summaries: dict[str, ReviewSummary | None] = {}
    for i, item in enumerate(items):
        titles[item] = _text(replies[3 * i])
        sentiments[item] = _sentiment(*replies[3 * i + 1])
        summaries[item] = _summary(replies[3 * i + 2])
    for item, title in zip(because_items, replies[3 * len(items):], strict=True):
        titles[item] = _text(title)

    return [
        Recommendation(
            item_id=item,
            score=score,
            title=titles[item],
            because=tuple(Because(b, titles.get(b)) for b in because),
            source=source,
            sentiment=sentiments[item],
            summary=summaries[item],
        )
        for (item, score), (because, source) in zip(top, explanations, strict=True)
    ]


def recommendations_table(user_id: str, recs: Sequence[Recommendation]) -> Table:
    """A rich table: rank, title (or item id), score, explanation, sentiment and review summary
    when known (the summary column only when some item has one)."""
    from rich.table import Table
    from rich.text import Text  # titles are data, not markup: "[REC]" must print as itself

    table = Table(title=Text(f"Recommendations for user {user_id}"), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("title")
    table.add_column("score", justify="right")
    table.add_column("why")
    table.add_column("sentiment", justify="right")
    with_summary = any(rec.summary is not None and rec.summary.sentences for rec in recs)
    if with_summary:
        table.add_column("what reviewers say", max_width=60)
    for rank, rec in enumerate(recs, start=1):
        if rec.because:
            why = "because you liked: " + ", ".join(b.title or b.item_id for b in rec.because)
        else:
            why = rec.source or ""
        sentiment = (f"{rec.sentiment.mean:.2f} ({rec.sentiment.count})"
                     if rec.sentiment is not None else "")
        cells = [str(rank), Text(rec.label), f"{rec.score:.3f}", Text(why), sentiment]
        if with_summary:
            cells.append(Text(rec.summary.short() if rec.summary is not None else ""))
        table.add_row(*cells)
    return table
