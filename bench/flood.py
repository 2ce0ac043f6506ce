"""A flood of fresh item ids (issue 19): does a worker's memory stay bounded, and its settle pass
short, when every event names an item never seen before?

Drives the worker's per-batch code (`streams.runtime.worker.EventProcessor`, what ``tastemaker
worker`` runs under Faust) in this process against the real Redis of the local stack: ``--events``
plays, each of a fresh item id, from ``--users`` users (``--run-length`` events in a row each), in
batches of ``BATCH_SIZE``, with the
deployed defaults (``MAX_ITEMS`` unless ``--max-items``). After each batch it samples this
process's resident memory (``VmRSS`` from /proc; its start, with the kernels compiled and a
first batch done, is the baseline); at the end it times one settle pass (every user is within
the settle window) and reads what Redis holds. Writes ``bench/out/flood.json`` (one entry per
``--max-items``); deletes its keys and topics.

    python -m bench.flood                                 # 1,000,000 events, the default cap
    python -m bench.flood --events 200000 --max-items 0   # no cap: the growth per item
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson

from bench.speed import OUT_DIR, bench_settings, create_topics, machine
from streams import connections
from streams.contract.keys import Keys
from streams.runtime.app import tune_gc
from streams.runtime.worker import EventProcessor, SourceMessage
from streams.settings import Settings, get_settings
from streams.tools.namespaces import drop_namespaces

TS = 1.7e9


def rss_bytes() -> tuple[int, int]:
    """This process's resident memory now and at its peak (``VmRSS``, ``VmHWM``)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


class TimedLock(asyncio.Lock):
    """The worker lock, timing each hold: how long a batch could wait behind the settle pass."""

    def __init__(self) -> None:
        super().__init__()
        self.holds: list[float] = []

    async def __aenter__(self) -> None:
        await super().__aenter__()
        self._since = time.perf_counter()

    async def __aexit__(self, *exc: object) -> None:
        self.holds.append(time.perf_counter() - self._since)
        await super().__aexit__(*exc)


def flood(settings: Settings, first: int, n: int, users: int, run: int
          ) -> list[SourceMessage]:
    """Plays ``first`` to ``first + n``, each of an item id never seen before, from ``users``
    users in turn, each sending ``run`` in a row (a session). Made a batch at a time: the
    process measured holds what a worker holds, not the whole flood."""
    return [SourceMessage(settings.topic_plays, 0, k, orjson.dumps({
        "user_id": f"u{k // run % users}", "item_id": f"fresh-{k}", "ts": TS + k,
        "event_id": f"e{k}"}), TS + k, f"u{k // run % users}".encode())
        for k in range(first, first + n)]


async def run(settings: Settings, n: int, users: int, run_length: int) -> dict[str, Any]:
    producer = connections.worker_producer(settings)  # as the worker's
    await producer.start()
    client = connections.redis_async(settings)
    proc = EventProcessor(settings, client, producer)
    try:
        await proc.start()
        size = settings.batch_size
        await proc.process(flood(settings, 0, size, users, run_length))
        tune_gc()  # as the worker, once started
        baseline = rss_bytes()[0]
        redis_before = (await client.info("memory"))["used_memory"]
        samples = []
        started = time.perf_counter()
        for start in range(size, n, size):
            await proc.process(flood(settings, start, min(size, n - start), users,
                                     run_length))
            if (start // size) % 20 == 0 or start + size >= n:
                samples.append({"events": start + size, "rss": rss_bytes()[0],
                                "items": proc.state.items.n_items,
                                "live_items": proc.state.items.n_live})
        elapsed = time.perf_counter() - started
        await asyncio.sleep(settings.settle_after_s)
        proc.lock = lock = TimedLock()
        t0 = time.perf_counter()
        settled, calls = 0, 0
        while calls == 0 or proc.lists_pending:  # as the worker's timer calls it when quiet
            settled += await proc.settle([(settings.topic_plays, 0)], writes_items=True)
            calls += 1
            if calls == 1:
                first_s = time.perf_counter() - t0
        settle_s = time.perf_counter() - t0
        rss, peak = rss_bytes()
        keys = Keys(settings.key_prefix)
        listed = 0
        async for _ in client.scan_iter(match=keys.neighbours("*"), count=10_000):
            listed += 1
        items = proc.state.items
        return {
            "events": n, "users": users, "run_length": run_length,
            "max_items": settings.max_items,
            "batch_size": size, "events_per_s": round((n - size) / elapsed),
            "rss_baseline_bytes": baseline, "rss_end_bytes": rss, "rss_peak_bytes": peak,
            "rss_growth_bytes": rss - baseline,
            "items_interned": items.n_items, "items_live": items.n_live,
            "row_entries": items.n_entries(),
            "settle_users": settled, "settle_s": round(settle_s, 3),
            "settle_first_call_s": round(first_s, 3), "settle_calls": calls,
            "settle_longest_lock_hold_s": round(max(lock.holds), 3),
            "settle_lock_holds": len(lock.holds),
            "redis_used_memory_growth_bytes":
                (await client.info("memory"))["used_memory"] - redis_before,
            "nbrs_keys": listed, "samples": samples,
        }
    finally:
        await producer.stop()
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--run-length", type=int, default=10,
                        help="events each user sends in a row")
    parser.add_argument("--max-items", type=int, default=None,
                        help="MAX_ITEMS for this run (default: the setting's)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "flood.json")
    args = parser.parse_args()

    base = get_settings()
    overrides: dict[str, object] = {"ranker_example_rate": 0.0, "settle_after_s": 0.01}
    if args.max_items is not None:
        overrides["max_items"] = args.max_items
    settings = bench_settings(base, **overrides)
    load_before = machine()
    try:
        asyncio.run(create_topics(settings))
        result = asyncio.run(run(settings, args.events, args.users, args.run_length))
    finally:
        with suppress(Exception):
            asyncio.run(drop_namespaces([settings]))
    result.update(load_before=load_before, load_after=machine(),
                  command=f"python -m bench.flood --events {args.events} --users {args.users} "
                  f"--run-length {args.run_length}"
                  + (f" --max-items {args.max_items}" if args.max_items is not None else ""))
    everything: dict[str, Any] = {}
    if args.out.exists():
        with suppress(ValueError):
            everything = json.loads(args.out.read_text())
    everything[f"max_items={settings.max_items}"] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(everything, indent=2) + "\n")
    mb = 1e6
    print(f"{result['events']:,} fresh item ids from {result['users']:,} users, MAX_ITEMS "
          f"{result['max_items']:,}: {result['events_per_s']:,} events/s; RSS "
          f"{result['rss_baseline_bytes'] / mb:,.0f} MB after the first batch, "
          f"{result['rss_end_bytes'] / mb:,.0f} MB at the end (peak "
          f"{result['rss_peak_bytes'] / mb:,.0f} MB); {result['items_live']:,} live items "
          f"({result['items_interned']:,} interned), {result['row_entries']:,} row entries; "
          f"settle pass {result['settle_s']} s over {result['settle_users']:,} users in "
          f"{result['settle_calls']} calls, the lock held at most "
          f"{result['settle_longest_lock_hold_s']} s at a time; Redis "
          f"+{result['redis_used_memory_growth_bytes'] / mb:,.0f} MB, "
          f"{result['nbrs_keys']:,} nbrs keys; wrote {args.out}")


if __name__ == "__main__":
    main()
