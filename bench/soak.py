"""A soak run (issue 17): one worker under steady load for ``--minutes``, killed with ``kill -9``
every ``--kill-every`` minutes and started again, Redis restarted (SIGTERM, then from its AOF) in
the middle, then an overload at ``--overload`` times its capacity for ``--overload-minutes``, the
steady load again until the lag has recovered (at most ``--recover-minutes``), and the drain.
Every second it samples the lag (events sent minus events committed), the worker's resident
memory and, from every ``--sample``-th event, freshness (send to ``recsmeta`` rewritten, as
`bench.freshness` measures it); at the end it compares every user's recommendations with the
in-process reference fed the same events, and counts events lost or counted twice. On a private
local stack (free ports, a temporary directory). Writes ``bench/out/soak.json`` and ``.png``.

The stream is the ML-100K replay (plays, ratings, reviews with their texts) repeated, each pass
with user and item ids of its own (``~k``), run with ``ROW_CAP`` 2,000: a pass's rows hold at
most 1,681 items, so no row is pruned. Pruning a full row depends on arrival order, which the
crash equalities exclude (docs/architecture.md, "State you can trust"); the default ``ROW_CAP``
would prune here.

Capacity (or ``--capacity``): one worker's rate while the producer sends on the same machine, on
topics of their own, measured first: ``--capacity-events`` sent before the worker starts give a
first estimate (the rate it drains them at), then events are sent at 1.5 times that for
``--capacity-seconds`` and the worker's rate over the last two thirds of them, with a backlog
throughout, is the capacity. (The producer, Kafka and Redis share the machine's cores with the
worker: draining a backlog with the producer idle is faster than keeping up with one.)

    python -m bench.soak                                   # 20 minutes, kills every 5
    python -m bench.soak --minutes 3 --kill-every 1 --overload-minutes 0.5   # a short check
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from redis.exceptions import RedisError

from bench.faults import private_stack
from bench.freshness import Sample, poll
from bench.speed import LOG_DIR, OUT_DIR, bench_settings, machine, percentiles
from streams.client.produce import topic_of_kind
from streams.connections import kafka_producer, redis_sync
from streams.contract.keys import Keys
from streams.contract.topics import ensure_topics
from streams.runtime.state import SEEN_IDS_CAP, UserState
from streams.settings import Settings
from streams.tools.replay import load_dataset, movielens_events
from streams.tools.stack import LocalStack, run_coroutine
from streams.tools.supervisor import WorkerProcess, is_settled, processed, rss_bytes

ROW_CAP = 2000  # above any row of one pass (1,681 items): no pruning, no arrival-order effect
Event = tuple[str, dict[str, Any]]


def passes_of(base: list[Event]) -> Iterator[Event]:
    """The replay repeated without end, pass ``k`` with ids of its own (``~k``)."""
    k = 0
    while True:
        for kind, event in base:
            yield kind, {**event, "user_id": f"{event['user_id']}~{k}",
                         "item_id": f"{event['item_id']}~{k}",
                         "event_id": f"{event['event_id']}~{k}"}
        k += 1


async def send_event(producer: AIOKafkaProducer, settings: Settings, kind: str,
                     event: dict[str, Any]) -> None:
    """One event to its topic, keyed by its user, as any client would send it."""
    await producer.send(topic_of_kind(settings, kind), orjson.dumps(event),  # type: ignore[arg-type]
                        key=event["user_id"].encode())


def safely(fn, *args, default=None):  # Redis may be restarting
    try:
        return fn(*args)
    except (RedisError, OSError):
        return default


def worker_rss(worker: WorkerProcess) -> int | None:
    pid = worker.pid
    if pid is None:
        return None
    with suppress(OSError, KeyError):
        return rss_bytes(pid)[0]
    return None


async def send_all(settings: Settings, events: Iterator[Event], n: int) -> None:
    async with kafka_producer(settings, acks="all", enable_idempotence=True,
                              linger_ms=5) as producer:
        for _ in range(n):
            await send_event(producer, settings, *next(events))
        await producer.flush()


def measure_capacity(stack: LocalStack, base: list[Event], n: int, seconds: float
                     ) -> dict[str, float]:
    """One worker's events/s: draining ``n`` events already waiting in Kafka (a first
    estimate), then keeping up with a producer sending 1.5 times that for ``seconds`` (the
    capacity: its rate over their last two thirds), on topics of their own."""
    settings = bench_settings(stack.client_settings(), row_cap=ROW_CAP)
    run_coroutine(ensure_topics(settings))
    events = passes_of(base)
    asyncio.run(send_all(settings, events, n))
    worker = WorkerProcess(settings, LOG_DIR / f"soak-capacity-{settings.app_id}.log").start()

    def wait_for(total: int) -> None:
        while processed(settings) < total:
            if not worker.alive():
                raise RuntimeError(f"the capacity run's worker died:\n{worker.tail()}")
            time.sleep(0.1)

    async def paced(rate: float) -> float:
        """Send at ``rate`` for ``seconds``; the worker's rate over the last two thirds."""
        async with kafka_producer(settings, acks="all", enable_idempotence=True,
                                  linger_ms=5) as producer:
            started, sent, marks = time.monotonic(), 0, []
            while (elapsed := time.monotonic() - started) < seconds:
                while sent < int(elapsed * rate) + 1:
                    await send_event(producer, settings, *next(events))
                    sent += 1
                if not marks and elapsed >= seconds / 3:
                    marks.append((time.monotonic(), await asyncio.to_thread(processed,
                                                                            settings)))
                await asyncio.sleep(0.002)
            end = (time.monotonic(), await asyncio.to_thread(processed, settings))
            await producer.flush()
        return (end[1] - marks[0][1]) / (end[0] - marks[0][0])

    try:
        worker.wait_ready(timeout=120)
        wait_for(1)
        start, first = time.monotonic(), processed(settings)
        wait_for(n)
        drain = (processed(settings) - first) / (time.monotonic() - start)
        return {"drain_rate": drain, "capacity": asyncio.run(paced(1.5 * drain))}
    finally:
        worker.stop()


