"""The Faust app around `streams.runtime.worker.EventProcessor`: the agent that hands it batches,
the timers (settle pass, ranker swap, lag), ownership of the assigned partitions, and the process
entry point (``tastemaker worker``). The computation lives in `streams.runtime.worker`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Iterable
from contextlib import suppress

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError

from models.cooccurrence import warm_up
from models.sentiment import warm_up as warm_up_sentiment
from streams import connections
from streams.runtime.metrics import record_lag
from streams.runtime.state import offset_field
from streams.runtime.worker import RETRYABLE, EventProcessor, SourceMessage
from streams.settings import Settings

logger = logging.getLogger(__name__)

MARKER_CHECK_S = 5.0  # how long `past_markers` may fetch before the offsets count as unknown
REREAD_IDLE_S = 30.0  # how long `read_range` waits on a log that yields nothing


async def past_markers(consumer: AIOKafkaConsumer, ends: dict[tuple[str, int], int],
                       nexts: dict[tuple[str, int], int], *, timeout_s: float = MARKER_CHECK_S
                       ) -> dict[tuple[str, int], int] | None:
    """The next offsets to process (``nexts``, from Redis) moved past the offsets that hold no
    event, so that a partition is caught up when its next offset reaches its end offset.

    A transactional producer's commit and abort markers take an offset each and are never
    delivered: after a transaction the next offset stays at least one short of the end offset,
    and end minus next never reads zero. Offsets alone cannot tell a marker from an event, so
    where end > next the group-less ``consumer`` fetches from next: its fetch position moves
    past control records without returning them. A partition whose position reaches its end
    with no record moves to its end; one that returns a record moves to that record's offset
    (markers between later events still count: lag is an upper bound). None when the fetch did
    not answer in ``timeout_s`` (unknown, as when Kafka is unreachable). A fetch from an offset
    the log no longer holds starts at its earliest, as the worker's consumer does."""
    moved = dict(nexts)
    pending = {TopicPartition(t, p): nexts[t, p] for (t, p), end in ends.items()
               if end > nexts[t, p]}
    if not pending:
        return moved
    owned = {TopicPartition(t, p) for t, p in ends}
    if consumer.assignment() != owned:  # after a rebalance only: aiokafka logs every assign
        consumer.assign(list(owned))
    consumer.pause(*(owned - pending.keys()))
    consumer.resume(*pending)
    for tp, offset in pending.items():
        consumer.seek(tp, offset)
    deadline = time.monotonic() + timeout_s
    try:
        while pending:
            if time.monotonic() > deadline:
                return None
            fetched = await consumer.getmany(*pending, timeout_ms=50, max_records=len(pending))
            for tp, records in fetched.items():
                if records and tp in pending:
                    key = (tp.topic, tp.partition)
                    moved[key] = min(ends[key], records[0].offset)
                    del pending[tp]
            for tp in list(pending):
                key = (tp.topic, tp.partition)
                if await consumer.position(tp) >= ends[key]:  # control records only
                    moved[key] = ends[key]
                    del pending[tp]
    finally:
        consumer.pause(*owned)  # no fetching in the background until the next call
    return moved


async def read_range(consumer: AIOKafkaConsumer, ranges: dict[tuple[str, int], tuple[int, int]],
                     limit: int, *, idle_s: float = REREAD_IDLE_S) -> list[SourceMessage]:
    """The messages of each (topic, partition) from offset ``start`` up to, not including,
    ``stop`` (``ranges``), at most ``limit`` in all, read by the group-less ``consumer``
    (`streams.runtime.worker.Reread`). A start the log no longer holds reads from its earliest
    offset, as the worker's consumer does; transaction markers are skipped by the fetch. Raises
    `KafkaTimeoutError` (an outage: the worker retries) when the log yields nothing for
    ``idle_s`` seconds with offsets before ``stop`` unread."""
    pending = {TopicPartition(t, p): (start, stop) for (t, p), (start, stop) in ranges.items()
               if stop > start}
    out: list[SourceMessage] = []
    if not pending:
        return out
    wanted = set(pending)
    if consumer.assignment() != wanted:
        consumer.assign(list(wanted))
    consumer.resume(*wanted)
    for tp, (start, _) in pending.items():
        consumer.seek(tp, start)
    deadline = time.monotonic() + idle_s
    try:
        while pending and len(out) < limit:
            fetched = await consumer.getmany(*pending, timeout_ms=50,
                                             max_records=limit - len(out))
            for tp, records in fetched.items():
                if tp not in pending or not records:
                    continue
                deadline = time.monotonic() + idle_s
                stop = pending[tp][1]
                out.extend(SourceMessage.of_record(r) for r in records if r.offset < stop)
                if records[-1].offset >= stop - 1:
                    del pending[tp]
            for tp in list(pending):
                if await consumer.position(tp) >= pending[tp][1]:  # markers only, up to stop
                    del pending[tp]
            if pending and time.monotonic() > deadline:
                raise KafkaTimeoutError(f"Kafka yielded nothing for {idle_s:g} s while "
                                        f"reading back {sorted(map(tuple, pending))}")
    finally:
        consumer.pause(*wanted)  # no fetching in the background until the next call
    return out[:limit]


