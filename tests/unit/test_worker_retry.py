"""The worker's retry policy, with a stand-in producer: outages are retried in place, bugs are
not. Found with real processes (``python -m bench.faults --part outage``): with the broker away
longer than the producer's 40 s request timeout, the worker's first dead letter (no metadata of the
DLQ topic yet) failed in ``producer.send`` with aiokafka's `UnknownTopicOrPartitionError`; the
policy retried only Redis and OS errors, so the worker exited (code 70) and stayed down. Kafka
errors the client marks retriable, and `KafkaTimeoutError`, are now retried."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
    UnknownTopicOrPartitionError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from streams.contract.dlq import parse_dead_letter
from streams.contract.events import RejectedEvent
from streams.runtime.worker import EventProcessor, SourceMessage, is_outage
from streams.settings import load_settings


class FlakyProducer:
    """`AIOKafkaProducer.send` whose first ``failures`` calls fail with ``error``: raised by
    ``send`` itself (as when it waits for metadata) or by the delivery future."""

    def __init__(self, error: Exception, failures: int, *, in_send: bool = False) -> None:
        self.error, self.failures, self.in_send = error, failures, in_send
        self.delivered: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self.failures:
            self.failures -= 1
            if self.in_send:
                raise self.error
            future.set_exception(self.error)
        else:
            self.delivered.append((topic, value))
            future.set_result(None)
        return future


@pytest.mark.parametrize("error", [UnknownTopicOrPartitionError(), KafkaTimeoutError(),
                                   KafkaConnectionError("closed"),
                                   NodeNotReadyError("node 1"), RedisConnectionError("down"),
                                   ConnectionRefusedError()])
def test_outages_are_retried(error: Exception) -> None:
    assert is_outage(error)


@pytest.mark.parametrize("error", [MessageSizeTooLargeError(), ResponseError("WRONGTYPE"),
                                   ValueError("bug"), KeyError("bug")])
def test_bugs_are_not_retried(error: Exception) -> None:
    assert not is_outage(error)


@pytest.mark.parametrize("error, in_send", [(UnknownTopicOrPartitionError(), True),
                                            (KafkaTimeoutError(), True),
                                            (KafkaTimeoutError(), False)])
async def test_a_dead_letter_failed_by_a_broker_outage_is_sent_again(error: Exception,
                                                                     in_send: bool) -> None:
    producer = FlakyProducer(error, failures=2, in_send=in_send)
    proc = EventProcessor(load_settings(), client=None, producer=producer)  # type: ignore[arg-type]
    rejected = [(SourceMessage("plays", 3, 41, b"{oops"), RejectedEvent("value: invalid JSON",
                                                                        code="bad_json"))]
    await proc._retrying(proc._send_dead_letters, rejected)
    assert len(producer.delivered) == 1
    letter = parse_dead_letter(producer.delivered[0][1])
    assert (letter["topic"], letter["partition"], letter["offset"]) == ("plays", 3, 41)


async def test_a_bug_is_raised_not_retried() -> None:
    producer = FlakyProducer(MessageSizeTooLargeError(), failures=1)
    proc = EventProcessor(load_settings(), client=None, producer=producer)  # type: ignore[arg-type]
    rejected = [(SourceMessage("plays", 0, 0, b"x"), RejectedEvent("r", code="bad_json"))]
    with pytest.raises(MessageSizeTooLargeError):
        await proc._retrying(proc._send_dead_letters, rejected)
    assert producer.failures == 0 and not producer.delivered  # tried once
