"""Real worker processes and what tests need around them: start, kill -9, wait until settled,
read the final Redis state, and the in-process reference it must equal."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
import redis
from prometheus_client.parser import text_string_to_metric_families

from streams.client.produce import topic_of_kind
from streams.connections import kafka_producer, redis_sync
from streams.contract.keys import Keys
from streams.runtime.ranking import Ranking
from streams.settings import Settings, load_settings
from streams.tools.reference import StreamReplica
from streams.tools.stack import LocalStack, StackError
from streams.tools.supervisor import (  # noqa: F401 - re-exported
    WorkerProcess,
    is_settled,
    processed,
    rss_bytes,
    settings_env,
)


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


def reference(settings: Settings, events: Iterable[tuple[str, dict]]):
    """The in-process model fed ``(kind, event dict)`` as the workers are (`StreamReplica`)."""
    replica = StreamReplica(settings)
    replica.learn_many(events)
    return replica.model


def assert_equal_to_reference(settings: Settings, model, users: Iterable[str]) -> int:
    """Every user's recommendations in Redis equal the reference's: the same items in the same
    order with the same explanations, scores equal up to float rounding (the workers add the
    same terms in another order). Where two items' scores differ by rounding alone, either may
    come first; the model breaks such ties by id after rounding to 12 digits, so this is rare."""
    users = sorted(users)
    got = recommendations_in_redis(settings, users)
    compared = 0
    ranking = Ranking(settings)
    if ranking.adjusting:  # the controls re-rank: the settle pass serves from fresh lists
        model.items.refresh()
    for user in users:
        if ranking.adjusting and user in model.histories:
            history = model.histories[user]
            want = ranking.top(model.items, user, history, settings.top_n)
            # a greedy list's first top_n are the longer list's: the same scores
            longer = {r.item_id: r for r in ranking.top(model.items, user, history,
                                                         settings.top_n + 20)}
        else:
            want = model.recommend(user, settings.top_n, fresh=True)
            longer = {r.item_id: r for r in model.recommend(user, settings.top_n + 20,
                                                            fresh=True)}
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


# --- the worker's Prometheus endpoint ---------------------------------------------------

def scrape(settings: Settings) -> dict[str, list]:
    """Metric family name -> its samples, from the worker's /metrics."""
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as page:
        text = page.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def lag_by_partition(settings: Settings) -> dict[tuple[str, str], float]:
    return {(s.labels["topic"], s.labels["partition"]): s.value
            for s in scrape(settings).get("tastemaker_consumer_lag", [])}


def wait_lag(settings: Settings, worker: WorkerProcess, want: dict[tuple[str, str], float],
             timeout: float = 60.0) -> None:
    """Until the scraped lag equals ``want`` (polled: the worker measures it on a timer)."""
    deadline = time.monotonic() + timeout
    got: dict = {}
    while time.monotonic() < deadline:
        assert worker.alive(), worker.tail()
        got = lag_by_partition(settings)
        if got == want:
            return
        time.sleep(0.25)
    raise AssertionError(f"lag {got} != {want} after {timeout}s")


# --- fault tests: a stack of our own, a producer that outlives a broker restart, memory ----

@contextlib.contextmanager
def private_stack(root: Path) -> Iterator[LocalStack]:
    """A Kafka broker and a Redis server of our own (free ports, data under ``root``), so a test
    may stop and restart them without touching the shared services; wiped afterwards. Fails
    loudly (or skips outside CI) when it cannot start."""
    from streams.tools.stack import free_port
    from tests.conftest import services_unavailable

    base = load_settings()
    settings = load_settings(**{
        **base.model_dump(), "kafka_port": free_port(), "kafka_controller_port": free_port(),
        "redis_port": free_port(), "stack_dir": root})
    stack = LocalStack(settings)
    try:
        stack.up()
    except StackError as exc:
        stack.down(wipe=True)
        services_unavailable(f"a private local stack for a fault test did not start: {exc}")
    try:
        yield stack
    finally:
        stack.down(wipe=True)


class ProducerThread:
    """One `AIOKafkaProducer` kept for a whole test on an event loop of its own thread, so the
    test goes on sending with the same client across a broker restart, as a long-lived service
    would. `send` returns where each message landed: ``(topic, partition, offset)``."""

    def __init__(self, settings: Settings) -> None:
        from aiokafka import AIOKafkaProducer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                enable_idempotence=True, max_request_size=8 * 1024 * 1024, linger_ms=5,
                request_timeout_ms=120_000)
            await producer.start()
            return producer

        self.producer = self._call(start())

    def _call(self, coro, timeout: float = 300.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def send(self, messages: Iterable[tuple[str, bytes | None, bytes | None]]
             ) -> list[tuple[str, int, int]]:
        async def send_all() -> list[tuple[str, int, int]]:
            futures = [await self.producer.send(t, value=v, key=k) for t, k, v in messages]
            return [(m.topic, m.partition, m.offset) for m in await asyncio.gather(*futures)]
        return self._call(send_all())

    def close(self) -> None:
        try:
            self._call(self.producer.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def event_ids_in_redis(settings: Settings, users: Iterable[str]) -> list[str]:
    """Every event id the users' committed histories recorded (each counted event once)."""
    from streams.runtime.state import UserState

    keys, r = Keys(settings.key_prefix), client(settings)
    return [e for u in users for e in UserState.from_bytes(r.get(keys.history(u))).seen]


async def read_topic(settings: Settings, topic: str, expected: int, idle_s: float = 20.0
                     ) -> list[tuple[int, int, bytes | None]]:
    """``(partition, offset, value)`` of a topic's messages, until ``expected`` were read or
    none came for ``idle_s``."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    out: list[tuple[int, int, bytes | None]] = []
    try:
        quiet_since = time.monotonic()
        while len(out) < expected and time.monotonic() - quiet_since < idle_s:
            batch = await consumer.getmany(timeout_ms=500)
            if batch:
                quiet_since = time.monotonic()
            out += [(m.partition, m.offset, m.value) for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    return out


topic_of = topic_of_kind  # the topic of an event kind, as the producers use it


def as_messages(settings: Settings, events: Iterable[tuple[str, dict]]
                ) -> Iterator[tuple[str, bytes, bytes]]:
    """``(topic, key, value)`` of ``(kind, event)`` pairs: key = user id, value = JSON."""
    for kind, value in events:
        yield topic_of(settings, kind), str(value["user_id"]).encode(), orjson.dumps(value)


def movielens_slice(settings: Settings, ratings: int) -> list[tuple[str, dict]]:
    """The replay's events (play, rating, sometimes a review) of the first ``ratings`` ratings."""
    from streams.tools.replay import load_dataset, movielens_events

    all_ratings, reviews, _ = load_dataset(settings, "movielens-100k")
    return list(movielens_events(all_ratings[:ratings], reviews, seed=7))