def create_app(settings: Settings):  # faust.App, imported lazily
    """Build the Faust app with its agent and timers."""
    import faust

    from streams.runtime import faust_consumer

    faust_dir = settings.stack_dir / "faust"  # Faust's local data, kept out of the cwd
    faust_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=connections.faust_broker(settings),
        broker_credentials=connections.faust_credentials(settings),
        store="memory://",
        datadir=str(faust_dir / "{conf.id}-data"),
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        producer_acks=-1,
        broker_max_poll_records=max(settings.batch_size, 500),
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 4,
    )
    topic = faust_consumer.event_topic(app, settings.event_topics)
    runtime: dict[str, EventProcessor] = {}

    async def processor() -> EventProcessor:
        if "p" not in runtime:
            client = connections.redis_async(settings, socket_timeout=10,
                                             health_check_interval=10)
            producer = connections.worker_producer(settings)
            await producer.start()
            runtime["p"] = EventProcessor(settings, client, producer, claims_on_assignment=True,
                                          reread=reread)
        return runtime["p"]

    def assigned() -> list[tuple[str, int]]:
        return sorted((tp.topic, tp.partition) for tp in app.consumer.assignment()
                      if tp.topic in settings.event_topics)

    def owns_item_lists() -> bool:
        """The worker holding partition 0 of the plays topic writes item-wide keys."""
        return (settings.topic_plays, 0) in assigned()

    def event_partitions(tps: Iterable) -> list[tuple[str, int]]:  # Faust TPs
        return sorted((tp.topic, tp.partition) for tp in tps if tp.topic in settings.event_topics)

    @app.on_partitions_revoked.connect
    async def disown(app, revoked, **kwargs) -> None:
        (await processor()).release(event_partitions(revoked))

    @app.on_partitions_assigned.connect
    async def own(app, assigned, **kwargs) -> None:
        """Own the assigned partitions in Redis before any of their batches: the previous
        owner, if it still runs (a zombie), can no longer commit them. Where the consumer
        group starts them is noted: what Redis lacks before that is read back from Kafka
        (`EventProcessor.repair`), even if no event comes."""
        proc = await processor()
        partitions = event_partitions(assigned)
        await proc.claim(partitions)
        proc.note_consumed(await group_offsets(partitions))

    async def group_offsets(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The consumer group's committed offsets of these partitions: where its consumer
        starts them (left out: none committed). Empty when Kafka does not answer: a batch
        still shows what Redis lacks (`streams.runtime.worker.MissedMessages`)."""
        if not partitions:
            return {}
        admin = connections.kafka_admin(settings)
        try:
            await admin.start()
            committed = await admin.list_consumer_group_offsets(
                settings.app_id, partitions=[TopicPartition(t, p) for t, p in partitions])
        except (KafkaError, *RETRYABLE) as exc:
            logger.warning("the group's committed offsets were not read: %r", exc)
            return {}
        finally:
            await admin.close()
        return {(tp.topic, tp.partition): meta.offset for tp, meta in committed.items()
                if meta.offset >= 0}

    @app.agent(topic, name="track_events", concurrency=1)
    async def track_events(stream):
        proc = await processor()
        async for events in faust_consumer.batches(app, stream, settings.batch_size,
                                                   settings.batch_within_s):
            batch = [SourceMessage.of(e.message) for e in events]
            task = asyncio.ensure_future(proc.process(batch))
            try:
                # finish the batch even when the agent is being stopped: Faust acks the events
                # when this iteration ends, so they must be committed to Redis first
                await asyncio.shield(task)
            except asyncio.CancelledError:
                await task
                raise
            except Exception:
                # a bug, not an outage (outages are retried inside): stop before Faust can ack
                logger.exception("batch failed; exiting so that no offset is acknowledged")
                os._exit(70)
            await proc.maybe_snapshot(owner=owns_item_lists())

    @app.timer(interval=0.5)
    async def settle_when_quiet() -> None:
        proc = await processor()
        await proc.repair()  # what Redis lost behind the consumer, if it lost anything
        await proc.settle(assigned(), writes_items=owns_item_lists(), backlog=has_backlog)

    @app.timer(interval=settings.ranker_poll_s)
    async def swap_ranker() -> None:
        proc = await processor()
        if proc.started:
            await proc.maybe_swap()

    # a group-less consumer that asks end offsets, looks past transaction markers and reads
    # back what Redis lost; the settle and lag timers and the agent share it, one at a time
    # (it seeks)
    lag_reader: dict[str, AIOKafkaConsumer] = {}
    lag_lock = asyncio.Lock()

    async def group_less_reader() -> AIOKafkaConsumer:
        """The shared group-less consumer (the caller holds ``lag_lock``)."""
        if "c" not in lag_reader:
            consumer = connections.kafka_consumer(settings, group_id=None,
                                                  enable_auto_commit=False,
                                                  auto_offset_reset="earliest")
            await consumer.start()
            lag_reader["c"] = consumer
        return lag_reader["c"]

    async def reread(ranges: dict[tuple[str, int], tuple[int, int]], limit: int
                     ) -> list[SourceMessage]:
        async with lag_lock:
            return await read_range(await group_less_reader(), ranges, limit)

    async def offsets(owned: list[tuple[str, int]]
                      ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]] | None:
        """Kafka end offsets and the next offsets to process of the ``owned`` partitions: those
        committed to Redis, moved past transaction markers (`past_markers`); None when they
        could not be read."""
        try:
            async with lag_lock:
                reader = await group_less_reader()
                ends = await reader.end_offsets([TopicPartition(t, p) for t, p in owned])
                proc = await processor()
                nexts = await proc.state.next_offsets(offset_field(t, p) for t, p in owned)
                ends_by = {(tp.topic, tp.partition): end for tp, end in ends.items()}
                moved = await past_markers(
                    reader, ends_by, {(t, p): nexts[offset_field(t, p)] for t, p in owned})
        except (KafkaError, *RETRYABLE) as exc:
            logger.warning("end offsets not read: %r", exc)
            return None
        if moved is None:
            logger.warning("offsets past transaction markers not read in %.0f s",
                           MARKER_CHECK_S)
            return None
        return ends_by, moved

    async def has_backlog() -> bool:
        """Whether owned partitions hold events not processed yet. A pause between batches with
        a backlog (a slow fetch on a loaded machine) is not the quiet a settle pass waits for:
        settling then re-ranks the active users in the middle of the backlog, blocking the
        batches for as long, and the next pause comes right after (a replay of ML-100K spent
        most of its time in such passes). Transaction markers are not a backlog (`offsets`).
        Unknown (Kafka unreachable): settle as before."""
        owned = assigned()
        read = await offsets(owned) if owned else None
        if read is None:
            return False
        ends, nexts = read
        return any(end > nexts[tp] for tp, end in ends.items())

    @app.timer(interval=settings.lag_interval_s)
    async def measure_lag() -> None:
        """Processing lag of the owned partitions (`streams.runtime.metrics.record_lag`),
        transaction markers not counted (`offsets`)."""
        owned = assigned()
        if not owned:
            record_lag({}, {})
            return
        read = await offsets(owned)
        if read is not None:  # a gap in a gauge, not a reason to stop
            record_lag(*read)

    @app.on_before_shutdown.connect
    async def close_clients(app, **kwargs) -> None:
        if "c" in lag_reader:
            await lag_reader["c"].stop()
        if "p" in runtime:
            proc = runtime["p"]
            if proc.snapshot_write is not None:  # the snapshot under way is written first
                with suppress(Exception):  # (or given up after 10 s: the next one will be)
                    await asyncio.wait_for(asyncio.shield(proc.snapshot_write), 10)
            await proc.producer.stop()
            await proc.client.aclose()

    return app


def tune_gc() -> None:
    """The garbage collector as a worker runs it (and the harnesses that drive its batch code
    in-process, `bench.profile_worker` and `bench.flood`). A worker keeps many long-lived
    objects (the item index, the similar-user index): the default thresholds run a full
    collection every ~70k allocations, each walking all of them (a batch of 500 events
    allocates several times that); measured 5-10% of a batch."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run one worker until stopped (``tastemaker worker``)."""
    from faust import Worker

    try:  # a wrong password fails here, naming the setting, instead of retrying forever
        asyncio.run(connections.check_kafka_credentials(settings))
        connections.check_redis_credentials(settings)
    except connections.CredentialsRejected as exc:
        raise SystemExit(f"error: {exc}") from None
    # load the co-occurrence and text kernels now (from numba's cache; compiled if it has
    # none), not in the first batch: that batch's latency, and the worker's memory from the start
    warm_up()
    warm_up_sentiment()
    tune_gc()
    if settings.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(settings.metrics_port)
        except OSError as exc:
            raise SystemExit(f"cannot serve metrics on port {settings.metrics_port} "
                             f"(TASTEMAKER_METRICS_PORT): {exc}") from None
        logger.info("Prometheus metrics on :%d/metrics", settings.metrics_port)
    from streams.logs import faust_logging_config

    app = create_app(settings)
    Worker(app, loglevel=loglevel, quiet=settings.log_format == "json",  # no banner in JSON logs
           logging_config=faust_logging_config(settings.log_format, level=loglevel),
           ).execute_from_commandline()
