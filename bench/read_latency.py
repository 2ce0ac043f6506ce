"""Read latency: a user's top-100 with explanations, read back from Redis on loopback.

Writes realistic lists first, through the worker's own writer
(`streams.runtime.worker.EventProcessor._write_recommendations`, top_n = 100): the in-process model
learns the first ``--learn`` ML-100K ratings as the replay sends them (a play, then the rating),
every user's top-100 with explanations is written under a key prefix of its own, plus the movies'
``item:{id}`` hashes (the Python API reads titles). ML-100K has 943 users; the lists of the first
users are written again under other ids up to ``--users``.

Then ``--reads`` reads of a random user each (seeded), warm-up excluded, interleaved (in a new
random order each round) so that every reader sees the same machine load:

- ``python``: `streams.client.recs.get_recommendations(user, 100)` — recs, explanations, titles,
  sentiment and summaries of the 100 items and the titles of their explaining items in one Lua
  script (one round trip), decoded into dataclasses;
- ``plain``: redis-py, ``ZREVRANGE recs:{user} 0 99 WITHSCORES`` + ``HGETALL explain:{user}`` in
  one pipeline (no MULTI; one round trip), replies as redis-py returns them;
- ``ping``: one PING on the same connection, the floor of any redis-py round trip here;
- ``plain_resp3``: ``plain`` on a second client that speaks RESP3, redis-py 8's default wire
  protocol (it converts the replies back to the RESP2 shapes in Python).

Every client comes from `streams.connections` (hiredis, RESP2: `REDIS_PROTOCOL`), as the CLI's.

Prints a table, writes ``bench/out/read_latency.json``, deletes its keys. Target: plain p50 <= 3x
the PING's p50 in the same run (a ratio, so that the machine's load cancels out).

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
from streams.contract.keys import Keys
from streams.settings import Settings, get_settings

TOP = 100
TARGET_PING_RATIO = 3.0  # plain p50 / PING p50


def learn(settings: Settings, ratings: int):  # CooccurrenceRecommender
    """The in-process model after the first ``ratings`` ML-100K ratings (as the replay sends
    them: a play with the rating's completion, then the rating); and the movies."""
    from streams.runtime.learning import reference_recommender
    from streams.tools.replay import completion_of, load_dataset

    all_ratings, _, movies = load_dataset(settings, "movielens-100k")
    model = reference_recommender(settings)
    weights = settings.feedback_weights()
    for r in all_ratings[:ratings]:
        model.learn_one(r.user_id, r.item_id, ts=r.ts,
                        weight=weights.for_play(completion=completion_of(r.rating)))
        model.learn_one(r.user_id, r.item_id, ts=r.ts, weight=weights.for_rating(r.rating))
    return model, movies


async def write_lists(settings: Settings, model, movies, users: int) -> list[str]:
    """Every user's top-N with explanations through the worker's writer; returns the user ids
    written (``users`` of them, the first ones again under ``<id>~<n>`` when there are fewer)."""
    from streams.connections import redis_async
    from streams.runtime.state import UserState
    from streams.runtime.worker import EventProcessor
    from streams.tools.replay import write_item_metadata

    client = redis_async(settings)
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
    """Interleaved reads through every reader, in a new random order each round (a read right
    after the Python API's, which keeps Redis busy longest, waits longer for a core on a loaded
    machine); milliseconds per read, warm-up dropped."""
    from streams.client.recs import get_recommendations
    from streams.connections import redis_sync

    keys = Keys(settings.key_prefix)
    client = redis_sync(settings)
    resp3 = redis_sync(settings, protocol=3)

    def python(user: str) -> tuple[int, int]:
        return len(get_recommendations(user, TOP, settings=settings, client=client)), 0

    def plain_on(redis_client):
        def plain(user: str) -> tuple[int, int]:
            with redis_client.pipeline(transaction=False) as pipe:
                pipe.zrevrange(keys.recs(user), 0, TOP - 1, withscores=True)
                pipe.hgetall(keys.explain(user))
                top, explain = pipe.execute()
            return len(top), len(explain)
        return plain

    def ping(user: str) -> tuple[int, int]:
        client.ping()
        return 0, 0

    readers = {"python": python, "plain": plain_on(client), "ping": ping,
               "plain_resp3": plain_on(resp3)}
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in readers}
    sizes = []
    try:
        for n in range(warmup + reads):
            user = rng.choice(users)
            order = rng.sample(list(readers), len(readers))
            took, got = {}, {}
            for name in order:
                t0 = time.perf_counter()
                got[name] = readers[name](user)
                took[name] = (time.perf_counter() - t0) * 1e3
            if n >= warmup:
                for name, ms in took.items():
                    times[name].append(ms)
                sizes.append((got["python"][0], *got["plain"]))
    finally:
        client.close()
        resp3.close()
    times["sizes"] = sizes  # type: ignore[assignment]
    return times


