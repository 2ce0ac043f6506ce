"""State size after a full ML-100K replay: per user, per item, snapshot, deltas stream.

``--mode model`` (default, ~2 min): the full replay through the worker's own state classes in
this process (`streams.runtime.state.UserState`, `models.cooccurrence`), in the order the replay
sends it. Each user's state is written to Redis as the worker writes it and measured with
``MEMORY USAGE``; the item statistics are measured in memory (entries per row; Python heap via
tracemalloc while loading their snapshot) and as a snapshot; every batch's deltas are encoded
as the commit encodes them, and the stream's size follows from the encoded total and the
``MEMORY USAGE`` of the last batches written for real.

``--mode worker``: the replay produced to fresh topics and processed by one ``tastemaker worker``
(snapshots and stream trimming as deployed) for at most ``--budget`` seconds; then the same
per-user and per-item figures from what it committed (plus its recs/explain/recsmeta and
``nbrs`` keys), and the deltas stream as it is (entries left, entries ever added, peak sampled
every 2 s). On a loaded 2-core machine the worker does not finish the full replay within a
5-minute run; the figures then say how far it got.

Writes ``bench/out/state_size.json`` (one section per mode); deletes its topics and keys.

    python -m bench.state_size
    python -m bench.state_size --mode worker --budget 240
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import tracemalloc
from contextlib import suppress
from pathlib import Path
from typing import Any

import redis

from bench.speed import (
    OUT_DIR,
    bench_settings,
    create_topics,
    machine,
    ml_events,
    percentiles,
    run_worker_until,
)
from models.cooccurrence import ItemCooccurrence
from streams.connections import redis_sync
from streams.contract.keys import Keys
from streams.runtime.learning import CooccurrenceConfig, event_feedback
from streams.runtime.state import SEEN_IDS_CAP
from streams.settings import Settings, get_settings
from streams.tools.namespaces import drop_namespaces


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    p50, p99 = percentiles(values, 50, 99)
    return {"n": len(values), "mean": round(sum(values) / len(values), 1), "p50": p50,
            "p99": p99, "max": max(values), "total": sum(values)}


def memory_usage(client: redis.Redis, keys: list[str]) -> list[int]:
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
        return [v or 0 for v in pipe.execute()]


def scan(client: redis.Redis, pattern: str) -> list[str]:
    return [k.decode() for k in client.scan_iter(match=pattern, count=5000)]


class StreamWatch(threading.Thread):
    """Samples the deltas stream's MEMORY USAGE every 2 s: the peak between snapshots."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.client = redis_sync(settings)
        self.key = Keys(settings.key_prefix).deltas
        self.peak = 0
        self.peak_len = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(2.0):
            with suppress(redis.RedisError):
                size = self.client.memory_usage(self.key, samples=0) or 0
                if size > self.peak:
                    self.peak, self.peak_len = size, self.client.xlen(self.key)


def wait_settled(settings: Settings, client: redis.Redis, timeout: float) -> bool:
    """Until the owner has settled every partition at the last committed delta."""
    keys = Keys(settings.key_prefix)
    fields = {f"{t}:{p}".encode() for t in settings.event_topics
              for p in range(settings.topic_partitions)}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = client.xrevrange(keys.deltas, count=1)
        settled = client.hgetall(keys.settled)
        if last and all(settled.get(f) == last[0][0] for f in fields):
            return True
        time.sleep(0.25)
    return False