class Soak:
    """The paced producer, the worker it kills and restarts, and the samples."""

    def __init__(self, stack: LocalStack, settings: Settings, base: list[Event], *,
                 phases: list[tuple[str, float, float]], kills: list[float], redis_at: float,
                 sample_every: int, recover_to: float) -> None:
        self.stack, self.settings, self.base = stack, settings, base
        self.phases, self.kills, self.redis_at = phases, kills, redis_at
        self.sample_every, self.recover_to = sample_every, recover_to
        self.sent = 0
        self.worker = self._start_worker(0)
        self.events: list[dict[str, Any]] = []  # marks: kills, Redis restart, phases
        self.timeline: list[dict[str, Any]] = []
        self.pending: dict[str, list[Sample]] = {}
        self.done: list[Sample] = []
        self.next_offset: dict[str, int] = {}
        self.started = 0.0

    def _start_worker(self, n: int) -> WorkerProcess:
        log = LOG_DIR / f"soak-{self.settings.app_id}-{n}.log"
        return WorkerProcess(self.settings, log).start()

    def place(self, kind: str, user_id: str) -> tuple[str, int]:
        """Where the event lands: fresh topics, this producer their only writer."""
        topic = topic_of_kind(self.settings, kind)  # type: ignore[arg-type]
        partition = (murmur2(user_id.encode()) & 0x7FFFFFFF) % self.settings.topic_partitions
        name = f"{topic}:{partition}"
        offset = self.next_offset.get(name, 0)
        self.next_offset[name] = offset + 1
        return name, offset

    def now(self) -> float:
        return time.monotonic() - self.started

    async def run(self) -> None:
        await asyncio.to_thread(self.worker.wait_ready, 120)
        stop = asyncio.Event()
        poller = asyncio.create_task(poll(self.settings, self.pending, self.done, stop))
        self.started = time.monotonic()
        sampler = asyncio.create_task(self._sample(stop))
        chaos = asyncio.create_task(self._chaos())
        try:
            await self._produce()
            self.events.append({"t": round(self.now(), 1), "what": "last event sent"})
            await self._drain()
        finally:
            stop.set()
            chaos.cancel()
            with suppress(asyncio.CancelledError):
                await chaos
            await sampler
            await poller
            self.worker.stop()

    async def _produce(self) -> None:
        events = passes_of(self.base)
        async with kafka_producer(self.settings, acks="all", enable_idempotence=True,
                                  linger_ms=5) as producer:
            phase_start = 0.0
            for name, seconds, rate in self.phases:
                self.events.append({"t": round(self.now(), 1), "what": f"phase {name}",
                                    "rate": round(rate, 1)})
                phase_sent = 0
                while (elapsed := self.now() - phase_start) < seconds:
                    if name == "recover" and self.timeline and elapsed > 10 and (
                            self.timeline[-1]["lag"] is not None
                            and self.timeline[-1]["lag"] <= self.recover_to):
                        self.events.append({"t": round(self.now(), 1),
                                            "what": "lag recovered"})
                        break  # the lag is back where the steady load keeps it
                    due = int(elapsed * rate) + 1
                    while phase_sent < due:
                        kind, event = next(events)
                        await send_event(producer, self.settings, kind, event)
                        name_offset = self.place(kind, event["user_id"])
                        if self.sent % self.sample_every == 0:
                            self.pending.setdefault(event["user_id"], []).append(
                                Sample(event["user_id"], *name_offset, time.time()))
                        self.sent += 1
                        phase_sent += 1
                    await asyncio.sleep(0.002)
                phase_start = self.now()
            await producer.flush()

    async def _chaos(self) -> None:
        """kill -9 the worker at the kill times (and start another at once); restart Redis."""
        plan = sorted([(t, "kill") for t in self.kills] + [(self.redis_at, "redis")])
        for at, what in plan:
            await asyncio.sleep(max(0.0, at - self.now()))
            if what == "kill":
                self.worker.kill9()
                self.events.append({"t": round(self.now(), 1), "what": "worker kill -9"})
                self.worker = self._start_worker(len(self.events))
            else:
                self.events.append({"t": round(self.now(), 1), "what": "redis restart"})
                await asyncio.to_thread(self.stack.redis.restart)
                self.events.append({"t": round(self.now(), 1), "what": "redis back"})

    async def _sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            done = await asyncio.to_thread(safely, processed, self.settings)
            recent = time.time() - 10  # events whose recommendations were rewritten since
            fresh = [s.fresh_s * 1e3 for s in self.done[-5000:]
                     if s.fresh_s is not None and s.sent + s.fresh_s >= recent]
            self.timeline.append({
                "t": round(self.now(), 1), "sent": self.sent, "processed": done,
                "lag": None if done is None else self.sent - done,
                "rss": worker_rss(self.worker),
                "fresh_p50_ms": round(percentiles(fresh, 50)[0], 1) if fresh else None,
                "fresh_p99_ms": round(percentiles(fresh, 99)[0], 1) if fresh else None})
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    async def _drain(self, budget_s: float = 900.0) -> None:
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            done = await asyncio.to_thread(safely, processed, self.settings, default=0)
            settled = await asyncio.to_thread(safely, is_settled, self.settings, default=False)
            if done >= self.sent and settled and not self.pending:
                self.events.append({"t": round(self.now(), 1), "what": "drained and settled"})
                return
            await asyncio.sleep(1.0)
        self.events.append({"t": round(self.now(), 1), "what": "drain budget spent"})


