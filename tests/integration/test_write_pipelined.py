"""`streams.connections.write_pipelined` against a real Redis: the writes land in order, an
error reply raises and the client goes on, and a server that does not answer in time raises
redis-py's timeout (which the worker retries as an outage) instead of waiting forever."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streams import connections
from streams.contract.keys import Keys
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_writes_land_in_order(unique_topics: Settings):
    keys = Keys(unique_topics.key_prefix)

    async def write() -> tuple:
        client = connections.redis_async(unique_topics)
        try:
            await client.zadd(keys.neighbours("a"), {"stale": 9.0})
            await connections.write_pipelined(client, [
                ("DEL", keys.neighbours("a"), keys.neighbours("b")),
                ("ZADD", keys.neighbours("a"), 0.5, "x", 0.25, "y"),
                ("ZADD", keys.neighbours("b"), 1.0, "a")])
            return (await client.zrange(keys.neighbours("a"), 0, -1, withscores=True),
                    await client.zrange(keys.neighbours("b"), 0, -1, withscores=True))
        finally:
            await client.aclose()

    assert asyncio.run(write()) == ([(b"y", 0.25), (b"x", 0.5)], [(b"a", 1.0)])


def test_an_error_reply_raises_and_the_client_goes_on(unique_topics: Settings):
    keys = Keys(unique_topics.key_prefix)

    async def write() -> bytes | None:
        client = connections.redis_async(unique_topics)
        try:
            with pytest.raises(ResponseError, match="not a valid float"):
                await connections.write_pipelined(client, [
                    ("ZADD", keys.neighbours("a"), "not a score", "x"),
                    ("SET", keys.item("a"), "after the error")])
            # the replies left unread went with the dropped connection: a new one answers
            await client.set(keys.item("b"), "next")
            return await client.get(keys.item("b"))
        finally:
            await client.aclose()

    assert asyncio.run(write()) == b"next"


def test_a_server_that_does_not_answer_in_time_raises_redis_timeout(unique_topics: Settings):
    keys = Keys(unique_topics.key_prefix)

    async def write() -> bytes | None:
        admin = connections.redis_async(unique_topics)
        client = connections.redis_async(unique_topics, socket_timeout=0.3)
        try:
            await client.ping()  # connected before the pause
            await admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
            with pytest.raises(RedisTimeoutError, match="not answered within 0.3 s"):
                await connections.write_pipelined(client, [("SET", keys.item("a"), "late")])
            await asyncio.sleep(1.5)
            await client.set(keys.item("a"), "on time")
            return await client.get(keys.item("a"))
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
            await client.aclose()
            await admin.aclose()

    assert asyncio.run(write()) == b"on time"
