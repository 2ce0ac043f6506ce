"""Bounded state under any stream (issue 19), with a real Redis and Kafka producer: the settle
pass re-ranks only the users active within ``SETTLE_WINDOW_S``, recommendation keys expire after
``RECS_TTL_S``, and a flood of fresh item ids leaves the item statistics within ``MAX_ITEMS``
(and their neighbour lists in Redis with them) and the similar-user index within
``MAX_INDEXED_USERS``. `EventProcessor`s are driven batch by batch, as
the worker processes run them."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from streams import connections
from streams.contract.keys import Keys
from streams.runtime.worker import (
    COMPACT_MIN_ITEMS,
    SETTLE_USERS_PER_STEP,
    EventProcessor,
    SourceMessage,
)
from streams.settings import Settings, load_settings
from tests.integration.harness import (
    assert_equal_to_reference,
    client,
    recommendations_in_redis,
    reference,
)

pytestmark = pytest.mark.integration

TS = 1.7e9


def _messages(settings: Settings, events: list[dict], first: int = 0) -> list[SourceMessage]:
    return [SourceMessage(settings.topic_plays, 0, first + k, orjson.dumps(e), TS,
                          e["user_id"].encode()) for k, e in enumerate(events)]


async def _processor(settings: Settings) -> EventProcessor:
    producer = connections.kafka_producer(settings, acks="all")
    await producer.start()
    proc = EventProcessor(settings, connections.redis_async(settings), producer)
    await proc.start()
    return proc


async def _close(proc: EventProcessor) -> None:
    await proc.producer.stop()
    await proc.client.aclose()


def test_the_settle_pass_covers_the_window_and_recommendations_expire(unique_topics: Settings):
    settings = load_settings(**{**unique_topics.model_dump(), "settle_after_s": 0.001,
                                "settle_window_s": 3.0, "recs_ttl_s": 60.0,
                                "ranker_example_rate": 0.0})
    early = [{"user_id": f"u{k % 3}", "item_id": f"i{k % 11}", "ts": TS + k, "event_id": f"e{k}"}
             for k in range(60)]
    late = [{"user_id": "u9", "item_id": f"i{k % 4}", "ts": TS + 100 + k,
             "event_id": f"late{k}"} for k in range(20)]
    partition = [(settings.topic_plays, 0)]
    keys, r = Keys(settings.key_prefix), client(settings)

    async def run() -> None:
        proc = await _processor(settings)
        try:
            await proc.process(_messages(settings, early))
            await asyncio.sleep(0.01)  # quiet for settle_after_s
            assert await proc.settle(partition, writes_items=True) == 3
            before = recommendations_in_redis(settings, ["u0", "u1", "u2"])
            # u0..u2 leave the window; u9 stays in it while its batch is processed and settled
            # (3 s: a cold, loaded CI machine once took over 1.5 s there)
            time.sleep(3.5)
            await proc.process(_messages(settings, late, first=len(early)))
            await asyncio.sleep(0.01)
            # only u9 is re-ranked; the others keep the lists written for them, though the
            # statistics moved
            assert await proc.settle(partition, writes_items=True) == 1
            assert recommendations_in_redis(settings, ["u0", "u1", "u2"]) == before
            model = reference(settings, [("play", e) for e in early + late])
            assert assert_equal_to_reference(settings, model, ["u9"]) > 0
            active = keys.active(settings.topic_plays, 0)
            assert [u.decode() for u in r.zrange(active, 0, -1)] == ["u9"]
            for key in (keys.recs("u9"), keys.explain("u9"), keys.recs_meta("u9")):
                assert 0 < r.pttl(key) <= 60_000, key
            assert r.exists(keys.history("u0"))  # state never expires
        finally:
            await _close(proc)

    asyncio.run(run())


def test_a_ranker_swap_during_a_settle_pass_leaves_the_users_unsettled(
        unique_topics: Settings, monkeypatch: pytest.MonkeyPatch):
    """The settle pass writes its users in steps, releasing the worker lock in between; a
    ranker swap that comes in meanwhile must not be marked settled by the pass's end (users
    written before it would keep the old version until their next event): the next pass
    re-ranks every user with the new version."""
    from models.ranker import RankerMLP, toy_groups

    settings = load_settings(**{**unique_topics.model_dump(), "settle_after_s": 0.001,
                                "ranker_example_rate": 0.0})
    n_users = SETTLE_USERS_PER_STEP + 20  # two steps
    events = [{"user_id": f"u{k % n_users}", "item_id": f"i{k % 13}", "ts": TS + k,
               "event_id": f"e{k}"} for k in range(3 * n_users)]
    partition = [(settings.topic_plays, 0)]
    keys, r = Keys(settings.key_prefix), client(settings)
    write, swaps = EventProcessor._write_recommendations, []

    async def write_then_swap(self, *args, **kwargs):
        await write(self, *args, **kwargs)
        if not swaps:  # the swap waits for the lock while the pass is in its first step
            swaps.append(asyncio.ensure_future(self.maybe_swap()))

    async def run() -> None:
        proc = await _processor(settings)
        try:
            await proc.process(_messages(settings, events))
            model = RankerMLP()
            model.fit_scaler(toy_groups(n_groups=40, seed=1))
            version = await proc.store.publish(model, {})
            monkeypatch.setattr(EventProcessor, "_write_recommendations", write_then_swap)
            await asyncio.sleep(0.01)
            await proc.settle(partition, writes_items=False)
            await swaps[0]
            assert proc.ranking.version == version
            await asyncio.sleep(0.01)
            assert await proc.settle(partition, writes_items=False) == n_users
            served = {r.hget(keys.recs_meta(f"u{k}"), "model") for k in range(n_users)}
            assert served == {str(version).encode()}
        finally:
            await _close(proc)

    asyncio.run(run())


def test_a_flood_of_fresh_item_ids_stays_within_the_cap(unique_topics: Settings):
    cap = 1000
    settings = load_settings(**{**unique_topics.model_dump(), "settle_after_s": 0.001,
                                "max_items": cap, "max_indexed_users": 150,
                                "ranker_example_rate": 0.0,
                                "snapshot_every_batches": 10})
    # 20,000 plays, each of an item id never seen before, from 200 users
    flood = [{"user_id": f"u{k % 200}", "item_id": f"fresh{k}", "ts": TS + k,
              "event_id": f"e{k}"} for k in range(20_000)]
    messages = _messages(settings, flood)
    partition = [(settings.topic_plays, 0)]
    keys, r = Keys(settings.key_prefix), client(settings)

    async def run() -> None:
        proc = await _processor(settings)
        try:
            items = proc.state.items
            for start in range(0, len(messages), 500):
                await proc.process(messages[start:start + 500])
                assert items.n_live <= cap and items.n_users_indexed <= 150
                assert items.n_items <= cap + COMPACT_MIN_ITEMS + 500
            await asyncio.sleep(0.01)
            assert await proc.settle(partition, writes_items=True) == 200
            live = set(items.live_ids())
            assert live and all(int(i.removeprefix("fresh")) >= 20_000 - 2 * cap for i in live)
            # neighbour lists in Redis: only for live items, the evicted ones' deleted
            listed = {k.decode().removeprefix(keys.neighbours("")) for k in
                      r.scan_iter(match=keys.neighbours("*"), count=10_000)}
            assert listed and listed <= live
            # a worker starting from the snapshot holds the same statistics
            other = await _processor(settings)
            try:
                assert sorted(other.state.items.live_ids()) == sorted(live)
                assert other.state.items._user_items == items._user_items
            finally:
                await _close(other)
        finally:
            await _close(proc)

    asyncio.run(run())