def compare(settings: Settings, base: list[Event], sent: int) -> dict[str, Any]:
    """The final state against the in-process reference of the same events: every user's
    list, and each event once in the histories (their recent ids, at most 1,000 a user)."""
    from tests.integration.harness import assert_equal_to_reference, reference

    events = list(itertools.islice(passes_of(base), sent))
    users = sorted({e["user_id"] for _, e in events})
    out: dict[str, Any] = {"users": len(users)}
    try:
        out["entries_compared"] = assert_equal_to_reference(settings, reference(settings, events),
                                                            users)
        out["equal_to_reference"] = True
    except AssertionError as exc:
        out["equal_to_reference"] = False
        out["first_difference"] = str(exc)[:500]
    keys = Keys(settings.key_prefix)
    with redis_sync(settings) as r:
        seen = [i for u in users for i in UserState.from_bytes(r.get(keys.history(u))).seen]
    out["event_ids_held"] = len(seen)
    out["events_counted_twice"] = len(seen) - len(set(seen))
    # lost: of the users whose every event id the history still holds (at most 1,000 a user)
    per_user: dict[str, set[str]] = {}
    for _, e in events:
        per_user.setdefault(e["user_id"], set()).add(e["event_id"])
    whole = {u for u, ids in per_user.items() if len(ids) <= SEEN_IDS_CAP}
    want = {i for u in whole for i in per_user[u]}
    out["events_checked_for_loss"] = len(want)
    out["events_lost"] = len(want - set(seen))
    return out


