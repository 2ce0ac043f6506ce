"""Freshness: from an event's send to its user's recommendations rewritten, at a steady rate.

A paced producer sends the ML-100K replay events (in replay order, through the real producer
path, `streams.client.produce.EventSender`) at ``--rate`` events/s for ``--seconds`` into one
running worker process. Every ``--sample``-th event is tracked: its send time is the wall clock when
it is handed to the producer, and its offset is known (fresh topics, this producer their only
writer: offsets count up from 0 per partition in send order). A poller takes atomic snapshots
inside Redis (one Lua script per pass, every ~10 ms): the committed offsets (committed with the
users' state in one transaction) and each pending user's ``recsmeta`` ``updated_at`` (the
worker's ``time.time()``, written with the recommendations). An event's freshness is
``updated_at - send time`` at the first snapshot where its partition's committed offset is past
it and ``updated_at`` is at or after both its send and the last snapshot that found it not yet
committed (so the write came after its batch could have committed, not from an earlier batch).
That last not-committed snapshot also gives a lower bound; both are reported. The value is too
high when a later batch rewrote the user's recommendations before the snapshot saw the write of
the event's own batch, and too low when an earlier batch rewrote them between that snapshot and
the commit; frequent snapshots keep both rare. Same machine, same clock. Events still
unresolved when the run ends rank above every resolved one (their percentiles read
"unresolved"). Writes ``bench/out/freshness.json`` and ``bench/out/freshness.png``; deletes its
topics and keys at the end.

    python -m bench.freshness                       # 2000 events/s for 45 s
    python -m bench.freshness --rate 500 --seconds 45 --out bench/out/freshness_500.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from bench.speed import (
    OUT_DIR,
    bench_settings,
    create_topics,
    machine,
    ml_events,
    percentiles,
    processed,
    start_worker,
)
from streams.connections import redis_async, redis_sync
from streams.contract.events import Event
from streams.contract.keys import Keys
from streams.settings import Settings, get_settings
from streams.tools.namespaces import drop_namespaces

POLL_S = 0.01


@dataclass(slots=True)
class Sample:
    user_id: str
    offset_field: str  # "topic:partition", as in the offsets hash
    offset: int
    sent: float  # time.time() when handed to the producer
    not_committed_at: float = 0.0  # last snapshot time that found it not yet committed
    fresh_s: float | None = None
    lower_s: float | None = None


# One atomic snapshot per poll pass, inside Redis: the committed offsets and the recsmeta
# updated_at of each user with pending samples.
SNAPSHOT = """
local out = {redis.call('HGETALL', KEYS[1])}
for i = 2, #KEYS do
  out[i] = redis.call('HGET', KEYS[i], 'updated_at') or ''
