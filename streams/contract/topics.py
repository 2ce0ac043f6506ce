"""The topics tastemaker uses, and their creation.

Brokers run with ``auto.create.topics.enable=false`` so a typo in a topic name fails loudly instead
of creating a stray topic; `ensure_topics` creates the real ones. Partition counts:

- event topics (``plays``, ``ratings``, ``reviews``): ``settings.topic_partitions``, keyed by user,
  so a user's history lives on one partition and worker instances split the users between them.
- ``events-dlq``: 1. Low volume, read by people and by ``replay`` in the order things failed; one
  partition gives that single order.
- ``ranker-examples``: ``settings.topic_partitions``, keyed by user; bounded by retention (time
  and bytes per partition, from the settings): the trainer only ever needs the recent ones.
- ``model-updates``: 1. Every worker reads every model version announcement (no group split) and
  must see them in publish order; one partition is one total order.

Replication factor is 1: every stack we run (local, compose, test containers) has one broker. A
multi-broker deployment creates its topics with its own tooling.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from streams.connections import kafka_admin
from streams.settings import Settings

logger = logging.getLogger(__name__)

DLQ_PARTITIONS = 1
MODEL_UPDATES_PARTITIONS = 1
REPLICATION_FACTOR = 1


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Per-topic configuration beyond the broker's defaults."""
    return {settings.topic_ranker_examples: {
        "retention.ms": str(settings.ranker_examples_retention_ms),
        "retention.bytes": str(settings.ranker_examples_retention_bytes)}}


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Every topic tastemaker uses, with its partition count.

    >>> from streams.settings import load_settings
    >>> topic_partitions(load_settings(topic_partitions=4, topic_plays="p", topic_ratings="r",
    ...     topic_reviews="v", topic_dlq="d", topic_model_updates="m",
    ...     topic_ranker_examples="x"))
    {'p': 4, 'r': 4, 'v': 4, 'd': 1, 'x': 4, 'm': 1}
    """
    partitions = {topic: settings.topic_partitions for topic in settings.event_topics}
    partitions[settings.topic_dlq] = DLQ_PARTITIONS
    partitions[settings.topic_ranker_examples] = settings.topic_partitions
    partitions[settings.topic_model_updates] = MODEL_UPDATES_PARTITIONS
    return partitions


async def ensure_topics(settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics and wait until each partition has a leader; return the names
    created. Existing topics are left alone: a partition count that differs from the settings is
    logged, not changed (partitions can't shrink, and adding some moves users between them)."""
    wanted = topic_partitions(settings)
    admin = kafka_admin(
        settings,
        request_timeout_ms=int(timeout_s * 1000),
        client_id=f"{settings.app_id}-topics",
    )
    await admin.start()
    try:
        # All topics in one metadata request: asking for missing names by name could auto-create
        # them on a broker that allows it.
        existing = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
        for topic, count in wanted.items():
            if topic in existing and existing[topic] != count:
                logger.warning(
                    "topic %s has %d partitions, settings say %d; leaving it as it is",
                    topic,
                    existing[topic],
                    count,
                )
        missing = [
            NewTopic(topic, count, REPLICATION_FACTOR,
                     topic_configs=topic_configs(settings).get(topic, {}))
            for topic, count in wanted.items()
            if topic not in existing
        ]
        if not missing:
            return []
        response = await admin.create_topics(missing, timeout_ms=int(timeout_s * 1000))
        created = []
        for topic, code, *message in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif code != TopicAlreadyExistsError.errno:  # another process won the race
                raise for_code(code)(f"creating topic {topic!r}: {message[0] if message else ''}")
        await _wait_for_leaders(admin, created, timeout_s)
        logger.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()


async def _wait_for_leaders(
    admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float
) -> None:
    """CreateTopics returns before every partition has a leader; producing right away would
    earn retries. Waiting here keeps the first produce fast and tests deterministic."""
    deadline = time.monotonic() + timeout_s
    pending = set(topics)
    while pending:
        described = await admin.describe_topics(sorted(pending))
        for t in described:
            if (
                t["error_code"] == 0
                and t["partitions"]
                and all(p["error_code"] == 0 and p["leader"] >= 0 for p in t["partitions"])
            ):
                pending.discard(t["topic"])
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics without a leader after {timeout_s:g} s: {sorted(pending)}")
        await asyncio.sleep(0.1)
