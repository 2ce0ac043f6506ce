"""Real worker processes and what tests need around them: start, kill -9, wait until settled,
read the final Redis state, and the in-process reference it must equal."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
import redis

from streams.events import Event, parse_event
from streams.keys import Keys
from streams.settings import ENV_PREFIX, Settings
from streams.worker import event_feedback, reference_recommender

ROOT = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings, **extra: object) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    for name, value in extra.items():
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env


class WorkerProcess:
    """``tastemaker worker`` in a child process of its own."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._readies = 0

    def start(self) -> WorkerProcess:
        self._readies = self._count_readies()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
            cwd=ROOT, env=settings_env(self.settings), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._count_readies() > self._readies:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.tail()}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.tail()}")

    def _count_readies(self) -> int:
        if not self.log_path.exists():
            return 0
        return self.log_path.read_bytes().count(b"Worker ready")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


def processed(settings: Settings) -> int:
    """Messages the workers have committed (sum of the next offsets over partitions)."""
    offsets = client(settings).hgetall(Keys(settings.key_prefix).offsets)
    return sum(int(v) for v in offsets.values())


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
    keys = Keys(settings.key_prefix)
    r = client(settings)
    fields = {f"{t}:{p}" for t in settings.event_topics for p in range(settings.topic_partitions)}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = r.xrevrange(keys.deltas, count=1)
        settled = r.hgetall(keys.settled)
        if last and all(settled.get(f.encode()) == last[0][0] for f in fields):
            return
        time.sleep(0.25)
    raise AssertionError(f"not settled in {timeout}s: {r.hgetall(keys.settled)}")


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
    """Replay ``(kind, event dict)`` in-process as a worker would (dedup by event id)."""
    model = reference_recommender(settings)
    weights = settings.feedback_weights()
    seen: set[tuple[str, str]] = set()
    for kind, value in events:
        event: Event = parse_event(kind, dict(value))  # type: ignore[arg-type]
        key = (event.user_id, event.dedup_id())
        if key in seen:
            continue
        seen.add(key)
        model.learn_one(event.user_id, event.item_id, weight=event_feedback(event, weights),
                        ts=event.ts)
    return model


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
                    f"user {user}, rank {rank}: redis {item} {score} != reference {r}")
            assert because == longer[item].because, (user, rank, item)
        compared += len(want)
    return compared


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


async def send_raw(settings: Settings, messages: Iterable[tuple[str, bytes | None, bytes | None]]
                   ) -> int:
    """Produce raw ``(topic, key, value)`` messages, valid or not, in order."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                acks="all", enable_idempotence=True,
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