def traced(fn: Any) -> int:
    """Bytes of Python heap (numpy arrays included) that ``fn()`` leaves allocated."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fn()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return grown


def item_stats(settings: Settings, snapshot: bytes) -> tuple[dict[str, Any], list[str]]:
    """Rows of the item statistics in a snapshot, and the heap they take once loaded: the
    statistics with their rows, the neighbour lists once all are computed, and apart from
    them the similar-user index (per user: their latest liked items, and each item's likers)."""
    items = CooccurrenceConfig.of(settings).model().items  # as a worker keeps them
    heap = traced(lambda: items.load_bytes(snapshot))
    neighbours = traced(items.refresh)
    index = items._user_items
    users = len(index)
    rebuilt = ItemCooccurrence()

    def build_index() -> None:  # copies of every user's items, as a load makes them
        for user_id, liked in index.items():
            rebuilt._set_user_items(user_id, dict(liked))

    index_heap = traced(build_index)
    rows = items.row_sizes().tolist()
    entries = sum(rows)
    n = max(items.n_items, 1)
    statistics = heap - index_heap
    return {
        "items": items.n_items, "entries": entries, "row_cap": settings.row_cap,
        "entries_per_row": stats(rows),
        "rows_at_row_cap": sum(1 for r in rows if r >= settings.row_cap),
        "in_memory_heap_bytes": heap,
        "in_memory_bytes_per_item": round((statistics + neighbours) / n),
        "statistics_bytes_per_item": round(statistics / n),
        "neighbour_lists_bytes_per_item": round(neighbours / n),
        "in_memory_bytes_per_entry": round(statistics / max(entries, 1), 1),
        "similar_user_index_users": users,
        "similar_user_index_bytes_per_user": round(index_heap / max(users, 1)),
        "note": "heap measured by tracemalloc: loading the snapshot into a fresh "
                "ItemCooccurrence (the similar-user index, measured apart by building it "
                "again, taken out), then computing every neighbour list",
    }, items.item_ids()


def measure(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    """Sizes of what a worker left in Redis (after it stopped)."""
    keys = Keys(settings.key_prefix)
    p = settings.key_prefix
    out: dict[str, Any] = {}

    hist_keys = scan(client, f"{p}hist:*")
    users = [k[len(f"{p}hist:"):] for k in hist_keys]
    hist = memory_usage(client, hist_keys)
    with client.pipeline(transaction=False) as pipe:
        for k in hist_keys:
            pipe.strlen(k)
        hist_len = pipe.execute()
    per_user_other = {name: memory_usage(client, [fn(u) for u in users])
                      for name, fn in (("recs", keys.recs), ("explain", keys.explain),
                                       ("recsmeta", keys.recs_meta))}
    total_user = [h + sum(v[i] for v in per_user_other.values()) for i, h in enumerate(hist)]
    out["per_user_bytes"] = {
        "hist": stats(hist), "hist_value_bytes": stats(hist_len),
        **{name: stats(v) for name, v in per_user_other.items()},
        "all_user_keys": stats(total_user),
    }

    raw = client.hget(keys.snapshot, "items") or b""
    out["per_item"], item_ids = item_stats(settings, raw)
    out["per_item"]["nbrs_key_bytes"] = stats(
        memory_usage(client, [keys.neighbours(i) for i in item_ids]))

    snap_mem = client.memory_usage(keys.snapshot, samples=0) or 0
    out["snapshot"] = {"items_bytes": len(raw), "memory_usage": snap_mem,
                       "delta_id": (client.hget(keys.snapshot, "delta_id") or b"").decode()}

    info = client.xinfo_stream(keys.deltas)
    length = info["length"]
    stream_mem = client.memory_usage(keys.deltas, samples=0) or 0
    added = info.get("entries-added", length)
    per_entry = stream_mem / length if length else 0.0
    out["deltas_stream"] = {
        "memory_usage": stream_mem, "entries": length, "entries_added": added,
        "bytes_per_entry": round(per_entry), "untrimmed_estimate_bytes": round(per_entry * added),
        "snapshot_every_batches": settings.snapshot_every_batches,
    }
    return out


def model_state(settings: Settings, client: redis.Redis, *, limit: int | None,
                keep_batches: int = 10) -> dict[str, Any]:
    """The full replay through the worker's state classes in this process: each user's state
    as `streams.runtime.state.UserState` serialises it (history + recent event ids), the item
    statistics and their snapshot, and every batch of ``batch_size`` events' deltas encoded as the
    commit encodes them. Per-user keys and the last ``keep_batches`` batches go to Redis (own
    prefix) for ``MEMORY USAGE``; the whole stream's size is the encoded total times the overhead
    measured on those. Reviews count by their stars here (the worker scores their sentiment),
    which moves sizes very little."""
    from streams.runtime.state import UserState, encode_entry

    keys = Keys(settings.key_prefix)
    events = ml_events(settings, limit)
    weights = settings.feedback_weights()
    config = CooccurrenceConfig.of(settings)
    items = config.model().items  # as a worker keeps them
    states: dict[str, UserState] = {}
    batch_bytes: list[int] = []
    kept: list[dict[str, bytes]] = []
    updates = 0
    size = settings.batch_size
    for start in range(0, len(events), size):  # as a worker learns and commits a batch
        batch = events[start:start + size]
        model = config.batch_model(items, {
            u: states.setdefault(u, UserState()) for u in {e.user_id for e in batch}})
        deltas, _ = model.observe_many(
            (e.user_id, e.item_id, event_feedback(e, weights), e.ts) for e in batch)
        entry = encode_entry(deltas, items.names)
        items.apply_packed(deltas)
        updates += deltas.pairs
        for e in batch:
            states[e.user_id].seen.append(e.dedup_id())
        for user_id in {e.user_id for e in batch}:
            state = states[user_id]
            state.items, state.s, state.t, state.g = model.history_arrays(user_id)
        batch_bytes.append(sum(len(v) for v in entry.values()))
        if len(events) - start <= keep_batches * size:
            kept.append(entry)

    hist_keys = [keys.history(u) for u in states]
    with client.pipeline(transaction=False) as pipe:
        for key, state in zip(hist_keys, states.values(), strict=True):
            pipe.set(key, state.to_bytes())
        for entry in kept:
            pipe.xadd(keys.deltas, entry)
        pipe.execute()
    hist = memory_usage(client, hist_keys)
    packed_len = [len(state.to_bytes()) for state in states.values()]
    stream_mem = client.memory_usage(keys.deltas, samples=0) or 0
    overhead = stream_mem / max(sum(len(v) for k in kept for v in k.values()), 1)
    snapshot = items.to_bytes()
    items, _ = item_stats(settings, snapshot)
    total = sum(batch_bytes)
    return {
        "events": len(events), "cooccurrence_updates": updates,
        "per_user_bytes": {"hist": stats(hist), "hist_packed_bytes": stats(packed_len),
                           "history_items": stats([len(s.items)
                                                   for s in states.values()]),
                           "seen_ids": stats([min(len(s.seen), SEEN_IDS_CAP)
                                              for s in states.values()])},
        "per_item": items,
        "snapshot": {"items_bytes": len(snapshot)},
        "deltas_stream": {
            "batches": len(batch_bytes), "batch_size": settings.batch_size,
            "encoded_bytes_total": total,
            "encoded_bytes_per_batch": stats(batch_bytes),
            "encoded_bytes_per_update": round(total / max(updates, 1), 1),
            "memory_usage_over_encoded": round(overhead, 3),
            "memory_usage_untrimmed_estimate": round(total * overhead),
            "memory_usage_last_batches": {"batches": len(kept), "bytes": stream_mem},
            "retained_estimate_at_snapshot_every": round(
                2 * settings.snapshot_every_batches * stream_mem / max(len(kept), 1)),
            "snapshot_every_batches": settings.snapshot_every_batches,
        },
    }


def worker_state(settings: Settings, client: redis.Redis, *, limit: int | None,
                 budget_s: float) -> dict[str, Any]:
    from streams.tools.replay import replay

    result: dict[str, Any] = {}
    watch = StreamWatch(settings)
    worker = None
    try:
        asyncio.run(create_topics(settings))
        total = asyncio.run(replay(settings, limit=limit, progress=False)).events
        print(f"produced {total} events; worker running ...")
        watch.start()
        run, worker = run_worker_until(settings, total, name="state_size", budget_s=budget_s,
                                       stop=False)
        result["worker"] = run.as_dict()
        # a worker cut short by the budget is still busy: measure what it committed so far
        result["settled"] = run.processed >= total and wait_settled(settings, client, 60)
        watch.stopped.set()
        worker.stop()
        result.update(measure(settings, client))
        result["deltas_stream"].update(peak_memory_usage=watch.peak,
                                       entries_at_peak=watch.peak_len)
    finally:
        watch.stopped.set()
        if worker is not None:
            worker.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("model", "worker"), default="model")
    parser.add_argument("--limit", type=int, default=None, help="only the first N events")
    parser.add_argument("--budget", type=float, default=240.0,
                        help="seconds the worker may take at most (--mode worker)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "state_size.json")
    args = parser.parse_args()

    settings = bench_settings(get_settings())
    client = redis_sync(settings)
    result: dict[str, Any] = {}
    if args.out.exists():  # keep the other mode's figures
        with suppress(ValueError):
            result = json.loads(args.out.read_text())
    load_before = machine()
    try:
        if args.mode == "model":
            r = model_state(settings, client, limit=args.limit)
        else:
            r = worker_state(settings, client, limit=args.limit, budget_s=args.budget)
    finally:
        with suppress(Exception):
            asyncio.run(drop_namespaces([settings]))
        client.close()
    r.update(load_before=load_before, load_after=machine())
    result[args.mode] = r
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    report(args.mode, r)
    print(f"load before {load_before['loadavg_1_5_15']}, after "
          f"{r['load_after']['loadavg_1_5_15']}; wrote {args.out}")


def report(mode: str, r: dict[str, Any]) -> None:
    u, i, d = r["per_user_bytes"], r["per_item"], r["deltas_stream"]
    if mode == "worker":
        w = r["worker"]
        print(f"worker: {w['processed']}/{w['events']} events in {w['spawn_to_done_s']} s, "
              f"settled: {r['settled']}")
    else:
        print(f"model: {r['events']} events, {r['cooccurrence_updates']:,} co-occurrence updates")
    print(f"per user: hist:{{user}} {u['hist']['mean']:,.0f} B mean, {u['hist']['p99']:,} B p99, "
          f"{u['hist']['max']:,} B max ({u['hist']['n']} users)"
          + (f"; all user keys {u['all_user_keys']['mean']:,.0f} B mean"
             if "all_user_keys" in u else ""))
    print(f"per item: {i['items']} items, {i['entries_per_row']['mean']:.0f} entries/row mean, "
          f"{i['entries_per_row']['max']} max; in the worker {i['in_memory_bytes_per_item']:,} "
          f"B/item ({i['statistics_bytes_per_item']:,} statistics and rows, "
          f"{i['in_memory_bytes_per_entry']} B/entry; {i['neighbour_lists_bytes_per_item']:,} "
          f"neighbour lists); snapshot {r['snapshot']['items_bytes'] / 1e6:.2f} MB")
    print(f"per user in the worker (similar-user index): "
          f"{i['similar_user_index_bytes_per_user']:,} B ({i['similar_user_index_users']} users)")
    if mode == "worker":
        print(f"deltas stream: {d['memory_usage'] / 1e6:.2f} MB now ({d['entries']} entries), "
              f"peak {d['peak_memory_usage'] / 1e6:.2f} MB, {d['entries_added']} added, "
              f"untrimmed ~{d['untrimmed_estimate_bytes'] / 1e6:.0f} MB")
    else:
        print(f"deltas stream: {d['encoded_bytes_total'] / 1e6:.0f} MB encoded over "
              f"{d['batches']} batches of {d['batch_size']} "
              f"({d['encoded_bytes_per_update']} B per co-occurrence update); untrimmed "
              f"MEMORY USAGE ~{d['memory_usage_untrimmed_estimate'] / 1e6:.0f} MB; retained "
              f"with a snapshot every {d['snapshot_every_batches']} batches "
              f"~{d['retained_estimate_at_snapshot_every'] / 1e6:.0f} MB (last batches' size)")


if __name__ == "__main__":
    main()
