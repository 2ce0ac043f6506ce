"""Real worker processes and what tests need around them: start, kill -9, wait until settled,
read the final Redis state, and the in-process reference it must equal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import orjson
import redis

from streams.connections import kafka_producer, redis_sync
from streams.keys import Keys
from streams.reference import StreamReplica
from streams.settings import Settings
from streams.supervisor import WorkerProcess, is_settled, processed, settings_env  # noqa: F401 - re-exported


def client(settings: Settings) -> redis.Redis:
    return redis_sync(settings)


def wait_processed(settings: Settings, total: int, workers: Iterable[WorkerProcess],
                   timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processed(settings) >= total:
            return
        for w in workers:
            if not w.alive():
                raise AssertionError(f"a worker died:\n{w.tail()}")
        time.sleep(0.25)
    tails = "\n---\n".join(w.tail() for w in workers)
    raise AssertionError(f"only {processed(settings)}/{total} processed in {timeout}s\n{tails}")


def wait_settled(settings: Settings, timeout: float = 60.0) -> None:
    """Until every event partition's users were settled at the last committed delta."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_settled(settings):
            return
        time.sleep(0.25)
    settled = client(settings).hgetall(Keys(settings.key_prefix).settled)
    raise AssertionError(f"not settled in {timeout}s: {settled}")


def recommendations_in_redis(settings: Settings, users: Iterable[str]
                             ) -> dict[str, list[tuple[str, float, tuple[str, ...]]]]:
    keys = Keys(settings.key_prefix)
    r = client(settings)
    out = {}
    for user in users:
        recs = r.zrevrange(keys.recs(user), 0, -1, withscores=True)
        explain = r.hgetall(keys.explain(user))
        out[user] = [
            (item.decode(), score, tuple(orjson.loads(explain[item])["because"]))
            for item, score in recs
        ]
    return out


def reference(settings: Settings, events: Iterable[tuple[str, dict]]):  # noqa: ANN201
    """The in-process model fed ``(kind, event dict)`` as the workers are (`StreamReplica`)."""
    replica = StreamReplica(settings)
    for kind, value in events:
        replica.learn(kind, value)
    return replica.model


def assert_equal_to_reference(settings: Settings, model, users: Iterable[str]) -> int:  # noqa: ANN001
    """Every user's recommendations in Redis equal the reference's: the same items in the same
    order with the same explanations, scores equal up to float rounding (the workers add the
    same terms in another order). Where two items' scores differ by rounding alone, either may
    come first; the model breaks such ties by id after rounding to 12 digits, so this is rare."""
    users = sorted(users)
    got = recommendations_in_redis(settings, users)
    compared = 0
    for user in users:
        want = model.recommend(user, settings.top_n, fresh=True)
        longer = {r.item_id: r for r in model.recommend(user, settings.top_n + 20, fresh=True)}
        have = got[user]
        assert len(have) == len(want), user
        for rank, ((item, score, because), r) in enumerate(zip(have, want, strict=True)):
            assert _close(score, r.score), (user, rank, item, score, r)
            if item != r.item_id:  # only a rounding tie may swap items
                assert item in longer and _close(longer[item].score, r.score), (
                    f"user {user}, rank {rank}: redis {have[max(0, rank - 1):rank + 2]} != "
                    f"reference {want[max(0, rank - 1):rank + 2]}; reference for {item}: "
                    f"{longer.get(item)}")
            assert because == longer[item].because, (user, rank, item)
        compared += len(want)
    return compared


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


async def send_raw(settings: Settings, messages: Iterable[tuple[str, bytes | None, bytes | None]]
                   ) -> int:
    """Produce raw ``(topic, key, value)`` messages, valid or not, in order."""
    producer = kafka_producer(settings, acks="all", enable_idempotence=True,
                              max_request_size=8 * 1024 * 1024, linger_ms=5)
    await producer.start()
    n = 0
    try:
        futures = []
        for topic, key, value in messages:
            futures.append(await producer.send(topic, value=value, key=key))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n
