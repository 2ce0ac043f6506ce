"""Faults heavier than the test suite affords (`tests/integration/test_faults.py` runs the short
ones), on a private local stack (free ports, a temporary directory; never the shared one).

``outage``: a MovieLens slice with malformed messages mixed in is produced; one worker starts;
as soon as it has committed its first batch the broker is killed (SIGKILL) and kept away for
``--outage-s`` (default 60 s: longer than the producer's 40 s request timeout; malformed messages
are only in the stream's last fifth, so the worker's first dead letter is sent from records it
had fetched before the kill, while the broker is away, and times out waiting for the DLQ topic's
metadata), then started again.
Reports whether the same worker process survived, the retries it logged, processed == produced,
each valid event counted once, and dead letters missing or written twice (at-least-once).

``memory``: the 10,000 hostile messages of `tests.hostile` sent ``--rounds`` times to one worker;
its resident memory (VmRSS) and peak (VmHWM) after each round. Memory that followed the number of
rejected messages would grow round after round.

    python -m bench.faults                       # both parts; writes bench/out/faults.json
    python -m bench.faults --part outage --outage-s 90
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.speed import LOG_DIR, OUT_DIR, bench_settings, machine
from streams.contract.dlq import parse_dead_letter
from streams.contract.keys import Keys
from streams.contract.topics import ensure_topics
from streams.runtime.state import UserState
from streams.settings import Settings, get_settings, load_settings
from streams.tools.replay import load_dataset, movielens_events
from streams.tools.stack import LocalStack, free_port, run_coroutine
from streams.tools.supervisor import WorkerProcess, processed, rss_bytes
from tests.hostile import hostile_messages  # the seeded generator the fuzz test uses

Message = tuple[str, bytes | None, bytes | None]


@contextmanager
def private_stack() -> Iterator[LocalStack]:
    with tempfile.TemporaryDirectory(prefix="tastemaker-faults-") as root:
        settings = load_settings(**{
            **get_settings().model_dump(), "kafka_port": free_port(),
            "kafka_controller_port": free_port(), "redis_port": free_port(),
            "stack_dir": Path(root)})
        stack = LocalStack(settings)
        try:
            stack.up()
            yield stack
        finally:
            stack.down(wipe=True)


def _topic(settings: Settings, kind: str) -> str:
    return {"play": settings.topic_plays, "rating": settings.topic_ratings,
            "review": settings.topic_reviews}[kind]


async def _send(settings: Settings, messages: Sequence[Message]) -> list[tuple[str, int, int]]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all",
                                enable_idempotence=True, max_request_size=8 * 1024 * 1024,
                                linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(t, value=v, key=k) for t, k, v in messages]
        return [(m.topic, m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


async def _read_dlq(settings: Settings, expected: int) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(settings.topic_dlq,
                                bootstrap_servers=settings.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[dict] = []
    try:
        quiet = 0
        while len(out) < expected and quiet < 20:
            batch = await consumer.getmany(timeout_ms=500)
            quiet = 0 if batch else quiet + 1
            out += [parse_dead_letter(m.value) for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    return out


def _wait(worker: WorkerProcess, settings: Settings, total: int, budget_s: float) -> bool:
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline and worker.alive():
        with suppress(redis.RedisError):
            if processed(settings) >= total:
                return True
        time.sleep(0.25)
    return False


def bench_outage(stack: LocalStack, *, outage_s: float, ratings: int, bad: int,
                 budget_s: float) -> dict[str, Any]:
    settings = bench_settings(stack.client_settings())
    run_coroutine(ensure_topics(settings))
    all_ratings, reviews, _ = load_dataset(settings, "movielens-100k")
    events = list(movielens_events(all_ratings[:ratings], reviews, seed=7))
    good: list[Message] = [(_topic(settings, k), str(e["user_id"]).encode(), orjson.dumps(e))
                           for k, e in events]
    hostile = [m for m in hostile_messages(5) if m.value is not None and len(m.value) < 2000]
    # malformed messages only in the last fifth: the worker's first dead letter is sent from
    # records it fetched before the kill, while the broker is away (no DLQ topic metadata yet)
    clean = len(good) * 4 // 5
    step = max(1, (len(good) - clean) // bad)
    mixed: list[tuple[Message, bool]] = [(m, False) for m in good[:clean]]
    for n, message in enumerate(good[clean:]):
        mixed.append((message, False))
        if n % step == 0 and n // step < bad:
            h = hostile[n // step]
            mixed.append(((_topic(settings, h.topic), h.key, h.value), True))
    where = asyncio.run(_send(settings, [m for m, _ in mixed]))
    bad_at = {at for at, (_, is_bad) in zip(where, mixed, strict=True) if is_bad}

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(settings, LOG_DIR / f"faults-outage-{settings.app_id}.log").start()
    out: dict[str, Any] = {"events": len(events), "malformed": len(bad_at), "outage_s": outage_s}
    try:
        worker.wait_ready()
        assert worker.proc is not None
        pid = worker.proc.pid
        while processed(settings) == 0 and worker.alive():
            time.sleep(0.05)
        out["processed_at_kill"] = processed(settings)
        stack.kafka.stop(kill=True)
        killed = time.monotonic()
        while time.monotonic() - killed < outage_s and worker.alive():
            time.sleep(0.5)
        out["worker_alive_after_outage"] = worker.alive()
        stack.kafka.start()
        out["processed_all"] = _wait(worker, settings, len(mixed), budget_s)
        out["processed"] = processed(settings)
        out["same_process"] = worker.alive() and worker.proc.pid == pid
        out["exit_code"] = worker.proc.poll()
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    out["retries_logged"] = log.count("Retrying")
    out["kafka_timeouts_logged"] = log.count("KafkaTimeoutError")
    r, keys = redis.Redis.from_url(settings.redis_url), Keys(settings.key_prefix)
    seen = [e for u in {e["user_id"] for _, e in events}
            for e in UserState.from_bytes(r.get(keys.history(u))).seen]
    ids = {e["event_id"] for _, e in events}
    out["valid_events_lost"] = len(ids - set(seen))
    out["valid_events_twice"] = len(seen) - len(set(seen))
    letters = asyncio.run(_read_dlq(settings, len(bad_at)))
    sources = Counter((d["topic"], d["partition"], d["offset"]) for d in letters)
    out["dead_letters_missing"] = len(bad_at - set(sources))
    out["dead_letters_twice"] = sum(sources.values()) - len(sources)
    out["log"] = str(worker.log_path)
    return out


def bench_memory(stack: LocalStack, *, rounds: int, budget_s: float) -> dict[str, Any]:
    settings = bench_settings(stack.client_settings())
    run_coroutine(ensure_topics(settings))
    messages = [(_topic(settings, m.topic), m.key, m.value) for m in hostile_messages()]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(settings, LOG_DIR / f"faults-memory-{settings.app_id}.log").start()
    out: dict[str, Any] = {"messages_per_round": len(messages), "rounds": []}
    try:
        worker.wait_ready()
        assert worker.proc is not None
        rss, peak = rss_bytes(worker.proc.pid)
        out["idle_rss_mib"] = round(rss / 2**20, 1)
        for n in range(1, rounds + 1):
            started = time.monotonic()
            asyncio.run(_send(settings, messages))
            done = _wait(worker, settings, n * len(messages), budget_s)
            rss, peak = rss_bytes(worker.proc.pid)
            row = {"round": n, "rejected_total": processed(settings), "done": done,
                   "seconds": round(time.monotonic() - started, 1),
                   "rss_mib": round(rss / 2**20, 1), "peak_rss_mib": round(peak / 2**20, 1)}
            out["rounds"].append(row)
            print(f"  round {n}: {row}")
            if not done:
                break
    finally:
        worker.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "outage", "memory"), default="all")
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--ratings", type=int, default=3000, help="MovieLens ratings (outage)")
    parser.add_argument("--malformed", type=int, default=300, help="bad messages (outage)")
    parser.add_argument("--rounds", type=int, default=5, help="hostile rounds of 10,000")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds per wait at most")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "faults.json")
    args = parser.parse_args()

    result: dict[str, Any] = {"machine": machine()}
    with private_stack() as stack:
        if args.part in ("all", "outage"):
            print(f"outage: broker killed for {args.outage_s:g} s mid-stream ...")
            result["outage"] = bench_outage(stack, outage_s=args.outage_s, ratings=args.ratings,
                                            bad=args.malformed, budget_s=args.budget)
            print(json.dumps(result["outage"], indent=2))
        if args.part in ("all", "memory"):
            print(f"memory: {args.rounds} rounds of 10,000 hostile messages ...")
            result["memory"] = bench_memory(stack, rounds=args.rounds, budget_s=args.budget)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
