"""The worker's Faust transport: `EagerWaitFirst.wait_first` returns what `mode.Service.wait_first`
returns, without tasks when the first coroutine finishes at once, and a coroutine that has to wait
is still interrupted by the others (a rebalance's ``suspend_flow``); the raw event topic decodes
as Faust's own raw topic does."""

from __future__ import annotations

import asyncio
import inspect

import faust
import pytest
from faust.types import Message
from mode import Service
from mode.utils.locks import Event

from streams import connections
from streams.runtime.faust_consumer import SCHEME, EagerWaitFirst, Transport, event_topic
from streams.settings import Settings


class EagerService(EagerWaitFirst, Service):
    pass


async def immediate(value: int) -> int:
    return value


def test_a_coroutine_that_finishes_at_once_is_the_winner_and_no_task_is_made() -> None:
    async def main() -> None:
        service = EagerService()
        other = Event().wait()
        tasks = len(asyncio.all_tasks())
        result = await service.wait_first(immediate(7), other)
        assert len(asyncio.all_tasks()) == tasks
        assert result.results == [7]
        assert len(result.done) == 1
        assert not result.stopped
        assert inspect.getcoroutinestate(other) == inspect.CORO_CLOSED  # no "never awaited"

    asyncio.run(main())


def test_a_coroutine_that_waits_finishes_later_with_its_value() -> None:
    async def main() -> None:
        service = EagerService()
        gate = asyncio.get_running_loop().create_future()

        async def waits() -> str:
            await asyncio.sleep(0)  # a bare yield first, then a future
            return await gate

        asyncio.get_running_loop().call_later(0.01, gate.set_result, "late")
        result = await service.wait_first(waits(), Event().wait())
        assert result.results == ["late"]
        assert not result.stopped

    asyncio.run(main())


def test_a_waiting_coroutine_is_interrupted_by_the_other_event_and_cancelled() -> None:
    async def main() -> None:
        service = EagerService()
        suspend_flow = Event()
        state = {"cancelled": False}

        async def blocked() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                state["cancelled"] = True
                raise

        asyncio.get_running_loop().call_later(0.01, suspend_flow.set)
        result = await service.wait_first(blocked(), suspend_flow.wait())
        assert result.results == [True]  # the event won (Event.wait returns True)
        await asyncio.sleep(0)  # the loser's cancellation runs
        assert state["cancelled"]

    asyncio.run(main())


def test_an_error_in_the_first_step_propagates_and_closes_the_others() -> None:
    async def main() -> None:
        async def fails() -> None:
            raise ValueError("bad message")

        other = Event().wait()
        with pytest.raises(ValueError, match="bad message"):
            await EagerService().wait_first(fails(), other)
        assert inspect.getcoroutinestate(other) == inspect.CORO_CLOSED

    asyncio.run(main())


def test_an_error_after_waiting_propagates() -> None:
    async def main() -> None:
        async def fails_later() -> None:
            await asyncio.sleep(0)
            raise ValueError("later")

        with pytest.raises(ValueError, match="later"):
            await EagerService().wait_first(fails_later(), Event().wait())

    asyncio.run(main())


def test_the_worker_app_uses_the_transport() -> None:
    brokers = connections.faust_broker(Settings(kafka_bootstrap_servers="a:1, b:2"))
    assert brokers == [f"{SCHEME}://a:1", f"{SCHEME}://b:2"]
    app = faust.App("transport-check", broker=brokers)
    assert faust.transport.by_url(app.conf.broker_consumer[0]) is Transport


def test_the_raw_schema_makes_the_event_faust_would_make() -> None:
    app = faust.App("schema-check", broker=f"{SCHEME}://localhost:9092")
    stock = app.topic("plays", key_serializer="raw", value_serializer="raw", allow_empty=True)
    raw = event_topic(app, ["plays"])
    for key, value in ((b"u1", b'{"user_id": "u1"}'), (None, None), (b"k", b"")):
        message = Message("plays", 0, 7, 1.0, 0, [("h", b"v")], key, value, None)

        async def both(message: Message = message) -> tuple:
            return (await stock.decode(message), await raw.decode(message))

        want, got = asyncio.run(both())
        assert (got.key, got.value, got.headers, got.message) == (
            want.key, want.value, want.headers, want.message)
