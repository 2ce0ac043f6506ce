"""Neighbour lists are replaced in Redis at once (`streams.runtime.worker.REPLACE_SORTED_SET`):
one command per list, never seen empty between a delete and an add."""

from __future__ import annotations

import pytest

from streams import connections
from streams.contract.keys import Keys
from streams.runtime.worker import REPLACE_SORTED_SET
from streams.settings import Settings

pytestmark = pytest.mark.integration


async def test_a_sorted_set_is_replaced_whole_in_slices_and_after_a_script_flush(
        unique_topics: Settings):
    """The script leaves exactly the given members (10,000 arguments: ten ZADD slices; Lua's
    unpack refuses them in one), deletes the set when given none, and still runs after Redis
    forgot its scripts (a restart, ``SCRIPT FLUSH``): the pipeline loads it again."""
    client = connections.redis_async(unique_topics)
    script = client.register_script(REPLACE_SORTED_SET)
    key = Keys(unique_topics.key_prefix).neighbours("x")

    async def replace(members: dict[str, float]) -> None:
        async with client.pipeline(transaction=False) as pipe:
            await script(keys=[key], client=pipe,
                         args=[v for member, score in members.items() for v in (score, member)])
            await pipe.execute()

    try:
        await client.zadd(key, {"stale": 2.0, "m1": 9.0})
        members = {f"m{k}": k / 7 for k in range(5000)}
        await replace(members)
        got = await client.zrange(key, 0, -1, withscores=True)
        assert {m.decode(): s for m, s in got} == members
        await client.script_flush()
        await replace({"a": 0.5})
        assert await client.zrange(key, 0, -1, withscores=True) == [(b"a", 0.5)]
        await replace({})
        assert not await client.exists(key)
    finally:
        await client.delete(key)
        await client.aclose()
