"""Faust's consumer side without the per-message costs the worker does not need.

First, the transport: a message the conductor can hand to the stream at once is handed over
without four asyncio tasks.

Faust's fetch loop (faust-streaming 0.15.3, `faust.transport.consumer.Consumer._drain_messages`)
passes every message to the conductor through
``self.wait_first(callback(message), self.suspend_flow.wait())``. `mode.Service.wait_first`
wraps both in tasks, adds two more for the service's stopped and crashed events, waits for the
first to finish and cancels the other three: about half of the CPU a do-nothing Faust agent spends
per event (``python -m bench.faust_ceiling``). Almost always the callback never waits — flow is
active, the stream's queue has room, the event is put in it — so all that machinery decides
nothing.

`EagerWaitFirst.wait_first` runs the first coroutine's first step at once, as the first task
would have. If the coroutine finishes there, that is the result `wait_first` would have returned
(the same `WaitResults`). If it has to wait (flow control paused, the queue full, the producer
buffer full), the suspended coroutine goes on as a task under Faust's own `wait_first`, so a
rebalance (``suspend_flow``) or a stop interrupts it exactly as before.

Second, `RawSchema`: the event topics are read
as raw bytes, so the codec lookups of Faust's schema (key and value through the serializer
registry, settings read per message) return what they were given. It builds the same event from
the message directly.

Third, `batches`: the agent takes its batches straight from the queue the conductor fills,
instead of through the stream's per-event iterator (``Stream.take_events`` runs a processor, a
buffer handshake and an ack per event), keeping the stream's rules.

The transport is selected by the broker URL's scheme (`SCHEME`, registered with Faust's transport
registry when this module is imported): `streams.connections.faust_broker` builds such URLs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Coroutine, Generator, Sequence
from typing import Any

import faust
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

SCHEME = "tastemaker-kafka"


class _Started(Awaitable[Any]):
    """A coroutine whose first step already ran and yielded ``pending`` (what it waits on): awaiting
    this goes on from there — what the awaiting task is sent or thrown reaches the coroutine."""

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro, self.pending = coro, pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, step = self.coro, self.pending
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation too: the coroutine decides
                try:
                    step = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    step = coro.send(sent)
                except StopIteration as done:
                    return done.value


class EagerWaitFirst:
    """`mode.Service.wait_first` with the first coroutine started eagerly (see the module)."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:
        if (coros and asyncio.iscoroutine(coros[0]) and not self._stopped.is_set()
                and not self._crashed.is_set()):
            first, rest = coros[0], coros[1:]
            try:
                pending = first.send(None)
            except BaseException as exc:
                for other in rest:  # never started: closed, not left to warn "never awaited"
                    if asyncio.iscoroutine(other):
                        other.close()
                if isinstance(exc, StopIteration):
                    return WaitResults([first], [exc.value], False)
                raise
            coros = (_Started(first, pending), *rest)
        return await super().wait_first(*coros, timeout=timeout)  # type: ignore[misc]


class Consumer(EagerWaitFirst, faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with `EagerWaitFirst`."""


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with this module's `Consumer`."""

    Consumer = Consumer


class RawSchema(faust.Schema):
    """Faust's schema for raw keys and values (``allow_empty``: a value may be None) without the
    codec round trip: the event holds the message's own key and value bytes, as the ``raw``
    codec would return them."""

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw", allow_empty=True)

    def compile(self, app: faust.types.AppT, **_: Any) -> Any:  # Faust's type
        create_event = app.create_event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode


async def batches(app: faust.App, stream: faust.StreamT, max_: int, within: float
                  ) -> AsyncIterator[list[faust.EventT]]:
    """Batches of the agent ``stream``'s events, at most ``max_`` each: what came while the last
    batch was processed, at once; or, when nothing did, the first event to come and what follows
    it within ``within`` seconds. With the rules of the stream's own iterator:
    events of an earlier consumer generation, or taken while flow control is off (a rebalance),
    are dropped; kept events are tracked (the consumer's unacked set) before the batch is handed
    out; every event of a batch, kept or dropped, is acknowledged when the next batch is asked
    for — so a batch the caller has not finished is never acknowledged. Faust's monitor sees each
    kept event come in and go out (its stream idle check, its counters)."""
    channel = aiter(stream.channel)  # subscribes the agent's queue, as iterating the stream does
    queue = channel.queue
    consumer, sensors = app.consumer, app.sensors
    acking_topics = app.topics.acking_topics
    loop = asyncio.get_running_loop()
    while not stream.should_stop:
        waited = queue.empty()  # nothing came while the last batch was processed
        events = [await channel.__anext__()]
        deadline = loop.time() + within
        while len(events) < max_:
            if not queue.empty():
                events.append(queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0 or not waited:  # behind: waiting for more only adds latency
                break
            try:
                events.append(await asyncio.wait_for(queue.get(), left))
            except TimeoutError:
                break
        kept, states = [], []
        active, generation = app.flow_control.is_active(), app.consumer_generation_id
        for event in events:
            message = event.message
            if not active or message.generation_id != generation:
                continue  # acknowledged below, as the stream acknowledges what it skips
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                consumer.track_message(message)
            kept.append(event)
            states.append(sensors.on_stream_event_in(message.tp, message.offset, stream,
                                                     event))
        if kept:
            yield kept
        for event, state in zip(kept, states, strict=True):
            message = event.message
            sensors.on_stream_event_out(message.tp, message.offset, stream, event, state)
        for event in events:
            if event.ack():
                message = event.message
                sensors.on_message_out(message.tp, message.offset, message)


def event_topic(app: faust.App, topics: Sequence[str]) -> faust.TopicT:
    """The worker's Faust topic over the event topics: raw bytes, `RawSchema`."""
    return app.topic(*topics, schema=RawSchema())


TRANSPORTS.aliases.setdefault(SCHEME, f"{__name__}:Transport")
