"""Producing events: validate each one against the event contract, then send it keyed by user.

Every event is checked with `streams.contract.events` before it leaves the process, so nothing this
module sends will be dead-lettered by the workers. Invalid inputs are skipped and reported (``line
N: reason`` for files, ``event N: reason`` otherwise), never sent.

The producer is tuned for throughput with full durability: ``acks=all`` and idempotence (no
duplicates on retry, per-partition order kept), ``linger_ms`` so sends share batches, large batches.
Sends are not awaited one by one: `EventSender` fills the record batches itself and awaits their
acknowledgements in groups and at the end, so a delivery failure still stops the run.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from streams.connections import MAX_BATCH_BYTES
from streams.contract.events import (
    Event,
    EventKind,
    RejectedEvent,
    check_event_time,
    decode_event,
    encode_event,
    kind_of_topic,
    latest_event_ts,
    parse_event,
)
from streams.settings import Settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

logger = logging.getLogger(__name__)

LINGER_MS = 20
DRAIN_EVERY_BATCHES = 200  # await acknowledgements this often, to surface errors early
KEEP_PROBLEMS = 100  # rejection messages kept in the report; all of them go to ``on_reject``

RejectHandler = Callable[[str], None]


@dataclass
class ProduceReport:
    """What a produce run did: events sent (per topic), inputs rejected, wall time."""

    sent: int = 0
    rejected: int = 0
    seconds: float = 0.0
    by_topic: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # the first KEEP_PROBLEMS rejections

    @property
    def rate(self) -> float:
        """Events sent per second of wall time."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"sent {self.sent} events, rejected {self.rejected}, "
                f"in {self.seconds:.1f} s ({self.rate:,.0f} events/s)")


def topic_kind(settings: Settings, topic: str) -> EventKind:
    """The event kind of a configured event topic; `ValueError` naming the choices otherwise."""
    kind = kind_of_topic(topic, plays=settings.topic_plays, ratings=settings.topic_ratings,
                         reviews=settings.topic_reviews)
    if kind is None:
        raise ValueError(f"{topic!r} is not an event topic; expected one of "
                         f"{', '.join(settings.event_topics)}")
    return kind


def topic_of_kind(settings: Settings, kind: EventKind) -> str:
    return {"play": settings.topic_plays, "rating": settings.topic_ratings,
            "review": settings.topic_reviews}[kind]


def producer_options(settings: Settings) -> dict[str, Any]:
    """AIOKafkaProducer tuning: durable (acks=all, idempotent) and batched (connection and
    security come from `streams.connections`)."""
    return {
        "client_id": f"{settings.app_id}-producer",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": LINGER_MS,
        "max_batch_size": MAX_BATCH_BYTES,
    }


@asynccontextmanager
async def kafka_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer, flushed and stopped on exit."""
    from streams.connections import kafka_producer as build

    producer = build(settings, **producer_options(settings))
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()  # flushes what is still lingering


class EventSender:
    """Sends validated events keyed by user id, filling one record batch per partition itself.

    ``producer.send`` costs a future and a callback per message; building the batches here and
    handing each full one to ``send_batch`` leaves one future per batch, about twice the rate.
    Partitions come from the same murmur2 hash ``send`` would use, so a user's events land where
    any Kafka client would put them. Open batches go out when full, when `LINGER_MS` has passed
    since the last flush, on `flush` and on `drain`.
    """

    def __init__(self, producer: AIOKafkaProducer, *, max_bytes: int) -> None:
        self._producer = producer
        self._max_bytes = max_bytes
        self._partitions: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], Any] = {}  # (topic, partition) -> BatchBuilder
        self._in_flight: list[asyncio.Future[Any]] = []  # one per submitted batch
        self._flushed_at = time.monotonic()

    def encode(self, event: Event) -> bytes:
        """The message value; `RejectedEvent` when it is over the message size limit."""
        value = encode_event(event)
        if len(value) > self._max_bytes:
            raise RejectedEvent(
                f"value: message of {len(value)} bytes is over the {self._max_bytes}-byte limit",
                code="too_large",
            )
        return value

    async def send(self, topic: str, event: Event, value: bytes | None = None) -> None:
        if value is None:
            value = self.encode(event)
        key = event.user_id.encode("utf-8")
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(
                await self._producer.partitions_for(topic))
        partition = partitions[_partition_index(key, len(partitions))]
        builder = self._open.get((topic, partition))
        if builder is None:
            builder = self._open[topic, partition] = self._producer.create_batch()
        if builder.append(timestamp=None, key=key, value=value) is None:  # full
            await self._submit(topic, partition)
            builder = self._open[topic, partition] = self._producer.create_batch()
            builder.append(timestamp=None, key=key, value=value)  # an empty batch takes any
        if time.monotonic() - self._flushed_at > LINGER_MS / 1000:
            await self.flush()

    async def _submit(self, topic: str, partition: int) -> None:
        builder = self._open.pop((topic, partition))
        self._in_flight.append(
            await self._producer.send_batch(builder, topic, partition=partition))
        if len(self._in_flight) >= DRAIN_EVERY_BATCHES:
            await self._await_in_flight()

    async def flush(self) -> None:
        """Hand every open batch to the producer (without waiting for acknowledgements)."""
        for topic, partition in list(self._open):
            await self._submit(topic, partition)
        self._flushed_at = time.monotonic()

    async def drain(self) -> None:
        """Flush, then wait for every send so far to be acknowledged; raises the first delivery
        error."""
        await self.flush()
        await self._await_in_flight()

    async def _await_in_flight(self) -> None:
        in_flight, self._in_flight = self._in_flight, []
        if in_flight:
            await asyncio.gather(*in_flight)


@functools.lru_cache(maxsize=65_536)
def _partition_index(key: bytes, count: int) -> int:
    """Kafka's default keyed partitioning (Java client and aiokafka alike)."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % count


