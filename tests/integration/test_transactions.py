"""Events from a transactional producer, on a real worker process (issue 18, part 4).

Each committed transaction leaves a commit marker in every partition it wrote to: a control record
that takes an offset and is never delivered. The last offset a worker processed is then one short
of the end offset for good, and a worker that reads that gap as a backlog never settles (no
`nbrs:*`, no `trending`, no snapshot) and reports a lag that never reaches zero."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
import pytest

from streams.connections import kafka_consumer, kafka_producer
from streams.contract.keys import Keys
from streams.runtime.app import past_markers
from streams.runtime.state import UserState
from streams.settings import Settings, load_settings
from streams.tools.stack import free_port
from tests.integration.harness import (
    WorkerProcess,
    assert_equal_to_reference,
    client,
    reference,
    wait_lag,
    wait_settled,
)

pytestmark = pytest.mark.integration


async def send_in_transactions(settings: Settings, events: list[dict], *, per_transaction: int
                               ) -> None:
    """Plays keyed by user, ``per_transaction`` to a committed transaction."""
    producer = kafka_producer(settings, transactional_id=f"{settings.app_id}-producer",
                              acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for start in range(0, len(events), per_transaction):
            async with producer.transaction():
                for e in events[start:start + per_transaction]:
                    await producer.send(settings.topic_plays, value=orjson.dumps(e),
                                        key=e["user_id"].encode())
    finally:
        await producer.stop()


def wait_committed(settings: Settings, events: Iterable[dict], worker: WorkerProcess,
                   timeout: float = 120.0) -> None:
    """Until every event is in its user's committed history (offsets can't tell: markers take
    some of them)."""
    keys, r = Keys(settings.key_prefix), client(settings)
    want: dict[str, set[str]] = {}
    for e in events:
        want.setdefault(e["user_id"], set()).add(e["event_id"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.alive(), worker.tail()
        histories = dict(zip(want, r.mget([keys.history(u) for u in want]), strict=True))
        if all(raw is not None and ids <= set(UserState.from_bytes(raw).seen)
               for (u, ids), raw in zip(want.items(), histories.values(), strict=True)):
            return
        time.sleep(0.25)
    raise AssertionError(f"not every event committed in {timeout}s\n{worker.tail()}")


def plays(first: int, n: int) -> list[dict]:
    return [{"user_id": f"u{k % 60}", "item_id": f"i{k % 40}", "ts": 1e9 + k,
             "event_id": f"e{k}"} for k in range(first, first + n)]


def test_commit_markers_are_not_a_backlog_the_worker_settles_and_lag_reaches_zero(
        unique_topics: Settings, tmp_path: Path):
    settings = load_settings(**{**unique_topics.model_dump(), "metrics_port": free_port(),
                                "lag_interval_s": 0.5})
    owned = {(t, str(p)) for t in settings.event_topics
             for p in range(settings.topic_partitions)}  # one worker owns every partition
    keys, r = Keys(settings.key_prefix), client(settings)
    before = plays(0, 300)
    asyncio.run(send_in_transactions(settings, before, per_transaction=100))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        wait_committed(settings, before, worker)
        wait_settled(settings)  # before the fix: never, the markers read as a backlog
        users = {e["user_id"] for e in before}
        events = [("play", e) for e in before]
        assert assert_equal_to_reference(settings, reference(settings, events), users) > 0
        assert r.exists(keys.trending) and r.exists(keys.neighbours("i0"))
        wait_lag(settings, worker, dict.fromkeys(owned, 0.0))

        # a transaction while the worker runs: processed, settled again, no lag left
        settled_at = r.xrevrange(keys.deltas, count=1)[0][0]
        after = plays(300, 120)
        asyncio.run(send_in_transactions(settings, after, per_transaction=40))
        wait_committed(settings, after, worker)
        wait_settled(settings)
        assert r.xrevrange(keys.deltas, count=1)[0][0] != settled_at
        events += [("play", e) for e in after]
        assert assert_equal_to_reference(settings, reference(settings, events), users) > 0
        wait_lag(settings, worker, dict.fromkeys(owned, 0.0))
    finally:
        worker.stop()


async def test_next_offsets_move_past_markers_and_stop_at_the_first_event(unique_topics: Settings):
    settings = unique_topics
    topic = settings.topic_plays
    producer = kafka_producer(settings, transactional_id=f"{settings.app_id}-producer",
                              acks="all", enable_idempotence=True)
    await producer.start()
    try:
        async with producer.transaction():  # partition 0: events 0-2, marker 3
            for _ in range(3):
                await producer.send(topic, value=b"x", key=b"u", partition=0)
        async with producer.transaction():  # partition 1: events 0-1, marker 2
            for _ in range(2):
                await producer.send(topic, value=b"x", key=b"u", partition=1)
    finally:
        await producer.stop()
    plain = kafka_producer(settings, acks="all", enable_idempotence=True)
    await plain.start()
    try:  # partition 1: an event outside a transaction, offset 3
        await plain.send_and_wait(topic, value=b"x", key=b"u", partition=1)
    finally:
        await plain.stop()
    consumer = kafka_consumer(settings, group_id=None, enable_auto_commit=False,
                              auto_offset_reset="earliest")
    await consumer.start()
    try:
        ends = {(topic, p): 4 if p < 2 else 0 for p in range(3)}
        # caught up but for a marker; events left; partition 2 empty
        moved = await past_markers(consumer, ends, {(topic, 0): 3, (topic, 1): 1, (topic, 2): 0})
        assert moved == {(topic, 0): 4, (topic, 1): 1, (topic, 2): 0}
        # the same consumer again: a marker, then an event; an event; nothing left
        moved = await past_markers(consumer, ends, {(topic, 0): 2, (topic, 1): 2, (topic, 2): 0})
        assert moved == {(topic, 0): 2, (topic, 1): 3, (topic, 2): 0}
        moved = await past_markers(consumer, ends, {(topic, 0): 4, (topic, 1): 4, (topic, 2): 0})
        assert moved == {(topic, 0): 4, (topic, 1): 4, (topic, 2): 0}
    finally:
        await consumer.stop()
