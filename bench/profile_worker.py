"""Where a worker's time goes, per batch step: the worker's per-batch code
(`streams.runtime.worker.EventProcessor`, what ``tastemaker worker`` runs under Faust) driven in
this process over the first ``--events`` ML-100K replay events (as the replay sends them: plays,
ratings and reviews on their topics, one partition each) in batches of ``BATCH_SIZE``, against
the real Kafka and Redis of the local stack. Times each named step with a wall clock and prints
the share of each; ``--cprofile N`` adds cProfile's top N functions by own time.

No Kafka consumer and no Faust: this is the computation and the Redis/Kafka writes a batch does,
the part the worker's rate depends on (``bench.speed --part e2e`` measures the whole worker).

With ``--baseline REV`` it runs this harness over the code of that git revision too (a
worktree, as ``bench.speed --baseline`` makes), ``--rounds`` times each, alternating, and
prints the ratios of the medians: a before/after on this noisy machine.

    python -m bench.profile_worker --events 40000
    python -m bench.profile_worker --events 20000 --cprofile 25
    python -m bench.profile_worker --events 40000 --baseline HEAD~1 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson

from bench.speed import OUT_DIR, baseline_checkout, bench_settings, create_topics
from streams import connections
from streams.runtime.app import tune_gc
from streams.runtime.worker import EventProcessor, SourceMessage
from streams.settings import Settings, get_settings
from streams.tools.namespaces import drop_namespaces
from streams.tools.replay import load_dataset, movielens_events

# the batch steps, as EventProcessor names them (async ones are awaited inside _process)
STEPS = ("_decode", "_learn", "_send_examples", "_send_dead_letters", "_refresh_catalogue",
         "_drop_evicted", "_write_recommendations")
STATE_STEPS = ("next_offsets", "user_states", "commit", "follow")


def replay_messages(settings: Settings, limit: int) -> list[SourceMessage]:
    """The first ``limit`` replay events as the messages a worker would consume."""
    ratings, reviews, _ = load_dataset(settings, "movielens-100k")
    topics = {"play": settings.topic_plays, "rating": settings.topic_ratings,
              "review": settings.topic_reviews}
    offsets: dict[str, int] = defaultdict(int)
    out = []
    for kind, obj in movielens_events(ratings, reviews):
        if len(out) >= limit:
            break
        topic = topics[kind]
        out.append(SourceMessage(topic, 0, offsets[topic], orjson.dumps(obj), time.time(),
                                 str(obj["user_id"]).encode()))
        offsets[topic] += 1
    return out


def timed(totals: dict[str, float], name: str, fn: Any) -> Any:
    """``fn`` wrapped to add its wall time to ``totals[name]``."""
    if asyncio.iscoroutinefunction(fn):
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - t0
    else:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - t0
    return wrapper


async def run(settings: Settings, messages: list[SourceMessage], cprofile: int
              ) -> dict[str, float]:
    producer = connections.worker_producer(settings)  # as the worker's
    await producer.start()
    client = connections.redis_async(settings)
    proc = EventProcessor(settings, client, producer)
    totals: dict[str, float] = defaultdict(float)
    try:
        await proc.start()
        size = settings.batch_size
        await proc.process(messages[:size])  # the kernels compiled, the first lookups done
        tune_gc()  # as the worker, once started
        # on the classes (their instances have slots); this process holds one of each
        for name in STEPS:
            setattr(EventProcessor, name, timed(totals, name, getattr(EventProcessor, name)))
        state_class = type(proc.state)
        for name in STATE_STEPS:
            setattr(state_class, name, timed(totals, f"state.{name}",
                                             getattr(state_class, name)))
        profiler = cProfile.Profile() if cprofile else None
        cpu0, t0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for start in range(size, len(messages), size):
            await proc.process(messages[start:start + size])
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await producer.stop()
        await client.aclose()
    n = len(messages) - size
    result = {"events": n, "wall_s": wall, "events_per_s": n / wall,
              "cpu_us_per_event": cpu / n * 1e6}
    print(f"{n:,} events in batches of {size}: {wall:.2f} s wall, {n / wall:,.0f} events/s; "
          f"{cpu / n * 1e6:,.0f} us CPU per event (this process)")
    accounted = 0.0
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {name:28s} {seconds:7.2f} s  {seconds / wall:6.1%}  "
              f"{seconds / n * 1e6:7.1f} us/event")
        accounted += seconds
    print(f"  {'(the rest)':28s} {wall - accounted:7.2f} s  {(wall - accounted) / wall:6.1%}")
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(cprofile)
        stats.sort_stats("cumulative").print_stats(r"models|streams", cprofile)
        print(out.getvalue())
    return result


def one_run(events: int, root: Path | None = None) -> dict[str, float]:
    """This harness in a fresh process, over the code at ``root`` (this checkout by default):
    that revision's own copy of it, which builds its messages as that code reads them."""
    root = root or Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = OUT_DIR / f"profile_worker_{os.getpid()}.json"
    subprocess.run([sys.executable, str(root / "bench" / "profile_worker.py"), "--events",
                    str(events), "--json", str(out)], cwd=root,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def compare(events: int, baseline: str, rounds: int) -> None:
    root = baseline_checkout(baseline)
    runs: dict[str, list[dict[str, float]]] = {"this": [], baseline: []}
    for _ in range(rounds):
        runs["this"].append(one_run(events))
        runs[baseline].append(one_run(events, root))
        print(f"  this: {runs['this'][-1]['cpu_us_per_event']:.0f} us/event, "
              f"{baseline}: {runs[baseline][-1]['cpu_us_per_event']:.0f} us/event")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("events_per_s",
                                                                  "cpu_us_per_event")}
           for name, rs in runs.items()}
    print(f"medians of {rounds}: this {med['this']['events_per_s']:,.0f} events/s, "
          f"{med['this']['cpu_us_per_event']:.0f} us CPU/event; {baseline} "
          f"{med[baseline]['events_per_s']:,.0f} events/s, "
          f"{med[baseline]['cpu_us_per_event']:.0f} us; ratios "
          f"{med['this']['events_per_s'] / med[baseline]['events_per_s']:.2f}x the rate, "
          f"{med['this']['cpu_us_per_event'] / med[baseline]['cpu_us_per_event']:.2f}x the CPU "
          f"per event")
    out = OUT_DIR / "profile_worker.json"
    out.write_text(json.dumps({"events": events, "baseline": baseline, "runs": runs,
                               "medians": med}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N",
                        help="also print cProfile's top N functions by own time")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run the code of this git revision, alternating")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        compare(args.events, args.baseline, args.rounds)
        return
    settings = bench_settings(get_settings())
    messages = replay_messages(settings, args.events)
    try:
        asyncio.run(create_topics(settings))
        result = asyncio.run(run(settings, messages, args.cprofile))
        if args.json:
            args.json.write_text(json.dumps(result))
    finally:
        with suppress(Exception):
            asyncio.run(drop_namespaces([settings]))


if __name__ == "__main__":
    main()
