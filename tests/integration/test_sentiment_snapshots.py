"""Sentiment model snapshots in a real Redis: npz resumes exactly, the JSON format from before
issue 14 is migrated by re-learning the partition, anything else stops with the key named; a
snapshot older than the topic's retention (or none) re-learns what the log still holds, promptly,
and says what it lost (issue 18, part 5)."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import RecordsToDelete

from models.sentiment import ReviewSentiment, SnapshotFormatError, label_from_rating
from streams.connections import kafka_admin, kafka_producer, redis_async
from streams.contract.keys import Keys
from streams.runtime.sentiment import ReviewSentiments
from streams.settings import Settings
from tests.integration.harness import client

pytestmark = pytest.mark.integration


def _ensure(settings: Settings, committed: int) -> ReviewSentiments:
    async def run() -> ReviewSentiments:
        r = redis_async(settings)
        try:
            sentiments = ReviewSentiments(settings, Keys(settings.key_prefix))
            await sentiments.ensure(r, 0, committed)
            return sentiments
        finally:
            await r.aclose()

    return asyncio.run(run())


def test_an_npz_snapshot_resumes_the_same_model(unique_topics: Settings) -> None:
    settings = unique_topics
    model = ReviewSentiment()
    for _ in range(3):
        model.learn_one("a wonderful, moving film", True)
        model.learn_one("a dull, boring mess", False)
    key = Keys(settings.key_prefix).sentiment_model(settings.topic_reviews, 0)
    client(settings).set(key, model.to_bytes(meta={"offset": 0}))
    loaded = _ensure(settings, 0).models[0].model
    assert loaded.to_bytes() == model.to_bytes()


def test_an_old_json_snapshot_is_relearned_from_offset_0(unique_topics: Settings,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    settings = unique_topics
    key = Keys(settings.key_prefix).sentiment_model(settings.topic_reviews, 0)
    old = {"offset": 0, "state": {"format": "tastemaker.ReviewSentiment/1", "weights": {"a": 1}}}
    client(settings).set(key, orjson.dumps(old))
    with caplog.at_level(logging.WARNING, logger="streams.runtime.sentiment"):
        entry = _ensure(settings, 0).models[0]
    assert entry.model.n_learned == 0 and entry.next_offset == 0
    assert "before issue 14" in caplog.text


def test_an_unreadable_snapshot_stops_naming_the_key(unique_topics: Settings) -> None:
    settings = unique_topics
    key = Keys(settings.key_prefix).sentiment_model(settings.topic_reviews, 0)
    client(settings).set(key, b"PK\x03\x04 not really a zip")
    with pytest.raises(SnapshotFormatError, match=key):
        _ensure(settings, 0)


REVIEWS = [("A wonderful, moving film.", 5), ("A dull and boring mess.", 1),
           ("Fine, I guess.", None), ("Superb acting, a delight.", 4), ("Awful, tedious plot.", 2)]


def _review(n: int) -> tuple[str, int | None]:
    text, rating = REVIEWS[n % len(REVIEWS)]
    return f"{text} Seen {n} times.", rating


async def _produce_and_truncate(settings: Settings, n: int, delete_before: int) -> None:
    """``n`` reviews on partition 0 of the reviews topic, then the log start moved to
    ``delete_before`` (what retention does to old segments, without waiting for it)."""
    producer = kafka_producer(settings, acks="all")
    await producer.start()
    try:
        for i in range(n):
            text, rating = _review(i)
            await producer.send_and_wait(settings.topic_reviews, orjson.dumps(
                {"user_id": f"u{i}", "item_id": "i1", "ts": 1.7e9 + i, "text": text,
                 "rating": rating}), key=f"u{i}".encode(), partition=0)
    finally:
        await producer.stop()
    admin = kafka_admin(settings)
    await admin.start()
    try:
        tp = TopicPartition(settings.topic_reviews, 0)
        await admin.delete_records({tp: RecordsToDelete(before_offset=delete_before)})
    finally:
        await admin.close()


def _learned(offsets: range, model: ReviewSentiment | None = None) -> ReviewSentiment:
    model = model if model is not None else ReviewSentiment()
    for i in offsets:
        text, rating = _review(i)
        label = label_from_rating(rating)
        if label is not None:
            model.learn_one(text, label)
    return model


@pytest.mark.parametrize(("snapshot_at", "log_start"), [(10, 25), (None, 25), (10, 40)],
                         ids=["old-snapshot", "no-snapshot", "all-gone"])
def test_a_snapshot_older_than_the_retention_relearns_what_is_left(
        unique_topics: Settings, caplog: pytest.LogCaptureFixture, snapshot_at: int | None,
        log_start: int) -> None:
    """The log starts past the snapshot's offset: the model is the snapshot's (or a fresh one)
    plus the reviews still in the log up to the committed offset, not past it (50 are there,
    40 committed); the lost range is logged; no wait on offsets that will never come."""
    settings = unique_topics
    asyncio.run(_produce_and_truncate(settings, 50, log_start))
    if snapshot_at is not None:
        key = Keys(settings.key_prefix).sentiment_model(settings.topic_reviews, 0)
        client(settings).set(key, _learned(range(snapshot_at)).to_bytes(
            meta={"offset": snapshot_at}))
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="streams.runtime.sentiment"):
        entry = _ensure(settings, 40).models[0]
    took = time.monotonic() - started
    base = _learned(range(snapshot_at)) if snapshot_at is not None else None
    expected = _learned(range(log_start, 40), base)
    assert entry.next_offset == 40
    assert entry.model.to_bytes() == expected.to_bytes()
    assert took < 15.0, f"re-learning took {took:.1f} s"
    lost = f"{snapshot_at or 0}..{log_start}"
    assert any(r.levelno == logging.WARNING and "retention" in r.getMessage()
               and lost in r.getMessage() for r in caplog.records), caplog.text


def test_a_transaction_marker_before_the_committed_offset_does_not_stall(
        unique_topics: Settings) -> None:
    """A transactional producer's commit marker takes an offset no consumer receives: the
    committed offset can be past it, and re-learning follows the consumer's position there
    rather than waiting for a message that never comes."""
    settings = unique_topics

    async def produce() -> None:
        producer = kafka_producer(settings, transactional_id=f"{settings.app_id}-txn",
                                  enable_idempotence=True)
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(5):
                    text, rating = _review(i)
                    await producer.send(settings.topic_reviews, orjson.dumps(
                        {"user_id": f"u{i}", "item_id": "i1", "ts": 1.7e9 + i, "text": text,
                         "rating": rating}), key=f"u{i}".encode(), partition=0)
        finally:
            await producer.stop()

    asyncio.run(produce())
    started = time.monotonic()
    entry = _ensure(settings, 6).models[0]  # offsets 0-4 the reviews, 5 the commit marker
    assert time.monotonic() - started < 5.0
    assert entry.model.to_bytes() == _learned(range(5)).to_bytes()
