"""A run's own corner of shared services: settings whose topics, Redis key prefix and consumer
group belong to one test, benchmark or demo run, and the cleanup that removes them afterwards.

Tests, benchmarks and the demo share one Kafka and one Redis with whatever else runs there; a
namespace keeps each run from seeing or disturbing another's events and keys.

>>> from streams.settings import load_settings
>>> s = namespaced(load_settings(topic_plays="plays", topic_dlq="events-dlq"), "test", "abc")
>>> s.topic_plays, s.topic_dlq, s.key_prefix, s.app_id
('test-plays-abc', 'test-events-dlq-abc', 'test-abc:', 'tastemaker-test-abc')
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from streams.connections import kafka_admin, redis_async
from streams.contract.topics import topic_partitions
from streams.settings import Settings, load_settings

TOPIC_SETTINGS = ("topic_plays", "topic_ratings", "topic_reviews", "topic_dlq",
                  "topic_model_updates", "topic_ranker_examples")


def namespaced(base: Settings, kind: str, tag: str | None = None, **overrides: object
               ) -> Settings:
    """``base`` with topics ``<kind>-<topic>-<tag>``, key prefix ``<kind>-<tag>:`` and Faust
    app id (consumer group) ``tastemaker-<kind>-<tag>``; ``tag`` is random when not given."""
    tag = tag or uuid.uuid4().hex[:12]
    return load_settings(**{
        **base.model_dump(),
        **{name: f"{kind}-{getattr(base, name)}-{tag}" for name in TOPIC_SETTINGS},
        "key_prefix": f"{kind}-{tag}:", "app_id": f"tastemaker-{kind}-{tag}",
        **overrides,
    })


async def drop_namespaces(runs: Sequence[Settings]) -> list[str]:
    """Delete the runs' topics (and the ``<app_id>-*`` topics Faust made for them) and every
    Redis key under their key prefixes. Topics and keys that are not there are skipped. Returns
    the topics deleted."""
    if not runs:
        return []
    if any(not run.key_prefix for run in runs):
        raise ValueError("refusing to delete every Redis key: a run has no key_prefix")
    admin = kafka_admin(runs[0])
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        theirs: set[str] = set()
        for run in runs:
            theirs |= set(topic_partitions(run))
            theirs |= {t for t in existing if t.startswith(f"{run.app_id}-")}
        doomed = sorted(theirs & existing)
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
    client = redis_async(runs[0])
    try:
        for run in runs:
            batch = []
            async for key in client.scan_iter(match=f"{run.key_prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.delete(*batch)
                    batch.clear()
            if batch:
                await client.delete(*batch)
    finally:
        await client.aclose()
    return doomed
