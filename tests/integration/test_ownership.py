"""Ownership of partitions and the order of the deltas, with a real Redis (issue "Correctness
holes", parts 2, 3 and 6). Two `EventProcessor`s — what two worker processes run per batch — are
driven step by step, so the interleavings a rebalance makes are exact, not left to timing:

- part 2: a worker that lost its partitions (a zombie, stalled mid-batch) cannot commit once
  the new owner claimed them; the new owner's batches are not dropped;
- part 3: every worker applies the deltas in stream order, its own included, so the similar-user
  index of the new owner equals the reference's after a rebalance;
- part 6: a follower that finds entries it had not read trimmed away reloads the snapshot.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from streams import connections
from streams.runtime.state import Fenced
from streams.runtime.worker import EventProcessor, SourceMessage
from streams.settings import Settings, load_settings
from tests.integration.harness import assert_equal_to_reference, reference

pytestmark = pytest.mark.integration

TS = 1.7e9


def _stream(n: int) -> list[tuple[str, dict]]:
    return [("play", {"user_id": f"u{k % 7}", "item_id": f"i{(k * 5) % 23}", "ts": TS + k,
                      "event_id": f"e{k}"}) for k in range(n)]


def _messages(settings: Settings, stream: list[tuple[str, dict]]) -> list[SourceMessage]:
    return [SourceMessage(settings.topic_plays, 0, k, orjson.dumps(v), TS + k,
                          v["user_id"].encode()) for k, (_, v) in enumerate(stream)]


class Paused:
    """Holds a processor's next commit until released: a worker stalled mid-batch."""

    def __init__(self, proc: EventProcessor) -> None:
        self.reached, self.go = asyncio.Event(), asyncio.Event()
        commit = proc.state.commit

        async def held(batch):
            self.reached.set()
            await self.go.wait()
            return await commit(batch)

        proc.state.commit = held  # type: ignore[method-assign]


async def _processors(settings: Settings, n: int):
    out = []
    for _ in range(n):
        producer = connections.kafka_producer(settings, acks="all")
        await producer.start()
        proc = EventProcessor(settings, connections.redis_async(settings), producer,
                              claims_on_assignment=True)
        await proc.start()
        out.append(proc)
    return out


async def _close(procs: list[EventProcessor]) -> None:
    for proc in procs:
        await proc.producer.stop()
        await proc.client.aclose()


def _settings(base: Settings) -> Settings:
    return load_settings(**{**base.model_dump(), "settle_after_s": 0.001,
                            "ranker_example_rate": 0.0})


def test_a_zombie_cannot_commit_after_the_new_owner_claimed_and_the_order_of_deltas_is_kept(
        unique_topics: Settings):
    settings = _settings(unique_topics)
    stream = _stream(150)
    messages = _messages(settings, stream)
    partition = [(settings.topic_plays, 0)]

    async def run() -> None:
        old, new = await _processors(settings, 2)
        try:
            await old.claim(partition)
            await old.process(messages[:50])
            # the old owner stalls in its next batch, before committing it; Kafka gives the
            # partition to the new owner, which has not read the old owner's first entry yet
            paused = Paused(old)
            stalled = asyncio.create_task(old.process(messages[50:100]))
            await paused.reached.wait()
            await new.claim(partition)
            # the zombie wakes and tries to commit: refused, its messages left to the new owner
            paused.go.set()
            report = await stalled
            assert report.processed == 0 and report.skipped == 50
            with pytest.raises(Fenced):
                await old.state.commit(_any_batch(old))
            # the new owner processes from the offsets Redis holds: nothing lost, nothing twice
            report = await new.process(messages[50:150])
            assert report.processed == 100 and report.skipped == 0
            model = reference(settings, stream)
            # part 3: the new owner applied the old owner's entry, then its own, in stream order;
            # the old one, following the stream, holds the same index
            assert new.state.items._user_items == model.items._user_items
            await old.state.follow()
            assert old.state.items._user_items == model.items._user_items
            await new.settle(partition, writes_items=True)
            assert assert_equal_to_reference(settings, model, {f"u{k}" for k in range(7)}) > 0
        finally:
            await _close([old, new])

    asyncio.run(run())


def _any_batch(proc: EventProcessor):
    from streams.runtime.state import BatchCommit
    name = f"{proc.settings.topic_plays}:0"
    return BatchCommit(expected={name: 50}, offsets={name: 51}, users={})


class TrimAfterFirstPage:
    """A follower's Redis client that lets ``trim`` run right after the first page of the
    deltas stream was read: a snapshot saved by another worker between two pages."""

    def __init__(self, real, trim) -> None:
        self.real, self.trim, self.pages = real, trim, 0

    def pipeline(self, *args, **kwargs):
        pipe = self.real.pipeline(*args, **kwargs)
        execute = pipe.execute

        async def then_trim(*a, **k):
            out = await execute(*a, **k)
            self.pages += 1
            if self.pages == 1:
                await self.trim()
            return out

        pipe.execute = then_trim
        return pipe

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def test_a_follower_that_finds_unread_entries_trimmed_between_pages_reloads_the_snapshot(
        unique_topics: Settings, monkeypatch: pytest.MonkeyPatch):
    settings = _settings(unique_topics)
    stream = _stream(120)
    messages = _messages(settings, stream)
    monkeypatch.setattr("streams.runtime.state.FOLLOW_PAGE", 2)

    async def run() -> None:
        writer, follower = await _processors(settings, 2)
        try:
            await writer.claim([(settings.topic_plays, 0)])
            for start in range(0, 60, 20):  # entries 1-3
                await writer.process(messages[start:start + 20])

            async def two_snapshots() -> None:  # the second trims the entries up to the first
                for start in (60, 80):
                    await writer.process(messages[start:start + 20])
                    await writer.state.write_snapshot(*await writer.state.take_snapshot())
                await writer.process(messages[100:120])

            follower.state.client = TrimAfterFirstPage(follower.state.client, two_snapshots)
            await follower.state.follow()  # pages of 2: entries 1-2, then entry 3 is gone
            want = reference(settings, stream).items
            for item in {v["item_id"] for _, v in stream}:
                assert follower.state.items.row(item).keys() == want.row(item).keys(), item
                assert follower.state.items.statistics(item) == pytest.approx(
                    want.statistics(item), rel=1e-9)
        finally:
            await _close([writer, follower])

    asyncio.run(run())
