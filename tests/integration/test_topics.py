"""Topic creation against the session's broker."""

from __future__ import annotations

import pytest

from streams.connections import kafka_admin
from streams.contract.topics import ensure_topics, topic_partitions
from streams.settings import Settings

pytestmark = pytest.mark.integration


async def test_ensure_topics_creates_every_topic_once(unique_topics: Settings) -> None:
    # unique_topics already ran ensure_topics: a second run finds everything in place.
    assert await ensure_topics(unique_topics) == []

    admin = kafka_admin(unique_topics)
    await admin.start()
    try:
        wanted = topic_partitions(unique_topics)
        described = await admin.describe_topics(list(wanted))
    finally:
        await admin.close()
    assert {t["topic"]: len(t["partitions"]) for t in described} == wanted
    assert wanted[unique_topics.topic_plays] == unique_topics.topic_partitions
    assert wanted[unique_topics.topic_dlq] == wanted[unique_topics.topic_model_updates] == 1