def validate(kind: EventKind, item: bytes | dict[str, Any] | Event, *, max_bytes: int) -> Event:
    """One input as an event of ``kind``: raw JSON bytes, a decoded dict or an event object."""
    if isinstance(item, bytes | bytearray):
        return decode_event(kind, bytes(item), max_bytes=max_bytes)
    if isinstance(item, Event):
        if item.kind != kind:
            raise RejectedEvent(f"value: a {item.kind} event on a topic of {kind} events",
                                code="wrong_kind")
        return item  # type: ignore[return-value]
    return parse_event(kind, item)


async def _produce(
    settings: Settings,
    topic: str,
    numbered: Iterable[tuple[str, bytes | dict[str, Any] | Event]],
    *,
    progress: bool,
    total: int | None,
    on_reject: RejectHandler | None,
) -> ProduceReport:
    from tqdm import tqdm

    kind = topic_kind(settings, topic)
    report = ProduceReport()
    started = time.perf_counter()
    with tqdm(total=total, unit="event", disable=not progress, mininterval=0.5,
              desc=topic) as bar:
        async with kafka_producer(settings) as producer:
            sender = EventSender(producer, max_bytes=settings.max_message_bytes)
            since_update = 0
            for label, item in numbered:
                try:
                    event = validate(kind, item, max_bytes=settings.max_message_bytes)
                    # the record gets the producer's clock as its timestamp: refuse here what
                    # the workers would send to the dead-letter topic
                    check_event_time(event, not_after=latest_event_ts(
                        0.0, max_future_s=settings.max_event_future_s))
                    value = sender.encode(event)
                except RejectedEvent as exc:
                    _reject(report, f"{label}: {exc.reason}", on_reject)
                    continue
                await sender.send(topic, event, value)
                report.sent += 1
                since_update += 1
                if since_update >= 1000:
                    bar.update(since_update)
                    since_update = 0
            await sender.drain()
            bar.update(since_update)
    report.by_topic[topic] = report.sent
    report.seconds = time.perf_counter() - started
    return report


def _reject(report: ProduceReport, problem: str, on_reject: RejectHandler | None) -> None:
    report.rejected += 1
    if len(report.problems) < KEEP_PROBLEMS:
        report.problems.append(problem)
    if on_reject is not None:
        on_reject(problem)
    else:
        logger.warning("rejected %s", problem)


async def produce_events(
    settings: Settings,
    topic: str,
    events: Iterable[dict[str, Any] | Event],
    *,
    progress: bool = True,
    on_reject: RejectHandler | None = None,
) -> ProduceReport:
    """Validate and send ``events`` (dicts or event objects) to the event topic ``topic``.

    Invalid ones are skipped and reported as ``event N: reason`` (N counts from 1).

    Parameters
    ----------
    settings
        Where Kafka is and how to reach it (security settings included).
    topic
        One of the event topics (``settings.event_topics``); its kind decides the checks.
    events
        JSON-like dicts (as any producer would send them) or event objects.
    progress
        Show a progress bar on the terminal.
    on_reject
        Called with each rejection (``event N: reason``); the report keeps the first 100.
    """
    total = len(events) if hasattr(events, "__len__") else None  # type: ignore[arg-type]
    numbered = ((f"event {n}", e) for n, e in enumerate(events, start=1))
    return await _produce(settings, topic, numbered, progress=progress, total=total,
                          on_reject=on_reject)


def numbered_lines(stream: IO[bytes]) -> Iterator[tuple[str, bytes]]:
    """(``line N``, line) for each non-blank line of a JSON-lines byte stream."""
    for n, line in enumerate(stream, start=1):
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield f"line {n}", line


async def produce_file(
    settings: Settings,
    topic: str,
    path_or_dash: str | Path,
    *,
    progress: bool = True,
    on_reject: RejectHandler | None = None,
) -> ProduceReport:
    """Send each line of a JSON-lines file (``-`` for stdin) as one event to ``topic``.

    Lines are read as bytes, so a line that is not UTF-8 is rejected on its own
    (``line N: value: not UTF-8 ...``) without stopping the rest. Blank lines are skipped."""
    topic_kind(settings, topic)  # fail before opening anything
    if str(path_or_dash) == "-":
        return await _produce(settings, topic, numbered_lines(sys.stdin.buffer),
                              progress=progress, total=None, on_reject=on_reject)
    with open(path_or_dash, "rb") as stream:
        return await _produce(settings, topic, numbered_lines(stream), progress=progress,
                              total=None, on_reject=on_reject)


def produce_events_sync(settings: Settings, topic: str,
                        events: Iterable[dict[str, Any] | Event], **options: Any
                        ) -> ProduceReport:
    """`produce_events` for code without an event loop."""
    return asyncio.run(produce_events(settings, topic, events, **options))


def produce_file_sync(settings: Settings, topic: str, path_or_dash: str | Path,
                      **options: Any) -> ProduceReport:
    """`produce_file` for code without an event loop."""
    return asyncio.run(produce_file(settings, topic, path_or_dash, **options))
