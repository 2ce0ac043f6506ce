"""Reading a user's recommendations back from Redis, with titles, explanations and sentiment.

Read-only and layout-driven: every key comes from `streams.contract.keys.Keys`. One round trip,
whatever ``n``: a Lua script (`READ_SCRIPT`, sent as ``EVALSHA``) reads ``ZREVRANGE recs:{user}
WITHSCORES``, the items' entries of ``explain:{user}``, the ``item:{id}`` titles, ``sentiment:{id}``
aggregates and ``summary:{id}`` review summaries of the recommended items and the titles of the
items that explain them. A script, not a pipeline, because the item keys depend on the top-N; it
runs atomically, so recs and explanations come from the same worker write (the worker deletes and
rewrites the two together). Decoding stays here, in Python.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from streams.contract.keys import Keys
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
    """The user's top ``n`` recommendations, best first; empty when there are none (yet).

    Parameters
    ----------
    user_id
        The user, as the events named them.
    n
        How many (the workers write ``TOP_N``, 50 by default).
    settings
        Where Redis is and the key prefix (default: `streams.settings.get_settings`).
    client
        A Redis client to use (and leave open); default: one made from ``settings`` and closed.
    """
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


#: What a reader of recommendations sends to Redis (for an ACL user, see docs/operations.md,
#: "Security"): the script, the commands it runs, and ``hget`` for the rare second trip.
READER_REDIS_COMMANDS: tuple[str, ...] = (
    "client|setinfo", "evalsha", "eval", "zrevrange", "hget", "hmget", "get")

#: The read in one round trip. KEYS: recs, explain; ARGV: n and the key prefixes of the item,
#: sentiment and summary keys (from `Keys`, so the layout stays in one module). Replies, by
#: recommended item: top (item, score, ...), explanation, title, sentiment fields, summary; then
#: the explaining items outside the top (their ids as strings in the JSON, first seen first) and
#: their titles. ``false`` (a missing value) comes back as None.
READ_SCRIPT = """
local n = tonumber(ARGV[1])
local item_prefix, sentiment_prefix, summary_prefix = ARGV[2], ARGV[3], ARGV[4]
local top = redis.call('ZREVRANGE', KEYS[1], 0, n - 1, 'WITHSCORES')
if #top == 0 then return {} end
local shown = {}
for i = 1, #top, 2 do shown[top[i]] = true end
local explain, titles, sentiments, summaries, because, because_titles = {}, {}, {}, {}, {}, {}
for i = 1, #top, 2 do
  local item, k = top[i], (i + 1) / 2
  local raw = redis.call('HGET', KEYS[2], item)
  explain[k] = raw
  titles[k] = redis.call('HGET', item_prefix .. item, 'title')
  sentiments[k] = redis.call('HMGET', sentiment_prefix .. item,
                             'count', 'sum', 'decayed_sum', 'decayed_weight')
  summaries[k] = redis.call('GET', summary_prefix .. item)
  if raw then
    local ok, obj = pcall(cjson.decode, raw)
    if ok and type(obj) == 'table' and type(obj['because']) == 'table' then
      for _, b in ipairs(obj['because']) do
        if type(b) == 'string' and not shown[b] then
          shown[b] = true
          because[#because + 1] = b
        end
      end
    end
  end
end
for k, b in ipairs(because) do because_titles[k] = redis.call('HGET', item_prefix .. b, 'title') end
return {top, explain, titles, sentiments, summaries, because, because_titles}
"""
READ_SCRIPT_SHA = hashlib.sha1(READ_SCRIPT.encode()).hexdigest()


def _run_read_script(client: redis.Redis, keys: Keys, user_id: str, n: int) -> list[Any]:
    """The script's reply: ``EVALSHA``, or ``EVAL`` (which caches it) the first time a server
    sees it."""
    from redis.exceptions import NoScriptError

    args = (2, keys.recs(user_id), keys.explain(user_id), n,
            keys.item(""), keys.item_sentiment(""), keys.summary(""))
    try:
        return client.evalsha(READ_SCRIPT_SHA, *args)  # type: ignore[return-value]
    except NoScriptError:
        return client.eval(READ_SCRIPT, *args)  # type: ignore[return-value]


def _read(client: redis.Redis, keys: Keys, user_id: str, n: int) -> list[Recommendation]:
    reply = _run_read_script(client, keys, user_id, n)
    if not reply:
        return []
    top_raw, explain_raw, title_raw, sentiment_raw, summary_raw, because_raw, because_titles = reply
    top = [(_text(top_raw[i]) or "", float(top_raw[i + 1])) for i in range(0, len(top_raw), 2)]
    explanations = [_explanation(raw) for raw in explain_raw]
    items = [item for item, _ in top]
    titles: dict[str, str | None] = {item: _text(t) for item, t in zip(items, title_raw,
                                                                      strict=True)}
    titles.update((_text(b) or "", _text(t)) for b, t in zip(because_raw, because_titles,
                                                             strict=True))
    # Ids the script does not read (only a malformed explanation has them: a number, a string
    # instead of a list): a second trip, so the result is the same as reading them with the rest.
    unread = sorted({b for because, _ in explanations for b in because} - titles.keys())
    if unread:
        with client.pipeline(transaction=False) as pipe:
            for item in unread:
                pipe.hget(keys.item(item), "title")
            titles.update(zip(unread, map(_text, pipe.execute()), strict=True))

    return [
        Recommendation(
            item_id=item,
            score=score,
            title=titles[item],
            because=tuple(Because(b, titles.get(b)) for b in because),
            source=source,
            sentiment=_sentiment(*sentiment),
            summary=_summary(summary),
        )
        for (item, score), (because, source), sentiment, summary
        in zip(top, explanations, sentiment_raw, summary_raw, strict=True)
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