def summarise(ms: list[float]) -> dict[str, float]:
    p50, p90, p99, p999 = np.percentile(ms, [50, 90, 99, 99.9])
    return {"reads": len(ms), "p50_ms": round(float(p50), 4), "p90_ms": round(float(p90), 4),
            "p99_ms": round(float(p99), 4), "p999_ms": round(float(p999), 4),
            "mean_ms": round(float(np.mean(ms)), 4), "max_ms": round(float(np.max(ms)), 4)}


def delete_keys(settings: Settings) -> int:
    from streams.connections import redis_sync

    client = redis_sync(settings)
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
    from streams.connections import redis_sync

    settings = bench_settings(get_settings(), top_n=TOP)
    t0 = time.perf_counter()
    model, movies = learn(settings, learn_ratings)
    learned_s = time.perf_counter() - t0
    try:
        ids = asyncio.run(write_lists(settings, model, movies, users))
        written_s = time.perf_counter() - t0 - learned_s
        load_before = machine()
        times = measure(settings, ids, reads=reads, warmup=warmup, seed=seed)
        with redis_sync(settings) as r:
            redis_version = r.info("server")["redis_version"]
    finally:
        deleted = delete_keys(settings)
    sizes = times.pop("sizes")
    readers = {name: summarise(ms) for name, ms in times.items()}
    ratio = readers["plain"]["p50_ms"] / readers["ping"]["p50_ms"]
    return {
        "users": len(ids), "learned_ratings": learn_ratings, "top": TOP,
        "mean_items_read": round(float(np.mean([s[1] for s in sizes])), 1),
        "mean_explanations_read": round(float(np.mean([s[2] for s in sizes])), 1),
        "warmup": warmup, "seed": seed, "learn_s": round(learned_s, 1),
        "write_s": round(written_s, 1), "keys_deleted": deleted,
        "readers": readers, "plain_p50_over_ping_p50": round(ratio, 2),
        "python_p50_over_ping_p50": round(readers["python"]["p50_ms"]
                                          / readers["ping"]["p50_ms"], 2),
        "plain_resp3_p50_over_ping_p50": round(readers["plain_resp3"]["p50_ms"]
                                               / readers["ping"]["p50_ms"], 2),
        "target_plain_p50_over_ping_p50": TARGET_PING_RATIO,
        "plain_meets_target": ratio <= TARGET_PING_RATIO,
        "redis_version": redis_version, "redis_py_parser": parser_name(),
        "redis_url": settings.redis_url.split("@")[-1],
        "load_before": load_before, "load_after": machine(),
    }


def parser_name() -> str:
    """The reply parser redis-py uses here."""
    import redis.utils

    if redis.utils.HIREDIS_AVAILABLE:
        import hiredis

        return f"hiredis {hiredis.__version__}"
    return "pure Python (no hiredis)"


def table(result: dict[str, Any]) -> str:
    lines = [f"{'reader':8} {'reads':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
             f"{'p99.9 ms':>9} {'max ms':>8}"]
    for name, r in result["readers"].items():
        lines.append(f"{name:8} {r['reads']:>6} {r['p50_ms']:>8.3f} {r['p90_ms']:>8.3f} "
                     f"{r['p99_ms']:>8.3f} {r['p999_ms']:>9.3f} {r['max_ms']:>8.3f}")
    met = "met" if result["plain_meets_target"] else "NOT met"
    lines.append(f"plain p50 = {result['plain_p50_over_ping_p50']}x PING p50 (over RESP3 "
                 f"{result['plain_resp3_p50_over_ping_p50']}x), Python API p50 = "
                 f"{result['python_p50_over_ping_p50']}x; target plain <= "
                 f"{result['target_plain_p50_over_ping_p50']}x: {met}")
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
