"""Sentiment model snapshots in a real Redis: npz resumes exactly, the JSON format from before
issue 14 is migrated by re-learning the partition, anything else stops with the key named."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from models.sentiment import ReviewSentiment, SnapshotFormatError
from streams.connections import redis_async
from streams.keys import Keys
from streams.sentiment import ReviewSentiments
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
    with caplog.at_level(logging.WARNING, logger="streams.sentiment"):
        entry = _ensure(settings, 0).models[0]
    assert entry.model.n_learned == 0 and entry.next_offset == 0
    assert "before issue 14" in caplog.text


def test_an_unreadable_snapshot_stops_naming_the_key(unique_topics: Settings) -> None:
    settings = unique_topics
    key = Keys(settings.key_prefix).sentiment_model(settings.topic_reviews, 0)
    client(settings).set(key, b"PK\x03\x04 not really a zip")
    with pytest.raises(SnapshotFormatError, match=key):
        _ensure(settings, 0)