end
return out
"""


async def poll(settings: Settings, pending: dict[str, list[Sample]], done: list[Sample],
               stop: asyncio.Event) -> int:
    """Resolve samples until ``stop`` is set; returns the number of snapshots taken.

    A sample is committed once the stored next offset of its partition is past its offset (the
    offsets are committed with the users' state in one transaction), so its batch committed
    after the last snapshot that found it not committed (``not_committed_at``). It resolves at
    the first snapshot where it is committed and the user's ``updated_at`` is at or after its
    send and ``not_committed_at``: the recommendations were rewritten after its batch could
    have committed. Its freshness is ``updated_at - sent`` and ``not_committed_at - sent`` is a
    lower bound. The measured value is too high when a later batch rewrote the user's
    recommendations before the snapshot, too low when an earlier batch rewrote them between
    ``not_committed_at`` and the commit; snapshots every ~10 ms keep both rare. The poll
    interval stretches to twice the time a pass takes, so the poller takes little from the
    worker it measures. A pass Redis does not answer (restarting) is tried again."""
    keys = Keys(settings.key_prefix)
    client = redis_async(settings)
    snapshot = client.register_script(SNAPSHOT)
    passes = 0
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            users = [u for u, samples in pending.items() if samples]
            if users:
                before = time.time()
                try:
                    reply = await snapshot(
                        keys=[keys.offsets, *(keys.recs_meta(u) for u in users)])
                except (RedisError, OSError):  # Redis restarting (bench.soak): try again
                    await asyncio.sleep(0.1)
                    continue
                passes += 1
                flat = reply[0]
                offsets = {flat[k].decode(): int(flat[k + 1]) for k in range(0, len(flat), 2)}
                for user, raw in zip(users, reply[1:], strict=True):
                    updated = float(raw) if raw else 0.0
                    still = []
                    for s in pending[user]:
                        if offsets.get(s.offset_field, 0) <= s.offset:
                            s.not_committed_at = before
                            still.append(s)
                        elif updated < max(s.sent, s.not_committed_at):
                            still.append(s)  # its batch has not rewritten recs yet
                        else:
                            s.fresh_s = updated - s.sent
                            s.lower_s = max(0.0, s.not_committed_at - s.sent)
                            done.append(s)
                    pending[user] = still  # no await since reading it: nothing added meanwhile
                for user in [u for u, samples in pending.items() if not samples]:
                    del pending[user]
            await asyncio.sleep(max(POLL_S, 2 * (time.perf_counter() - t0)))
    finally:
        await client.aclose()
    return passes


def committed_offsets(settings: Settings) -> dict[str, int]:
    client = redis_sync(settings)
    try:
        return {k.decode(): int(v)
                for k, v in client.hgetall(Keys(settings.key_prefix).offsets).items()}
    finally:
        client.close()


async def paced_run(settings: Settings, events: list[Event], *, rate: float, seconds: float,
                    sample_every: int, drain_s: float) -> dict[str, Any]:
    """Send the first event and wait until it is processed (the worker has its partitions and
    is warm), then ``rate`` events/s for ``seconds``, then wait up to ``drain_s`` for the rest."""
    from aiokafka.partitioner import murmur2

    from streams.client.produce import EventSender, kafka_producer, topic_of_kind

    n_events = min(len(events) - 1, int(rate * seconds))
    pending: dict[str, list[Sample]] = {}  # user -> samples, oldest first
    done: list[Sample] = []
    stop = asyncio.Event()
    backlog: list[tuple[float, int, int]] = []  # (s since start, sent, processed)
    # fresh topics with this producer as their only writer: offsets count up from 0 per
    # partition, in send order (idempotent producer, no transactions)
    next_offset: dict[str, int] = {}

    def place(event: Event) -> tuple[str, int]:
        topic = topic_of_kind(settings, event.kind)
        partition = (murmur2(event.user_id.encode()) & 0x7FFFFFFF) % settings.topic_partitions
        name = f"{topic}:{partition}"
        offset = next_offset.get(name, 0)
        next_offset[name] = offset + 1
        return name, offset

    async with kafka_producer(settings) as producer:
        sender = EventSender(producer, max_bytes=settings.max_message_bytes)
        await sender.send(topic_of_kind(settings, events[0].kind), events[0])
        place(events[0])
        await sender.drain()
        deadline = time.monotonic() + 60
        while await asyncio.to_thread(processed, settings) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not process the first event in 60 s")
            await asyncio.sleep(0.05)

        poller = asyncio.create_task(poll(settings, pending, done, stop))
        started = time.perf_counter()
        next_report = 0.0
        sent = 0
        while sent < n_events:
            elapsed = time.perf_counter() - started
            due = min(n_events, int(elapsed * rate) + 1)
            while sent < due:
                event = events[1 + sent]
                await sender.send(topic_of_kind(settings, event.kind), event)
                name, offset = place(event)
                if sent % sample_every == 0:
                    pending.setdefault(event.user_id, []).append(
                        Sample(event.user_id, name, offset, time.time()))
                sent += 1
            if elapsed >= next_report:
                backlog.append((round(elapsed, 2), sent,
                                await asyncio.to_thread(processed, settings) - 1))
                next_report += 1.0
            await asyncio.sleep(0.002)
        await sender.drain()
        send_seconds = time.perf_counter() - started
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            n = await asyncio.to_thread(processed, settings) - 1
            backlog.append((round(time.perf_counter() - started, 2), n_events, n))
            if n >= n_events and not pending:
                break
            await asyncio.sleep(1.0)
        stop.set()
        passes = await poller
        unresolved = [s for samples in pending.values() for s in samples]
        # the offsets this benchmark assumed, against what the worker committed
        committed = await asyncio.to_thread(committed_offsets, settings)
        offsets_as_assumed = committed == next_offset if not unresolved else None
    return {"sent": n_events, "send_seconds": round(send_seconds, 2),
            "achieved_rate": round(n_events / send_seconds, 1),
            "samples": done, "unresolved": unresolved, "backlog": backlog,
            "snapshot_passes": passes, "offsets_as_assumed": offsets_as_assumed}


def summarize(run: dict[str, Any], *, rate: float, seconds: float, sample_every: int,
              started_at: float) -> dict[str, Any]:
    samples: list[Sample] = run["samples"]
    unresolved: list[Sample] = run["unresolved"]
    fresh_ms = [s.fresh_s * 1e3 for s in samples if s.fresh_s is not None]
    # unresolved samples are slower than anything seen: rank them last
    ranked = fresh_ms + [math.inf] * len(unresolved)
    p50, p90, p99 = percentiles(ranked, 50, 90, 99) if ranked else (math.nan,) * 3
    lower_ms = [s.lower_s * 1e3 for s in samples if s.lower_s is not None]
    lower = percentiles(lower_ms + [math.inf] * len(unresolved), 50, 90, 99) if ranked else []
    by_second: dict[int, list[float]] = {}
    for s in samples:
        by_second.setdefault(int(s.sent - started_at), []).append(s.fresh_s * 1e3)
    return {
        "rate_target": rate, "seconds_target": seconds, "sample_every": sample_every,
        "sent": run["sent"], "send_seconds": run["send_seconds"],
        "achieved_rate": run["achieved_rate"],
        "tracked": len(samples) + len(unresolved), "resolved": len(samples),
        "unresolved": len(unresolved),
        "p50_ms": _num(p50), "p90_ms": _num(p90), "p99_ms": _num(p99),
        "max_resolved_ms": round(max(fresh_ms), 1) if fresh_ms else None,
        "lower_bound_p50_p90_p99_ms": [_num(x) for x in lower],
        "p99_target_ms": 250, "meets_target": bool(p99 <= 250),
        "p50_ms_by_second": {k: round(percentiles(v, 50)[0], 1)
                             for k, v in sorted(by_second.items())},
        "backlog": run["backlog"], "snapshot_passes": run["snapshot_passes"],
        "offsets_as_assumed": run["offsets_as_assumed"],
        "fresh_ms": [round(x, 2) for x in fresh_ms],
        "lower_ms": [round(x, 2) for x in lower_ms],
    }


def _num(value: float) -> float | str:
    return round(value, 1) if math.isfinite(value) else "unresolved"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fresh = result["fresh_ms"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if fresh:
        lo, hi = max(min(fresh), 0.5), max(fresh)
        bins = [lo * (hi / lo) ** (i / 50) for i in range(51)] if hi > lo else 20
        left.hist(fresh, bins=bins, color="#4878a8", label="measured")
        left.hist([max(x, lo) for x in result["lower_ms"]], bins=bins, histtype="step",
                  color="grey", label="lower bound")
        left.set_xscale("log")
    for name, colour in (("p50_ms", "green"), ("p99_ms", "red")):
        if isinstance(result[name], float):
            left.axvline(result[name], color=colour, label=f"{name[:3]} {result[name]:.0f} ms")
    left.axvline(250, color="black", linestyle="--", label="p99 target 250 ms")
    left.set_xlabel("send -> recsmeta.updated_at (ms, log)")
    left.set_ylabel("tracked events")
    left.set_title(f"{result['resolved']} tracked events at {result['achieved_rate']:.0f} ev/s"
                   + (f", {result['unresolved']} unresolved" if result["unresolved"] else ""))
    left.legend(fontsize=8)
    backlog = result["backlog"]
    if backlog:
        xs = [b[0] for b in backlog]
        right.plot(xs, [b[1] for b in backlog], label="sent")
        right.plot(xs, [b[2] for b in backlog], label="processed (committed offsets)")
        right.set_xlabel("s since start")
        right.set_ylabel("events")
        right.legend(fontsize=8)
        right.set_title("producer vs worker")
    load = result["load_before"]["loadavg_1_5_15"]
    fig.suptitle(f"freshness, 1 worker, batch {result['batch_size']}, load {load} on "
                 f"{result['load_before']['cpus']} CPUs", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s")
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--sample", type=int, default=10, help="track every N-th event")
    parser.add_argument("--drain", type=float, default=90.0,
                        help="at most this long to wait for the worker after the last send")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--out", type=Path, default=OUT_DIR / "freshness.json")
    args = parser.parse_args()

    base = get_settings()
    overrides = {"batch_size": args.batch_size} if args.batch_size else {}
    settings = bench_settings(base, **overrides)
    events = ml_events(settings, int(args.rate * args.seconds) + 1)
    load_before = machine()
    worker = None
    try:
        asyncio.run(create_topics(settings))
        worker = start_worker(settings, "freshness")
        worker.wait_ready(timeout=60)
        started_at = time.time()
        run = asyncio.run(paced_run(settings, events, rate=args.rate, seconds=args.seconds,
                                    sample_every=args.sample, drain_s=args.drain))
    finally:
        if worker is not None:
            worker.stop()
        with suppress(Exception):
            asyncio.run(drop_namespaces([settings]))
    result = summarize(run, rate=args.rate, seconds=args.seconds, sample_every=args.sample,
                       started_at=started_at)
    result.update(batch_size=settings.batch_size, batch_within_s=settings.batch_within_s,
                  partitions=settings.topic_partitions, load_before=load_before,
                  load_after=machine())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    png = args.out.with_suffix(".png")
    plot(result, png)
    print(f"sent {result['sent']} events at {result['achieved_rate']:,.0f}/s "
          f"(target {args.rate:,.0f}/s for {args.seconds:g} s); tracked {result['tracked']}, "
          f"unresolved {result['unresolved']}")
    print(f"freshness p50 {result['p50_ms']} ms, p90 {result['p90_ms']} ms, "
          f"p99 {result['p99_ms']} ms (target p99 <= 250 ms)")
    print(f"load before {load_before['loadavg_1_5_15']}, after "
          f"{result['load_after']['loadavg_1_5_15']} on {load_before['cpus']} CPUs")
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
