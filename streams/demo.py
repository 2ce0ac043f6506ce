"""``tastemaker demo``: the whole system on real data, in one command.

Brings the stack up (the services in the settings when they answer, else the local stack), starts
a stream worker, replays MovieLens-100K with real review texts through Kafka, waits until every
event is processed and the recommendations are settled, then prints three users' recent history
and top-10 recommendations with titles and explanations, read from Redis, and a summary.

The demo uses topics and keys of its own (``demo-*`` topics, ``demo:`` key prefix) and clears
them first, so it can be run again; it stops what it started unless ``--keep``.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from streams.connections import kafka_admin, kafka_consumer, redis_sync
from streams.settings import Settings, load_settings
from streams.supervisor import WorkerProcess, is_settled, processed

logger = logging.getLogger(__name__)

DEMO_USERS = ("1", "405", "655")  # a long, a very long and an active-late history


def demo_settings(base: Settings) -> Settings:
    return load_settings(**{
        **base.model_dump(),
        "topic_plays": "demo-plays", "topic_ratings": "demo-ratings",
        "topic_reviews": "demo-reviews", "topic_dlq": "demo-events-dlq",
        "key_prefix": "demo:", "app_id": "tastemaker-demo",
    })


@dataclass(slots=True)
class DemoReport:
    events: int
    replay_rate: float
    process_seconds: float
    dlq: int

    @property
    def process_rate(self) -> float:
        return self.events / self.process_seconds if self.process_seconds else 0.0


def run_demo(base: Settings, *, keep: bool = False, limit: int | None = None,
             console: Console | None = None) -> DemoReport:
    from streams.stack import LocalStack, kafka_answers, run_coroutine

    console = console or Console()
    settings = demo_settings(base)
    stack = None
    if not (run_coroutine(kafka_answers(settings)) and _redis_answers(settings)):
        console.print("[bold]starting the local stack[/] (Kafka in KRaft mode + Redis)")
        stack = LocalStack(settings)
        stack.up()
    worker = None
    try:
        _reset(settings)
        log = Path(tempfile.mkdtemp(prefix="tastemaker-demo-")) / "worker.log"
        console.print(f"[bold]starting a stream worker[/] (log: {log})")
        worker = WorkerProcess(settings, log).start()
        worker.wait_ready(timeout=120)
        report = _replay_and_wait(settings, worker, limit=limit, console=console)
        _show(settings, console, report, limit=limit)
        return report
    finally:
        if worker is not None and not keep:
            worker.stop()
        if stack is not None and not keep:
            stack.down()
        if keep:
            console.print(f"kept running; read recommendations with: TASTEMAKER_KEY_PREFIX=demo: "
                          f"tastemaker recs {DEMO_USERS[0]}")


def _redis_answers(settings: Settings) -> bool:
    try:
        with redis_sync(settings, socket_timeout=2) as r:
            return bool(r.ping())
    except redis.RedisError:
        return False


def _reset(settings: Settings) -> None:
    """Delete the demo's topics and keys, then create the topics afresh."""
    from streams.stack import run_coroutine
    from streams.topics import ensure_topics, topic_partitions

    async def drop_topics() -> None:
        admin = kafka_admin(settings)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            doomed = [t for t in existing
                      if t in topic_partitions(settings) or t.startswith(settings.app_id + "-")]
            if doomed:
                await admin.delete_topics(doomed)
                await asyncio.sleep(1.0)
        finally:
            await admin.close()

    run_coroutine(drop_topics())
    with redis_sync(settings) as r:
        keys = list(r.scan_iter(match=f"{settings.key_prefix}*", count=10_000))
        for start in range(0, len(keys), 10_000):
            r.delete(*keys[start:start + 10_000])
    run_coroutine(ensure_topics(settings))


def _replay_and_wait(settings: Settings, worker: WorkerProcess, *, limit: int | None,
                     console: Console) -> DemoReport:
    from streams.replay import replay
    from streams.stack import run_coroutine

    console.print("[bold]replaying MovieLens-100K[/] with real review texts")
    started = time.monotonic()
    result = run_coroutine(replay(settings, "movielens-100k", limit=limit))
    total = result.events
    with tqdm(total=total, unit="event", desc="processed by the worker") as bar:
        done = 0
        while done < total:
            if not worker.alive():
                raise RuntimeError(f"the worker stopped:\n{worker.tail()}")
            time.sleep(0.5)
            now = processed(settings)
            bar.update(now - done)
            done = now
    deadline = time.monotonic() + 120
    while not is_settled(settings) and time.monotonic() < deadline:
        time.sleep(0.5)
    return DemoReport(events=total, replay_rate=result.rate,
                      process_seconds=time.monotonic() - started, dlq=_dlq_count(settings))


def _dlq_count(settings: Settings) -> int:
    from aiokafka import TopicPartition

    from streams.stack import run_coroutine

    async def count() -> int:
        consumer = kafka_consumer(settings, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer.topics()  # loads the metadata partitions_for_topic reads
            parts = consumer.partitions_for_topic(settings.topic_dlq) or set()
            tps = [TopicPartition(settings.topic_dlq, p) for p in parts]
            if not tps:
                return 0
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            return sum(ends[tp] - starts[tp] for tp in tps)
        finally:
            await consumer.stop()

    return run_coroutine(count())


def _show(settings: Settings, console: Console, report: DemoReport, *, limit: int | None
          ) -> None:
    from collections import Counter

    from streams.datasets import movielens_100k
    from streams.recs import get_recommendations, recommendations_table

    ratings, movies = movielens_100k(settings.cache_dir)
    if limit is not None:
        ratings = ratings[: limit // 2]  # the replay sends a play and a rating per rating
    active = Counter(r.user_id for r in ratings)
    users = [u for u in DEMO_USERS if u in active] or [u for u, _ in active.most_common(3)]
    for user in users:
        history = [r for r in ratings if r.user_id == user][-5:]
        table = Table(title=f"user {user}: last plays and ratings", title_justify="left")
        for column in ("when", "title", "stars"):
            table.add_column(column)
        for r in history:
            movie = movies.get(r.item_id)
            table.add_row(time.strftime("%Y-%m-%d", time.gmtime(r.ts)),
                          movie.title if movie else r.item_id, f"{r.rating:g}")
        console.print(table)
        console.print(recommendations_table(user, get_recommendations(user, 10,
                                                                      settings=settings)))
    summary = Table(title="summary", title_justify="left", show_header=False)
    summary.add_row("events replayed", f"{report.events:,}")
    summary.add_row("replay rate (produce)", f"{report.replay_rate:,.0f} events/s")
    summary.add_row("end to end (produce → recommendations in Redis)",
                    f"{report.process_rate:,.0f} events/s ({report.process_seconds:.1f} s)")
    summary.add_row("dead-lettered", f"{report.dlq}")
    summary.add_row("ranker model", "none published yet: ranking by co-occurrence score")
    console.print(summary)
