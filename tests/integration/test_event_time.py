"""Event times against the record's time, with a real broker, Redis and worker process: a
far-future ``ts`` goes to the dead-letter topic (``ts_out_of_range``) instead of stopping the
worker (issue "Correctness holes", part 1: one such message once made every worker exit 70 on
start, forever)."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import orjson
import pytest

from streams.connections import kafka_producer
from streams.contract.dlq import parse_dead_letter
from streams.contract.keys import Keys
from streams.runtime.state import UserState
from streams.settings import Settings, load_settings
from tests.integration.harness import (
    WorkerProcess,
    client,
    read_topic,
    recommendations_in_redis,
    wait_processed,
    wait_settled,
)

pytestmark = pytest.mark.integration

# every record's Kafka timestamp, set by the producer (an hour ago: the broker refuses record
# timestamps more than an hour ahead of its clock, log.message.timestamp.after.max.ms)
RECORD_TS = float(int(time.time()) - 3_600)
WINDOW_S = 3_600.0


async def _send(settings: Settings, events: list[dict]) -> list[tuple[int, int]]:
    """Each event as a play with Kafka timestamp `RECORD_TS`; their (partition, offset)."""
    producer = kafka_producer(settings, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic_plays, orjson.dumps(e),
                                       key=e["user_id"].encode(),
                                       timestamp_ms=int(RECORD_TS * 1000)) for e in events]
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def test_far_future_timestamps_go_to_the_dead_letter_topic_and_the_worker_carries_on(
        unique_topics: Settings, tmp_path: Path):
    settings = load_settings(**{**unique_topics.model_dump(), "max_event_future_s": WINDOW_S})
    accepted = [RECORD_TS + WINDOW_S,  # the boundary itself
                RECORD_TS + WINDOW_S - 0.5, 0.0, RECORD_TS - 86_400 * 365 * 30]
    refused = [RECORD_TS + WINDOW_S + 0.5, 1.49e10, 2e10, 32_503_680_000.0]
    events = [{"user_id": f"u{n % 3}", "item_id": f"i{n % 4}", "ts": ts, "event_id": f"e{n}"}
              for n, ts in enumerate(accepted + refused)]
    # then ordinary traffic, which must still be processed
    events += [{"user_id": f"u{n % 3}", "item_id": f"j{n % 5}", "ts": RECORD_TS - n,
                "event_id": f"after{n}"} for n in range(30)]

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        sources = asyncio.run(_send(settings, events))
        worker.wait_ready()
        wait_processed(settings, len(events), [worker])
        assert worker.alive()

        letters = [parse_dead_letter(v) for _, _, v in asyncio.run(
            read_topic(settings, settings.topic_dlq, len(refused), idle_s=15))]
        assert sorted((d["partition"], d["offset"]) for d in letters) == sorted(
            sources[len(accepted):len(accepted) + len(refused)])
        assert {d["code"] for d in letters} == {"ts_out_of_range"}
        assert all("TASTEMAKER_MAX_EVENT_FUTURE_S" in d["reason"] for d in letters)

        r, keys = client(settings), Keys(settings.key_prefix)
        seen = {e for u in ("u0", "u1", "u2")
                for e in UserState.from_bytes(r.get(keys.history(u))).seen}
        assert seen == {e["event_id"] for e in events} - {
            f"e{n}" for n in range(len(accepted), len(accepted) + len(refused))}
        wait_settled(settings)
        recs = recommendations_in_redis(settings, ["u0", "u1", "u2"])
        assert all(recs.values())
        assert all(math.isfinite(score) for lst in recs.values() for _, score, _ in lst)
    finally:
        worker.stop()