def summary(soak: Soak, phases: list[tuple[str, float, float]]) -> dict[str, Any]:
    timeline, marks = soak.timeline, soak.events
    fresh = [s.fresh_s * 1e3 for s in soak.done if s.fresh_s is not None]
    unresolved = sum(len(v) for v in soak.pending.values())
    ranked = fresh + [math.inf] * unresolved
    p50, p99 = percentiles(ranked, 50, 99) if ranked else (math.nan, math.nan)
    over = next((m["t"] for m in marks if m["what"] == "phase recover"), None)
    peak = max((p["lag"] for p in timeline if p["lag"] is not None and over is not None
                and p["t"] <= over + 1), default=None)
    recovered = next((m["t"] for m in marks if m["what"] == "lag recovered"), None)
    rss = [p["rss"] for p in timeline if p["rss"]]
    return {
        "sent": soak.sent, "phases": [{"name": n, "seconds": s, "rate": round(r, 1)}
                                      for n, s, r in phases],
        "marks": marks, "kills": sum(m["what"] == "worker kill -9" for m in marks),
        "freshness_p50_ms": round(p50, 1), "freshness_p99_ms": (
            round(p99, 1) if math.isfinite(p99) else "unresolved"),
        "freshness_tracked": len(ranked), "freshness_unresolved": unresolved,
        "lag_peak_after_overload": peak,
        "overload_ended_at_s": over, "lag_recovered_at_s": recovered,
        "lag_recovered_s_after_overload": (round(recovered - over, 1)
                                           if recovered is not None and over else None),
        "rss_max_bytes": max(rss, default=None), "rss_last_bytes": rss[-1] if rss else None,
        "timeline": timeline,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = result["timeline"]
    t = [p["t"] / 60 for p in timeline]
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    axes[0].plot(t, [p["lag"] if p["lag"] is not None else math.nan for p in timeline])
    axes[0].set_ylabel("lag (events)")
    axes[1].plot(t, [p["rss"] / 2**20 if p["rss"] else math.nan for p in timeline])
    axes[1].set_ylabel("worker RSS (MiB)")
    for key, colour in (("fresh_p50_ms", "green"), ("fresh_p99_ms", "red")):
        axes[2].plot(t, [p[key] if p[key] is not None else math.nan for p in timeline],
                     color=colour, label=f"{key.split('_')[1]} (lists rewritten in the last 10 s)")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("freshness (ms)")
    axes[2].set_xlabel("minutes")
    axes[2].legend(fontsize=8)
    for mark in result["marks"]:
        colour = {"worker kill -9": "black", "redis restart": "purple"}.get(mark["what"])
        if colour:
            for ax in axes:
                ax.axvline(mark["t"] / 60, color=colour, linestyle=":", linewidth=1)
    starts = {m["what"]: m["t"] / 60 for m in result["marks"]}
    if "phase overload" in starts and "phase recover" in starts:
        for ax in axes:
            ax.axvspan(starts["phase overload"], starts["phase recover"], color="orange",
                       alpha=0.15)
    reference = "equal to the reference" if result["compare"].get("equal_to_reference") else (
        "NOT equal to the reference")
    fig.suptitle(f"soak: {result['sent']:,} events, capacity {result['capacity']:.0f}/s, "
                 f"{result['kills']} kill -9 (black), Redis restart (purple), overload "
                 f"(orange); {reference}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="the steady phase")
    parser.add_argument("--kill-every", type=float, default=5.0, help="minutes between kills")
    parser.add_argument("--load", type=float, default=0.7, help="share of capacity, steady")
    parser.add_argument("--overload", type=float, default=2.0, help="times capacity")
    parser.add_argument("--overload-minutes", type=float, default=2.0)
    parser.add_argument("--recover-minutes", type=float, default=10.0,
                        help="at most this long at the steady load after the overload")
    parser.add_argument("--capacity", type=float, default=None, help="events/s (else measured)")
    parser.add_argument("--capacity-events", type=int, default=30_000)
    parser.add_argument("--capacity-seconds", type=float, default=60.0)
    parser.add_argument("--sample", type=int, default=50, help="track every N-th event")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "soak.json")
    args = parser.parse_args()

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    load_before = machine()
    with private_stack() as stack:
        ratings, reviews, _ = load_dataset(stack.settings, "movielens-100k")
        base = list(movielens_events(ratings, reviews, seed=7))
        measured = ({"capacity": args.capacity} if args.capacity else
                    measure_capacity(stack, base, args.capacity_events, args.capacity_seconds))
        capacity = measured["capacity"]
        print(f"capacity: {capacity:.0f} events/s ({measured})")
        settings = bench_settings(stack.client_settings(), row_cap=ROW_CAP)
        run_coroutine(ensure_topics(settings))
        steady_s = args.minutes * 60
        phases = [("steady", steady_s, args.load * capacity),
                  ("overload", args.overload_minutes * 60, args.overload * capacity),
                  ("recover", args.recover_minutes * 60, args.load * capacity)]
        kills = [k * args.kill_every * 60 for k in range(1, int(args.minutes / args.kill_every)
                                                         + 1) if k * args.kill_every < args.minutes]
        # Redis restarts halfway between the kills around the middle of the steady phase
        redis_at = (math.floor(args.minutes / 2 / args.kill_every) + 0.5) * args.kill_every * 60
        # recovered: a lag of at most 5 s of the steady load's events
        soak = Soak(stack, settings, base, phases=phases, kills=kills, redis_at=redis_at,
                    sample_every=args.sample, recover_to=args.load * capacity * 5)
        asyncio.run(soak.run())
        result = {**measured, "load": args.load, "minutes": args.minutes,
                  "kill_every_minutes": args.kill_every, "row_cap": ROW_CAP,
                  **summary(soak, phases)}
        result["compare"] = compare(settings, base, soak.sent)
    result.update(load_before=load_before, load_after=machine())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out.with_suffix(".png"))
    c = result["compare"]
    print(f"{result['sent']:,} events; {result['kills']} kill -9; freshness p50 "
          f"{result['freshness_p50_ms']} ms, p99 {result['freshness_p99_ms']} ms; RSS max "
          f"{(result['rss_max_bytes'] or 0) / 2**20:.0f} MiB; lag peak after overload "
          f"{result['lag_peak_after_overload']}, recovered "
          f"{result['lag_recovered_s_after_overload']} s after it; equal to the reference: "
          f"{c['equal_to_reference']} ({c['users']} users); counted twice "
          f"{c['events_counted_twice']}; wrote {args.out} and .png")


if __name__ == "__main__":
    main()
