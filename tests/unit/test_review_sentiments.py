"""ReviewSentiments in the worker: scoring a batch equals scoring its reviews one by one;
re-learning skips what retention deleted and never waits without bound (against a fake log; the
real-Kafka test is tests/integration/test_sentiment_snapshots.py)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

import orjson
import pytest
from aiokafka.errors import OffsetOutOfRangeError

from models.sentiment import ReviewSentiment, label_from_rating
from streams.contract.events import Review
from streams.contract.keys import Keys
from streams.runtime.sentiment import PartitionModel, ReviewSentiments
from streams.settings import load_settings
from tests.unit.test_sentiment import HOSTILE
from tests.unit.test_summary import review


def sentiments() -> ReviewSentiments:
    settings = load_settings()
    out = ReviewSentiments(settings, Keys(settings.key_prefix))
    out.models[0] = PartitionModel(ReviewSentiment(), 0)
    return out


def test_score_many_equals_score_in_order() -> None:
    rng = random.Random(5)
    texts = [review(n % 3 > 0, rng) for n in range(60)] + [
        t[:10_000] for name, t in HOSTILE.items()
        if t.strip() and name != "lone_surrogate"]  # what the event contract lets through
    reviews = [(100 + n, Review(user_id=f"u{n % 7}", item_id="i1", ts=1.7e9, text=text,
                                rating=None if n % 4 == 3 else (5 if n % 3 else 1)))
               for n, text in enumerate(texts)]
    one, many = sentiments(), sentiments()
    expected = [one.score(0, offset, r) for offset, r in reviews]
    got = many.score_many(0, reviews[:7]) + many.score_many(0, []) + many.score_many(
        0, reviews[7:])
    assert got == expected
    assert many.models[0].next_offset == one.models[0].next_offset == reviews[-1][0] + 1
    assert many.models[0].model.to_bytes() == one.models[0].model.to_bytes()
    assert len({p for p, _ in expected}) > 10  # the model learned: scores are not all 0.5


class Message(NamedTuple):
    offset: int
    value: bytes
    timestamp: int
    key: bytes = b"u"  # the user id of `message`


class FakeLog:
    """The consumer side of one partition: messages ``0..high - 1`` (those before ``first``
    deleted), served three at a time; ``on_fetch`` runs before each fetch (to move ``first``)."""

    def __init__(self, high: int, first: int = 0,
                 on_fetch: Callable[[FakeLog], None] | None = None) -> None:
        self.high, self.first, self.on_fetch, self.position_ = high, first, on_fetch, 0
        self.fetches = 0

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def assign(self, tps: list) -> None: ...

    async def beginning_offsets(self, tps: list) -> dict:
        return {tp: self.first for tp in tps}

    def seek(self, tp: object, offset: int) -> None:
        self.position_ = offset

    async def position(self, tp: object) -> int:
        return self.position_

    async def getmany(self, tp: object, *, timeout_ms: int, max_records: int) -> dict:
        self.fetches += 1
        if self.on_fetch is not None:
            self.on_fetch(self)
        if self.position_ < self.first:
            raise OffsetOutOfRangeError({tp: self.position_})
        offsets = range(self.position_, min(self.position_ + 3, self.high))
        if not offsets:
            await asyncio.sleep(0.01)
            return {}
        self.position_ = offsets[-1] + 1
        return {tp: [Message(o, message(o), 1_700_000_000_000) for o in offsets]}


def message(offset: int) -> bytes:
    return orjson.dumps({"user_id": "u", "item_id": "i", "ts": 1.7e9, "rating": rating(offset),
                         "text": f"{'A superb film' if offset % 2 else 'A dull mess'} {offset}."})


def rating(offset: int) -> int | None:
    return None if offset % 5 == 4 else (5 if offset % 2 else 1)


class NoSnapshot:
    async def strlen(self, key: str) -> int:
        return 0

    async def get(self, key: str) -> None:
        return None


def ensure_with(log: FakeLog, committed: int, monkeypatch: pytest.MonkeyPatch
                ) -> ReviewSentiments:
    monkeypatch.setattr("streams.runtime.sentiment.kafka_consumer", lambda *args, **kwargs: log)
    out = sentiments()
    del out.models[0]
    asyncio.run(out.ensure(NoSnapshot(), 0, committed))
    return out


def learned_on(offsets: Iterable[int]) -> bytes:
    model = ReviewSentiment()
    for o in offsets:
        label = label_from_rating(rating(o))
        if label is not None:
            model.learn_one(orjson.loads(message(o))["text"], label)
    return model.to_bytes()


def test_retention_moving_the_log_start_mid_read_skips_and_logs(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def retention(log: FakeLog) -> None:
        if log.fetches == 2:
            log.first = 20

    with caplog.at_level(logging.WARNING, logger="streams.runtime.sentiment"):
        out = ensure_with(FakeLog(40, on_fetch=retention), 30, monkeypatch)
    assert out.models[0].model.to_bytes() == learned_on([*range(3), *range(20, 30)])
    assert "offsets 3..20 are past the topic's retention" in caplog.text


def test_a_log_that_stops_short_of_the_committed_offset_is_given_up_promptly(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A truncated log (the committed offset beyond its end): bounded by RELEARN_IDLE_S of no
    progress, logged as an error; the model keeps what it read."""
    monkeypatch.setattr("streams.runtime.sentiment.RELEARN_IDLE_S", 0.3)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="streams.runtime.sentiment"):
        out = ensure_with(FakeLog(10), 15, monkeypatch)
    assert time.monotonic() - started < 3.0
    assert out.models[0].next_offset == 15
    assert out.models[0].model.to_bytes() == learned_on(range(10))
    assert "offsets 10..15 could not be read back" in caplog.text
