"""Snapshots of the item statistics (`streams.runtime.state.RedisState`), with a real Redis and
Kafka producer: taken when the stream since the last one holds as many pair updates as the
statistics hold entries, written while the next batches go on, never replaced by an older one.
`EventProcessor`s are driven batch by batch, as the worker processes run them."""

from __future__ import annotations

import orjson
import pytest

from models.cooccurrence import Delta, FrozenStatistics, ItemCooccurrence
from streams import connections
from streams.contract.keys import Keys
from streams.runtime.state import RedisState
from streams.runtime.worker import EventProcessor, SourceMessage
from streams.settings import Settings, load_settings

pytestmark = pytest.mark.integration

TS = 1.7e9


def statistics_of(item_id: str) -> FrozenStatistics:
    """A copy of statistics that hold one pair, of ``item_id`` and "y"."""
    items = ItemCooccurrence()
    items.apply_packed(items.pack([Delta(item_id, ("y",), (2.0,), 1.0, 1.0)]))
    return items.frozen()


async def test_a_snapshot_taken_earlier_never_replaces_a_newer_one(unique_topics: Settings):
    """Nor is one written when Redis no longer holds the delta it reflects (restored from an
    older copy since it was taken)."""
    client = connections.redis_async(unique_topics)
    keys = Keys(unique_topics.key_prefix)
    state = RedisState(client, keys, ItemCooccurrence())
    try:
        for delta_id in ("4-9", "5-0", "6-0"):
            await client.xadd(keys.deltas, {"d": b""}, id=delta_id)
        lost, older, newer, newest = map(statistics_of, ("lost", "older", "newer", "newest"))
        await state.write_snapshot("7-0", lost)  # no delta 7-0 in the stream
        assert not await client.exists(keys.snapshot)
        await state.write_snapshot("5-0", newer)
        await state.write_snapshot("4-9", older)  # taken before, its write came after
        assert await client.hmget(keys.snapshot, ["delta_id", "items"]) == [
            b"5-0", newer.to_bytes()]
        await state.write_snapshot("6-0", newest)
        assert await client.hmget(keys.snapshot, ["delta_id", "items", "trimmed_before"]) == [
            b"6-0", newest.to_bytes(), b"5-0"]
        reloaded = ItemCooccurrence()
        reloaded.load_bytes(newest.to_bytes())
        assert reloaded.row("newest") == {"y": 2.0}
    finally:
        await client.aclose()


async def test_snapshots_wait_for_as_many_pair_updates_as_entries(unique_topics: Settings):
    """Every batch may snapshot (``snapshot_every_batches=1``), but the first batch's pairs are
    all new (each made two entries): no snapshot. The same pairs again, from other users, add
    updates and no entry: a snapshot once the updates since the last reach the entries; it
    loads into a fresh copy equal to the writer's statistics."""
    settings = load_settings(**{**unique_topics.model_dump(), "snapshot_every_batches": 1,
                                "ranker_example_rate": 0.0})
    keys, offset = Keys(settings.key_prefix), 0

    def batch(user: str) -> list[SourceMessage]:
        nonlocal offset
        events = [{"user_id": user, "item_id": f"i{k}", "ts": TS + k,
                   "event_id": f"{user}-{k}"} for k in range(12)]
        offset += len(events)
        return [SourceMessage(settings.topic_plays, 0, offset - len(events) + k,
                              orjson.dumps(e), TS, user.encode()) for k, e in enumerate(events)]

    producer = connections.kafka_producer(settings, acks="all")
    await producer.start()
    proc = EventProcessor(settings, connections.redis_async(settings), producer)
    try:
        await proc.start()
        snapshots = []
        for user in ("u0", "u1", "u2"):
            await proc.process(batch(user))
            await proc.maybe_snapshot(owner=True)
            if proc.snapshot_write is not None:
                await proc.snapshot_write
            snapshots.append(await proc.client.hget(keys.snapshot, "delta_id"))
        entries = proc.state.items.n_entries()
        assert entries == 12 * 11  # every pair of the 12 items, both ways
        # u0: 66 pair updates < 132 entries; u1: 132 >= 132 -> a snapshot; u2: 66 since
        assert snapshots[0] is None
        assert snapshots[1] is not None and snapshots[2] == snapshots[1]
        copy = RedisState(proc.client, keys, ItemCooccurrence())
        assert await copy.load_snapshot()
        assert copy.last_delta_id == snapshots[1].decode()
        assert copy.items.n_entries() == entries
    finally:
        await producer.stop()
        await proc.client.aclose()

