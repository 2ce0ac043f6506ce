"""Read latency: a user's top-100 with explanations, read back from Redis on loopback.

Writes realistic lists first, through the worker's own writer
(`streams.worker.EventProcessor._write_recommendations`, top_n = 100): the in-process model learns
the first ``--learn`` ML-100K ratings as the replay sends them (a play, then the rating), every
user's top-100 with explanations is written under a key prefix of its own, plus the movies'
``item:{id}`` hashes (the Python API reads titles). ML-100K has 943 users; the lists of the first
users are written again under other ids up to ``--users``.

Then ``--reads`` reads of a random user each (seeded), warm-up excluded, interleaved so that both
readers see the same machine load:

- ``python``: `streams.recs.get_recommendations(user, 100)` — recs + explanations in one MULTI,
  then titles and sentiment of the 100 items and of their explaining items in one pipeline (two
  round trips), decoded into dataclasses;
- ``plain``: redis-py, ``ZREVRANGE recs:{user} 0 99 WITHSCORES`` + ``HGETALL explain:{user}`` in
  one pipeline (no MULTI; one round trip), replies as redis-py returns them;
- ``ping``: one PING on the same connection, the floor of any redis-py round trip here.

Prints a table, writes ``bench/out/read_latency.json``, deletes its keys. Target: plain p99 <= 0.5
ms.

    python -m bench.read_latency
    python -m bench.read_latency --learn 20000 --reads 2000   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.speed import OUT_DIR, bench_settings, machine
from streams.keys import Keys
from streams.settings import Settings, get_settings

TOP = 100
TARGET_P99_MS = 0.5


def learn(settings: Settings, ratings: int):  # noqa: ANN201 - CooccurrenceRecommender
    """The in-process model after the first ``ratings`` ML-100K ratings (as the replay sends
    them: a play with the rating's completion, then the rating); and the movies."""
    from streams.replay import completion_of, load_dataset
    from streams.worker import reference_recommender

    all_ratings, _, movies = load_dataset(settings, "movielens-100k")
    model = reference_recommender(settings)
    weights = settings.feedback_weights()
    for r in all_ratings[:ratings]:
        model.learn_one(r.user_id, r.item_id, ts=r.ts,
                        weight=weights.for_play(completion=completion_of(r.rating)))
        model.learn_one(r.user_id, r.item_id, ts=r.ts, weight=weights.for_rating(r.rating))
    return model, movies


async def write_lists(settings: Settings, model, movies, users: int) -> list[str]:  # noqa: ANN001
    """Every user's top-N with explanations through the worker's writer; returns the user ids
    written (``users`` of them, the first ones again under ``<id>~<n>`` when there are fewer)."""
    import redis.asyncio as aioredis

    from streams.replay import write_item_metadata
    from streams.state import UserState
    from streams.worker import EventProcessor

    client = aioredis.from_url(settings.redis_url)
    try:
        writer = EventProcessor(settings, client, producer=None)  # type: ignore[arg-type]
        writer.state.items = model.items  # the learned statistics, as a worker holds them
        real = sorted(model.histories, key=lambda u: (len(u), u))
        ids = [(u, u) for u in real]
        ids += [(f"{real[n % len(real)]}~{n}", real[n % len(real)])
                for n in range(max(0, users - len(real)))]
        ids = ids[:users]
        for start in range(0, len(ids), 100):
            chunk = ids[start:start + 100]
            await writer._write_recommendations({
                user: UserState.of(model.histories[source]) for user, source in chunk})
        await write_item_metadata(settings, movies)
    finally:
        await client.aclose()
    return [user for user, _ in ids]


def measure(settings: Settings, users: list[str], *, reads: int, warmup: int,
            seed: int) -> dict[str, list[float]]:
    """Interleaved reads through both readers; milliseconds per read, warm-up dropped."""
    import redis

    from streams.recs import get_recommendations

    keys = Keys(settings.key_prefix)
    client = redis.Redis.from_url(settings.redis_url)
    rng = random.Random(seed)
    times: dict[str, list[float]] = {"python": [], "plain": [], "ping": []}
    sizes = []
    try:
        for n in range(warmup + reads):
            user = rng.choice(users)
            t0 = time.perf_counter()
            recs = get_recommendations(user, TOP, settings=settings, client=client)
            t1 = time.perf_counter()
            with client.pipeline(transaction=False) as pipe:
                pipe.zrevrange(keys.recs(user), 0, TOP - 1, withscores=True)
                pipe.hgetall(keys.explain(user))
                top, explain = pipe.execute()
            t2 = time.perf_counter()
            client.ping()
            t3 = time.perf_counter()
            if n >= warmup:
                times["python"].append((t1 - t0) * 1e3)
                times["plain"].append((t2 - t1) * 1e3)
                times["ping"].append((t3 - t2) * 1e3)
                sizes.append((len(recs), len(top), len(explain)))
    finally:
        client.close()
    times["sizes"] = sizes  # type: ignore[assignment]
    return times


def summarise(ms: list[float]) -> dict[str, float]:
    p50, p90, p99, p999 = np.percentile(ms, [50, 90, 99, 99.9])
    return {"reads": len(ms), "p50_ms": round(float(p50), 4), "p90_ms": round(float(p90), 4),
            "p99_ms": round(float(p99), 4), "p999_ms": round(float(p999), 4),
            "mean_ms": round(float(np.mean(ms)), 4), "max_ms": round(float(np.max(ms)), 4)}


def delete_keys(settings: Settings) -> int:
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    deleted = 0
    try:
        batch = []
        for key in client.scan_iter(match=f"{settings.key_prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.delete(*batch)
                batch.clear()
        if batch:
            deleted += client.delete(*batch)
    finally:
        client.close()
    return deleted


def run(*, learn_ratings: int, users: int, reads: int, warmup: int, seed: int
        ) -> dict[str, Any]:
    import redis

    settings = bench_settings(get_settings(), top_n=TOP)
    t0 = time.perf_counter()
    model, movies = learn(settings, learn_ratings)
    learned_s = time.perf_counter() - t0
    try:
        ids = asyncio.run(write_lists(settings, model, movies, users))
        written_s = time.perf_counter() - t0 - learned_s
        load_before = machine()
        times = measure(settings, ids, reads=reads, warmup=warmup, seed=seed)
        with redis.Redis.from_url(settings.redis_url) as r:
            redis_version = r.info("server")["redis_version"]
    finally:
        deleted = delete_keys(settings)
    sizes = times.pop("sizes")
    readers = {name: summarise(ms) for name, ms in times.items()}
    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "pure Python (no hiredis)"
    return {
        "users": len(ids), "learned_ratings": learn_ratings, "top": TOP,
        "mean_items_read": round(float(np.mean([s[1] for s in sizes])), 1),
        "mean_explanations_read": round(float(np.mean([s[2] for s in sizes])), 1),
        "warmup": warmup, "seed": seed, "learn_s": round(learned_s, 1),
        "write_s": round(written_s, 1), "keys_deleted": deleted,
        "readers": readers, "target_plain_p99_ms": TARGET_P99_MS,
        "plain_p99_meets_target": readers["plain"]["p99_ms"] <= TARGET_P99_MS,
        "redis_version": redis_version, "redis_py_parser": parser,
        "redis_url": settings.redis_url.split("@")[-1],
        "load_before": load_before, "load_after": machine(),
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{'reader':8} {'reads':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
             f"{'p99.9 ms':>9} {'max ms':>8}"]
    for name, r in result["readers"].items():
        lines.append(f"{name:8} {r['reads']:>6} {r['p50_ms']:>8.3f} {r['p90_ms']:>8.3f} "
                     f"{r['p99_ms']:>8.3f} {r['p999_ms']:>9.3f} {r['max_ms']:>8.3f}")
    met = "met" if result["plain_p99_meets_target"] else "NOT met"
    lines.append(f"target plain p99 <= {result['target_plain_p99_ms']} ms: {met}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learn", type=int, default=100_000,
                        help="ML-100K ratings the model learns before the lists are written")
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--reads", type=int, default=10_000, help="reads per reader")
    parser.add_argument("--warmup", type=int, default=1_000, help="reads per reader not counted")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT_DIR / "read_latency.json")
    args = parser.parse_args(argv)
    result = run(learn_ratings=args.learn, users=args.users, reads=args.reads,
                 warmup=args.warmup, seed=args.seed)
    print(f"{result['users']} users, top-{TOP} with explanations "
          f"({result['mean_items_read']} items, {result['mean_explanations_read']} explanations "
          f"per read); redis {result['redis_version']}, parser {result['redis_py_parser']}; "
          f"load {result['load_before']['loadavg_1_5_15']}")
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
