"""Packing Redis commands: redis-py's asyncio connections (pure Python) against the same class
packing with hiredis (`streams.connections.hiredis_packing`), on what a batch writes: 500 users'
top-50 lists with their explanations and metadata. No network: the CPU a worker spends turning
its writes into bytes. Checks the two give the same bytes; best of 5, both in the same run.

    python -m bench.redis_packing
"""

from __future__ import annotations

import time

import orjson
from redis.asyncio.connection import Connection

from streams.connections import hiredis_packing


def batch_writes(users: int = 500, top_n: int = 50) -> list[tuple]:
    """The commands `streams.runtime.worker.EventProcessor._write_recommendations` queues."""
    why = orjson.dumps({"because": ["item1", "item2"], "source": "items"})
    commands: list[tuple] = []
    for u in range(users):
        recs = {f"item{i}": 1.0 / (i + 3) for i in range(top_n)}
        commands += [("DEL", f"recs:u{u}", f"explain:u{u}"),
                     ("ZADD", f"recs:u{u}", *[x for k, v in recs.items() for x in (v, k)]),
                     ("HSET", f"explain:u{u}", *[x for k in recs for x in (k, why)]),
                     ("HSET", f"recsmeta:u{u}", "updated_at", time.time(), "model", "none")]
    return commands


def best_ms(connection: Connection, commands: list[tuple], repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        connection.pack_commands(commands)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    commands = batch_writes()
    python, hiredis = Connection(), hiredis_packing(Connection)()
    assert (b"".join(bytes(c) for c in python.pack_commands(commands))
            == b"".join(hiredis.pack_commands(commands)))
    py_ms, hi_ms = best_ms(python, commands), best_ms(hiredis, commands)
    print(f"500 users' lists: redis-py {py_ms:.1f} ms, hiredis {hi_ms:.1f} ms "
          f"({py_ms / hi_ms:.2f}x; {(py_ms - hi_ms) / 500 * 1e3:.0f} µs less per user written)")


if __name__ == "__main__":
    main()
