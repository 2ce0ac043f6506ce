"""The worker's Prometheus endpoint, scraped from a real worker process on real Kafka and Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from streams.contract.keys import Keys
from streams.settings import Settings, load_settings
from streams.tools.stack import free_port
from tests.integration.harness import (
    WorkerProcess,
    client,
    scrape,
    send_raw,
    wait_lag,
    wait_processed,
)

pytestmark = pytest.mark.integration


def test_lag_reaches_zero_redis_writes_are_timed_and_logs_are_json(unique_topics: Settings,
                                                                   tmp_path: Path):
    settings = load_settings(**{**unique_topics.model_dump(), "metrics_port": free_port(),
                                "lag_interval_s": 0.5, "log_format": "json"})
    n = 300
    events = [{"user_id": f"u{k % 60}", "item_id": f"i{k % 40}", "ts": 1e9 + k,
               "event_id": f"e{k}"} for k in range(n)]
    asyncio.run(send_raw(settings, ((settings.topic_plays, e["user_id"].encode(),
                                     orjson.dumps(e)) for e in events)))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        wait_processed(settings, n, [worker])
        owned = {(t, str(p)) for t in settings.event_topics
                 for p in range(settings.topic_partitions)}  # one worker owns every partition
        wait_lag(settings, worker, dict.fromkeys(owned, 0.0))

        metrics = scrape(settings)
        processed = sum(s.value for s in metrics["tastemaker_events"]
                        if s.name == "tastemaker_events_total")
        assert processed == n
        writes = {s.labels["op"]: s.value for s in metrics["tastemaker_redis_write_seconds"]
                  if s.name == "tastemaker_redis_write_seconds_count"}
        assert writes["commit"] > 0
        assert writes["recommendations"] > 0
        assert metrics["tastemaker_ranker_version"][0].value == 0  # defined, not yet set

        # the offsets committed to Redis decide what is processed: move one partition's back by
        # 7 (as a Redis restored from an older copy would) and the worker, finding Redis behind
        # what its consumer delivered, reads those 7 back from Kafka; their ids are in the
        # users' histories, so they are dropped as duplicates, and the lag is 0 again
        r, keys = client(settings), Keys(settings.key_prefix)
        field = next(f for f, v in sorted(r.hgetall(keys.offsets).items()) if int(v) >= 7)
        end = int(r.hget(keys.offsets, field))
        r.hset(keys.offsets, field, end - 7)
        deadline = time.monotonic() + 60
        while int(r.hget(keys.offsets, field)) != end:
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.1)
        wait_lag(settings, worker, dict.fromkeys(owned, 0.0))
        metrics = scrape(settings)
        assert [s.value for s in metrics["tastemaker_duplicate_events"]
                if s.name == "tastemaker_duplicate_events_total"] == [7]
    finally:
        worker.stop()

    # TASTEMAKER_LOG_FORMAT=json: every line the worker wrote, Faust's and aiokafka's included,
    # is a JSON object
    lines = worker.log_path.read_text().splitlines()
    records = [orjson.loads(line) for line in lines]
    loggers = {r["logger"].split(".")[0] for r in records}
    assert {"faust", "aiokafka", "streams"} <= loggers, loggers
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
