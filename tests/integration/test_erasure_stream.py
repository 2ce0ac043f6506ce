"""``tastemaker erase-user`` against a real worker, Kafka and Redis."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from streams.contract.keys import Keys
from streams.runtime.state import UserState
from streams.settings import Settings
from streams.tools.supervisor import ROOT
from tests.integration.harness import (
    WorkerProcess,
    assert_equal_to_reference,
    client,
    processed,
    reference,
    send_raw,
    settings_env,
    wait_processed,
    wait_settled,
)

pytestmark = pytest.mark.integration

ERASED = "b"
USERS = ["a", "b", "c", "d", "e", "f"]


def events(start_ts: float, n: int, seed: int) -> list[tuple[str, dict]]:
    """Plays and ratings of every user on 200 items, B's spread over the whole run."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        user, item, ts = rng.choice(USERS), f"i{rng.randrange(200)}", start_ts + k
        if rng.random() < 0.7:
            out.append(("play", {"user_id": user, "item_id": item, "ts": ts,
                                 "completion": rng.choice([1.0, 0.8, 0.4, 0.1])}))
        else:
            out.append(("rating", {"user_id": user, "item_id": item, "ts": ts,
                                   "rating": rng.choice([1, 2, 3, 4, 5])}))
    return out


def messages(settings: Settings, batch: list[tuple[str, dict]]):
    topics = {"play": settings.topic_plays, "rating": settings.topic_ratings}
    return [(topics[kind], str(v["user_id"]).encode(), orjson.dumps(v)) for kind, v in batch]


def erase_with_the_cli(settings: Settings, user_id: str) -> str:
    result = subprocess.run([sys.executable, "-m", "streams.tools.cli", "erase-user", user_id],
                            cwd=ROOT, env=settings_env(settings), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_erased(settings: Settings, user_id: str) -> None:
    r, keys = client(settings), Keys(settings.key_prefix)
    for key in (keys.history(user_id), keys.recs(user_id), keys.explain(user_id),
                keys.recs_meta(user_id)):
        assert not r.exists(key), key
    for topic in settings.event_topics:
        for partition in range(settings.topic_partitions):
            assert r.zscore(keys.active(topic, partition), user_id) is None


def assert_item_lists_equal(settings: Settings, model) -> None:
    """The trending list in Redis equals the reference's (the same items, scores to 1e-9)."""
    got = client(settings).zrevrange(Keys(settings.key_prefix).trending, 0, -1, withscores=True)
    want = model.items.trending(settings.top_n)
    assert [i.decode() for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-9)


def test_erasing_a_user_mid_stream_equals_never_having_seen_them(unique_topics: Settings,
                                                                 tmp_path: Path) -> None:
    settings = unique_topics
    start = time.time() - 30 * 86_400  # every event is older than the erasure
    stream = events(start, 1600, seed=11)
    first, rest = stream[:800], stream[800:]
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        asyncio.run(send_raw(settings, messages(settings, first)))
        wait_processed(settings, len(first), [worker])
        r, keys = client(settings), Keys(settings.key_prefix)
        assert r.exists(keys.history(ERASED)) and r.exists(keys.recs(ERASED))

        # erase B while the rest of the stream (B's events too) trickles in and is processed;
        # its last half waits for the erasure, so that it lands mid-stream however slowly the
        # CLI starts on a loaded machine
        async def race() -> tuple[str, int]:
            erased = asyncio.Event()
            at_erasure: list[int] = []

            async def send_slowly() -> None:
                for k in range(0, len(rest), 40):
                    if k >= len(rest) // 2:
                        await erased.wait()
                    await send_raw(settings, messages(settings, rest[k:k + 40]))
                    await asyncio.sleep(0.15)

            async def erase_meanwhile() -> str:
                await asyncio.sleep(1.0)
                out = await asyncio.to_thread(erase_with_the_cli, settings, ERASED)
                at_erasure.append(processed(settings))
                erased.set()
                return out

            out = (await asyncio.gather(send_slowly(), erase_meanwhile()))[1]
            return out, at_erasure[0]

        summary, sent_before = asyncio.run(race())
        assert f"erased user {ERASED}" in summary
        wait_processed(settings, len(stream), [worker])
        wait_settled(settings)

        assert_erased(settings, ERASED)
        assert sent_before < len(stream), "the erasure did not happen mid-stream"
        others = [u for u in USERS if u != ERASED]
        never = reference(settings, [(k, v) for k, v in stream if v["user_id"] != ERASED])
        assert assert_equal_to_reference(settings, never, others) > 0
        assert_item_lists_equal(settings, never)

        # a crash, then B's old events again (a replay) and newer events: B stays erased,
        # B's newer event starts a fresh history
        worker.kill9()
        erased_at = float(r.hget(keys.erased, ERASED))
        worker = WorkerProcess(settings, tmp_path / "worker-2.log").start()
        later = [("play", {"user_id": ERASED, "item_id": "i1", "ts": erased_at + 60,
                           "completion": 1.0}),
                 ("play", {"user_id": "a", "item_id": "i199", "ts": erased_at + 61,
                           "completion": 1.0})]
        replay = [(k, v) for k, v in stream if v["user_id"] == ERASED]
        asyncio.run(send_raw(settings, messages(settings, replay + later)))
        worker.wait_ready()
        wait_processed(settings, len(stream) + len(replay) + len(later), [worker])
        wait_settled(settings)

        history = UserState.from_bytes(r.get(keys.history(ERASED)))
        assert history.items == ["i1"]  # only the event after the erasure
        final = reference(settings, [(k, v) for k, v in stream + later
                                     if v["user_id"] != ERASED or v["ts"] > erased_at])
        assert assert_equal_to_reference(settings, final, USERS) > 0
        assert_item_lists_equal(settings, final)
        assert processed(settings) == len(stream) + len(replay) + len(later)
    finally:
        worker.stop()
