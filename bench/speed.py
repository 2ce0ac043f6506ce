"""Speed: the model core in one process, and the stream end to end against a running stack.

``core``: the full ML-100K replay (`streams.tools.replay.movielens_events`, every kind) turned into
feedback weights as the worker does (`streams.runtime.learning.event_feedback`), learned by the
vectorised core (``learn_many`` per ``--chunk`` events) and by the scalar oracle
(`models.cooccurrence_oracle`, ``learn_one``) in the same run: the core before the oracle and
again after it, its time the mean of the two (the shared machine's speed drifts over the
oracle's minute). The oracle lists every user and is dropped before the core is scored (its
Python objects would slow every garbage collection in the process): every user in one
``recommend_many`` call (top-N, explanations, similar users), right after learning and again
with the neighbour lists cached, and one user per call (p50/p99); every user's list is checked
equal to the oracle's. A cProfile pass names the top functions.

``e2e``: the full replay is produced once to fresh topics; then (a) a raw aiokafka consumer
reads them from the beginning to the end (plain ``getmany`` loop, no processing) and (b) one real
worker process (``tastemaker worker``) processes all of it, once per batch size, each with its own
key prefix and consumer group. The worker's rate is taken from its first committed batch to the
last (``processed() == total``); times from the process start and from "Worker ready" are kept
too, and the worker's CPU seconds (the machine is shared: CPU per event is the steadier figure).
A budget bounds each worker run; one cut short reports its rate over the prefix it processed.
With ``--baseline REV`` the worker of that revision (a git worktree under bench/out, its kernels
compiled first) processes the same topics too, and the rate and CPU-per-event ratios are
reported: the previous implementation measured in the same run.

Needs a running stack for ``e2e`` (``tastemaker up``); topics and keys it makes are deleted at the
end. Writes ``bench/out/speed.json``.

    python -m bench.speed                        # core + e2e (full replay, the batch setting)
    python -m bench.speed --part core
    python -m bench.speed --part e2e --limit 50000 --batch-sizes 500 2000
    python -m bench.speed --part e2e --baseline f0c576b --budget 300
    python -m bench.speed --part scaling --limit 30000 --configs 6x1 6x2 6x3 1x1 3x1

``scaling``: throughput against partitions and workers. Per ``PARTITIONSxWORKERS`` config, fresh
topics of that many partitions, that many worker processes started and ready, then the first
``--limit`` replay events produced; the rate from the first committed batch to the last; CPU per
event over the workers' whole lives and from the first event sent (their start left out).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import gc
import io
import json
import os
import platform
import pstats
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import cooccurrence_oracle as oracle
from streams.contract.events import Event, parse_event
from streams.runtime.learning import event_feedback, reference_recommender
from streams.settings import Settings, get_settings, load_settings
from streams.tools.namespaces import drop_namespaces, namespaced
from streams.tools.replay import load_dataset, movielens_events
from streams.tools.supervisor import WorkerProcess, processed

OUT_DIR = Path(__file__).parent / "out"
LOG_DIR = OUT_DIR / "logs"


# --- shared by the stream benchmarks (bench.freshness, bench.state_size) ------------------------
def machine() -> dict[str, Any]:
    """Load average and CPU count now: the machine is shared, so every figure carries them;
    and the code measured (commit, and the files of models/ and streams/ changed since)."""
    one, five, fifteen = os.getloadavg()
    return {"loadavg_1_5_15": [round(one, 2), round(five, 2), round(fifteen, 2)],
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "at": time.strftime("%Y-%m-%d %H:%M:%S"), **revision()}


def revision() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "models", "streams"],
                               cwd=root, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"commit": commit, "changed": [line[3:] for line in dirty.splitlines()]}


def ml_events(settings: Settings, limit: int | None = None) -> list[Event]:
    """The ML-100K replay events, in the order `streams.tools.replay.replay` sends them."""
    ratings, reviews, _ = load_dataset(settings, "movielens-100k")
    out = []
    for kind, obj in movielens_events(ratings, reviews):
        if limit is not None and len(out) >= limit:
            break
        out.append(parse_event(kind, obj))
    return out


def bench_settings(base: Settings, tag: str | None = None, **overrides: object) -> Settings:
    """``base`` with topics, key prefix and consumer group of its own
    (`streams.tools.namespaces.namespaced`), so a benchmark neither sees nor disturbs anyone
    else's."""
    return namespaced(base, "bench", tag, **overrides)


def another_worker(settings: Settings, suffix: str, **overrides: object) -> Settings:
    """Same topics, a key prefix and consumer group of its own: a second independent run
    over the events already produced."""
    return load_settings(**{**settings.model_dump(),
                            "key_prefix": f"{settings.key_prefix.rstrip(':')}-{suffix}:",
                            "app_id": f"{settings.app_id}-{suffix}", **overrides})


async def create_topics(settings: Settings) -> None:
    from streams.contract.topics import ensure_topics

    await ensure_topics(settings)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc; no psutil here)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")



@dataclass
class WorkerRun:
    """Timestamps (perf_counter) of one worker process processing ``total`` messages."""

    batch_size: int
    total: int
    processed: int = 0
    spawned: float = 0.0
    ready: float = 0.0
    first_commit: float = 0.0
    first_commit_count: int = 0
    done: float = 0.0
    cpu_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        steady = self.done - self.first_commit
        return {
            "batch_size": self.batch_size, "events": self.total, "processed": self.processed,
            "complete": self.processed >= self.total,
            "spawn_to_done_s": round(self.done - self.spawned, 2),
            "ready_to_done_s": round(self.done - self.ready, 2),
            "spawn_to_ready_s": round(self.ready - self.spawned, 2),
            "first_commit_to_done_s": round(steady, 2),
            "events_per_s": round((self.processed - self.first_commit_count) / steady, 1),
            "events_per_s_from_ready": round(self.processed / (self.done - self.ready), 1),
            "worker_cpu_s": round(self.cpu_s, 2),
            "worker_cpu_us_per_event": round(self.cpu_s / self.processed * 1e6, 1),
            "worker_cpu_share": round(self.cpu_s / (self.done - self.spawned), 2),
        }


def start_worker(settings: Settings, name: str, root: Path | None = None) -> WorkerProcess:
    """One ``tastemaker worker`` process with these settings, logging to bench/out/logs (the
    code of the checkout at ``root``: this one by default)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{name}.log"
    log.unlink(missing_ok=True)
    return WorkerProcess(settings, log, **({"root": root} if root else {})).start()


def run_worker_until(settings: Settings, total: int, *, name: str, budget_s: float,
                     stop: bool = True, root: Path | None = None) -> tuple[WorkerRun, Any]:
    """Start a worker and time it to ``processed() == total``, or for ``budget_s`` at most
    (then the run is marked incomplete and its rate is over what it did). Returns the run and
    the worker process (stopped unless ``stop=False``)."""
    run = WorkerRun(settings.batch_size, total)
    run.spawned = time.perf_counter()
    worker = start_worker(settings, name, root)
    try:
        worker.wait_ready(timeout=60)
        run.ready = time.perf_counter()
        deadline = run.spawned + budget_s
        while True:
            n = processed(settings)
            now = time.perf_counter()
            if n and not run.first_commit:
                run.first_commit, run.first_commit_count = now, n
            if n >= total or (now > deadline and n):
                run.done, run.processed = now, n
                break
            if not worker.alive():
                raise RuntimeError(f"worker died:\n{worker.tail()}")
            if now > deadline + 60:
                raise RuntimeError(f"nothing processed in {budget_s + 60:g} s:\n{worker.tail()}")
            time.sleep(0.05)
        run.cpu_s = cpu_seconds(worker.proc.pid)
    except BaseException:
        worker.stop()
        raise
    if stop:
        worker.stop()
    return run, worker


# --- core -----------------------------------------------------------------------------------------
def percentiles(values: Sequence[float], *ps: float) -> list[float]:
    ordered = sorted(values)
    return [ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]
            for p in ps]


def oracle_recommender(settings: Settings) -> oracle.CooccurrenceRecommender:
    """The scalar oracle configured as the workers are."""
    model = reference_recommender(settings)
    return oracle.CooccurrenceRecommender(**{
        f.name: getattr(model, f.name) for f in dataclasses.fields(oracle.CooccurrenceRecommender)
        if f.init and f.name != "histories"})


def bench_core(settings: Settings, *, limit: int | None, oracle_limit: int | None,
               chunk: int, profile_top: int) -> dict[str, Any]:
    """The vectorised core and the scalar oracle on the same events, in this process."""
    events = ml_events(settings, limit)
    weights = settings.feedback_weights()
    feedback = [(e.user_id, e.item_id, event_feedback(e, weights), e.ts) for e in events]
    del events
    load_before = machine()
    reference_recommender(settings).learn_many(feedback[:10])  # compiled (or loaded) kernels

    def core_learns() -> tuple[Any, float, float]:
        core = reference_recommender(settings)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for start in range(0, len(feedback), chunk):
            core.learn_many(feedback[start:start + chunk])
        return core, time.perf_counter() - wall0, time.process_time() - cpu0

    # the core learns before the oracle and again after it (the oracle dropped by then), and
    # its time is the mean of the two: the shared machine's speed drifts over the minute the
    # oracle takes, and the mean cancels a steady drift (taking turns chunk by chunk would
    # instead make each of the core's turns start with caches the oracle had filled)
    model, wall, cpu = core_learns()
    slow = oracle_recommender(settings)
    slow_events = feedback[:oracle_limit]
    owall0, ocpu0 = time.perf_counter(), time.process_time()
    for user, item, weight, ts in slow_events:
        slow.learn_one(user, item, weight=weight, ts=ts)
    owall, ocpu = time.perf_counter() - owall0, time.process_time() - ocpu0

    # the oracle's lists and latency, then the oracle is dropped before the core is scored:
    # its millions of Python objects would make every garbage collection in this process
    # slower, as no worker's heap would
    users = sorted(model.histories, key=lambda u: (len(u), u))
    oracle_single, want = [], {}
    if oracle_limit is None:  # the same statistics: the same lists, and the oracle's latency
        for user in users:
            t0 = time.perf_counter()
            want[user] = slow.recommend(user, settings.top_n, explain=True)
            oracle_single.append((time.perf_counter() - t0) * 1e3)
    del slow
    gc.collect()
    _, wall_after, cpu_after = core_learns()
    learn_walls = [wall, wall_after]
    wall, cpu = (wall + wall_after) / 2, (cpu + cpu_after) / 2

    batched = {}
    for phase in ("after_learning", "cached"):
        t0, c0 = time.perf_counter(), time.process_time()
        lists = model.recommend_many(users, settings.top_n, explain=True)
        batched[phase] = {"ms_per_user": round((time.perf_counter() - t0) * 1e3 / len(users), 4),
                          "cpu_ms_per_user": round((time.process_time() - c0) * 1e3
                                                   / len(users), 4)}
    single = []
    for user in users:
        t0 = time.perf_counter()
        model.recommend(user, settings.top_n, explain=True)
        single.append((time.perf_counter() - t0) * 1e3)
    for user, expected in want.items():
        if [(r.item_id, r.because, r.source) for r in lists[user]] != [
                (r.item_id, r.because, r.source) for r in expected]:
            raise AssertionError(f"the vectorised core differs from the oracle for {user}")
    del lists, want
    gc.collect()

    profiled = reference_recommender(settings)
    profiler = cProfile.Profile()
    profiler.enable()
    for start in range(0, len(feedback), chunk):
        profiled.learn_many(feedback[start:start + chunk])
    profiled.recommend_many(users, settings.top_n, explain=True)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(profile_top)
    rows = re.compile(r"^\s*\d+(/\d+)?\s+\d+\.\d+")  # ncalls tottime ...
    top = [line.strip() for line in text.getvalue().splitlines() if rows.match(line)]

    p50, p99 = percentiles(single, 50, 99)
    out = {
        "events": len(feedback), "chunk": chunk,
        "learn_s": round(wall, 2), "learn_cpu_s": round(cpu, 2),
        "learn_s_before_and_after_oracle": [round(w, 2) for w in learn_walls],
        "learn_events_per_s": round(len(feedback) / wall, 1),
        "learn_events_per_s_cpu": round(len(feedback) / cpu, 1),
        "pair_updates": model.pair_updates,
        "pair_updates_per_s": round(model.pair_updates / wall, 1),
        "oracle_events": len(slow_events),
        "oracle_learn_events_per_s": round(len(slow_events) / owall, 1),
        "oracle_learn_events_per_s_cpu": round(len(slow_events) / ocpu, 1),
        "learn_speedup_over_oracle": round((len(feedback) / wall) / (len(slow_events) / owall),
                                           1),
        "users": len(users), "top_n": settings.top_n,
        "similar_users": settings.similar_users, "explain_items": settings.explain_items,
        "score_ms_per_user_batched": batched["cached"]["ms_per_user"],
        "score_batched": batched,
        "score_p50_ms_single": round(p50, 3), "score_p99_ms_single": round(p99, 3),
        "items": model.items.n_items, "item_entries": model.items.n_entries(),
        "bytes_per_entry": round(model.items.bytes_per_entry(), 1),
        "profile_top_tottime": top,
        "load_before": load_before, "load_after": machine(),
    }
    if oracle_single:
        op50, op99 = percentiles(oracle_single, 50, 99)
        out.update(oracle_score_p50_ms_single=round(op50, 3),
                   oracle_score_p99_ms_single=round(op99, 3), equal_to_oracle_users=len(users))
    return out


async def raw_consume(settings: Settings, total: int) -> dict[str, Any]:
    """Read every event topic from the beginning to the end: no group, no processing."""
    from aiokafka import TopicPartition

    from streams.connections import kafka_consumer

    t0 = time.perf_counter()
    consumer = kafka_consumer(settings, group_id=None, enable_auto_commit=False,
                              auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in settings.event_topics
               for p in range(settings.topic_partitions)]  # created by bench_e2e
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        n = nbytes = 0
        while n < total:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                n += len(records)
                nbytes += sum(len(r.value) for r in records)
        seconds = time.perf_counter() - t0
    finally:
        await consumer.stop()
    return {"events": n, "seconds": round(seconds, 2), "events_per_s": round(n / seconds, 1),
            "mb": round(nbytes / 1e6, 1)}


def baseline_checkout(ref: str) -> Path:
    """A checkout of ``ref`` next to this one (``git worktree``), its kernels compiled: the
    previous implementation, run on the same machine in the same run."""
    root = Path(__file__).resolve().parents[1]
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=root, check=True,
                         capture_output=True, text=True).stdout.strip()
    path = OUT_DIR / f"baseline-{sha}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=root,
                       check=True, capture_output=True)
    subprocess.run([sys.executable, "-c", "from models.cooccurrence import warm_up; warm_up()"],
                   cwd=path, check=True)
    return path


def bench_e2e(base: Settings, *, batch_sizes: Sequence[int], limit: int | None,
              budget_s: float, baseline: str | None = None,
              baseline_batch_size: int | None = None) -> dict[str, Any]:
    """The worker against a raw consumer (and, with ``baseline``, against the worker of that
    git revision, with batches of ``baseline_batch_size`` — by default the first of
    ``batch_sizes``) on the same topics in the same run."""
    from streams.tools.replay import replay

    settings = bench_settings(base)
    runs = [another_worker(settings, f"b{b}", batch_size=b) for b in batch_sizes]
    peer = another_worker(settings, "base", batch_size=baseline_batch_size or batch_sizes[0])
    out: dict[str, Any] = {"partitions": settings.topic_partitions, "load_before": machine()}
    try:
        asyncio.run(create_topics(settings))
        report = asyncio.run(replay(settings, limit=limit, progress=False))
        total = report.events
        out["produce"] = {"events": total, "seconds": round(report.seconds, 2),
                          "events_per_s": round(report.rate, 1)}
        print(f"  produced {total} events in {report.seconds:.1f} s ({report.rate:,.0f}/s)")
        out["raw_consumer"] = asyncio.run(raw_consume(settings, total))
        print(f"  raw consumer: {out['raw_consumer']}")
        out["worker"] = []
        for s in runs:
            run, _ = run_worker_until(s, total, name=f"speed-b{s.batch_size}", budget_s=budget_s)
            result = run.as_dict()
            result["ratio_to_raw"] = round(
                result["events_per_s"] / out["raw_consumer"]["events_per_s"], 3)
            result["load_after"] = machine()
            out["worker"].append(result)
            print(f"  worker: {result}")
        if baseline is not None:
            root = baseline_checkout(baseline)
            run, _ = run_worker_until(peer, total, name="speed-baseline", budget_s=budget_s,
                                      root=root)
            result = {**run.as_dict(), "revision": baseline, "load_after": machine()}
            result["ratio_to_raw"] = round(
                result["events_per_s"] / out["raw_consumer"]["events_per_s"], 3)
            out["baseline"] = result
            ours = out["worker"][0]
            out["speedup_over_baseline"] = round(ours["events_per_s"] / result["events_per_s"], 2)
            out["cpu_per_event_over_baseline"] = round(
                ours["worker_cpu_us_per_event"] / result["worker_cpu_us_per_event"], 3)
            print(f"  baseline {baseline}: {result}")
            print(f"  this worker: {out['speedup_over_baseline']}x the baseline's rate, "
                  f"{out['cpu_per_event_over_baseline']}x its CPU per event")
    finally:
        with suppress(Exception):
            asyncio.run(drop_namespaces([settings, *runs, peer]))
    out["load_after"] = machine()
    return out


# --- scaling: partitions x workers -----------------------------------------------------------
def parse_config(text: str) -> tuple[int, int]:
    """``"6x2"`` -> (6 partitions, 2 workers)."""
    partitions, _, workers = text.partition("x")
    try:
        p, w = int(partitions), int(workers)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PARTITIONSxWORKERS, e.g. 6x2, got {text!r}"
                                         ) from None
    if p < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"partitions and workers must be >= 1, got {text!r}")
    return p, w


def bench_scaling_one(base: Settings, partitions: int, workers: int, *, limit: int | None,
                      budget_s: float) -> dict[str, Any]:
    """``workers`` worker processes sharing fresh topics of ``partitions`` partitions: started
    and ready (the group settled) before the first event is sent; then the first ``limit``
    replay events are produced and the rate is taken from the first committed batch to the last
    (``processed() == total``), or over what was processed within ``budget_s``."""
    from streams.tools.replay import replay

    settings = bench_settings(base, topic_partitions=partitions)
    procs: list[WorkerProcess] = []
    out: dict[str, Any] = {"partitions": partitions, "workers": workers,
                           "load_before": machine()}
    try:
        asyncio.run(create_topics(settings))
        for n in range(workers):
            procs.append(start_worker(settings, f"scaling-{partitions}x{workers}-{n}"))
        for w in procs:
            w.wait_ready(timeout=120)
        time.sleep(3.0)  # let the last join's rebalance finish before the clock starts
        # what starting cost (loading the kernels, Faust, the group joins): not processing
        idle_cpu = sum(cpu_seconds(w.proc.pid) for w in procs)
        sent = time.perf_counter()
        report = asyncio.run(replay(settings, limit=limit, progress=False))
        total = report.events
        first_commit = first_count = 0.0
        deadline = sent + budget_s
        while True:
            n = processed(settings)
            now = time.perf_counter()
            if n and not first_commit:
                first_commit, first_count = now, n
            if n >= total or (now > deadline and n > first_count):
                break
            for w in procs:
                if not w.alive():
                    raise RuntimeError(f"worker died:\n{w.tail()}")
            if now > deadline + 60:
                raise RuntimeError(f"nothing processed in {budget_s + 60:g} s")
            time.sleep(0.05)
        cpu = sum(cpu_seconds(w.proc.pid) for w in procs)
        steady = now - first_commit
        out.update(events=total, processed=n, complete=n >= total,
                   produce_events_per_s=round(report.rate, 1),
                   first_commit_to_done_s=round(steady, 2),
                   events_per_s=round((n - first_count) / steady, 1) if steady > 0 else None,
                   send_to_done_s=round(now - sent, 2),
                   workers_cpu_s=round(cpu, 2),
                   cpu_us_per_event=round(cpu / n * 1e6, 1),
                   workers_cpu_s_at_start=round(idle_cpu, 2),
                   processing_cpu_us_per_event=round((cpu - idle_cpu) / n * 1e6, 1))
    finally:
        for w in procs:
            w.stop()
        with suppress(Exception):
            asyncio.run(drop_namespaces([settings]))
    out["load_after"] = machine()
    return out


def bench_scaling(base: Settings, configs: Sequence[tuple[int, int]], *, limit: int | None,
                  budget_s: float) -> list[dict[str, Any]]:
    results = []
    for partitions, workers in configs:
        print(f"  {partitions} partitions x {workers} workers ...", flush=True)
        result = bench_scaling_one(base, partitions, workers, limit=limit, budget_s=budget_s)
        print(f"    {result['events_per_s']} events/s ({result['processed']}/{result['events']}"
              f" events, {result['cpu_us_per_event']} us CPU per event, "
              f"{result['processing_cpu_us_per_event']} us after start)", flush=True)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "core", "e2e", "scaling"), default="all",
                        help="all = core + e2e; scaling runs only with --part scaling")
    parser.add_argument("--configs", type=parse_config, nargs="+",
                        default=[parse_config(c) for c in ("6x1", "6x2", "6x3", "1x1", "3x1")],
                        help="scaling: PARTITIONSxWORKERS per run (default 6x1 6x2 6x3 1x1 3x1)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="e2e: one worker run per batch size (default: the setting)")
    parser.add_argument("--baseline-batch-size", type=int, default=None,
                        help="e2e: the baseline worker's batch size (default: the first of "
                             "--batch-sizes; give the revision's own default to compare "
                             "defaults)")
    parser.add_argument("--budget", type=float, default=240.0,
                        help="seconds per worker run at most (then its rate is over a prefix)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N events")
    parser.add_argument("--profile-top", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=500,
                        help="core: events per learn_many call (a worker's batch)")
    parser.add_argument("--oracle-limit", type=int, default=None,
                        help="core: the oracle learns only the first N events (its rate is "
                             "then over those; no equality check)")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="e2e: also run the worker of this git revision on the same topics "
                             "(e.g. the commit before a change) and report the ratios")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "speed.json")
    args = parser.parse_args()

    settings = get_settings()
    result: dict[str, Any] = {}
    if args.out.exists():  # keep the other part's figures when one part is rerun
        with suppress(ValueError):
            result = json.loads(args.out.read_text())
    if args.part in ("all", "core"):
        print("core: the vectorised core and the scalar oracle over the ML-100K replay ...")
        result["core"] = core = bench_core(settings, limit=args.limit,
                                           oracle_limit=args.oracle_limit, chunk=args.chunk,
                                           profile_top=args.profile_top)
        print(f"  learn: {core['events']:,} events in {core['learn_s']} s: "
              f"{core['learn_events_per_s']:,.0f} events/s, {core['pair_updates_per_s']:,.0f} "
              f"pair updates/s ({core['pair_updates']:,} pairs); oracle "
              f"{core['oracle_learn_events_per_s']:,.0f} events/s: "
              f"{core['learn_speedup_over_oracle']}x")
        print(f"  score: {core['users']} users, top-{core['top_n']} with explanations and "
              f"similar users: {core['score_ms_per_user_batched']} ms/user batched; single "
              f"p50 {core['score_p50_ms_single']} ms, p99 {core['score_p99_ms_single']} ms"
              + (f" (oracle p99 {core['oracle_score_p99_ms_single']} ms; lists equal for all "
                 f"{core['equal_to_oracle_users']} users)" if "equal_to_oracle_users" in core
                 else ""))
        print(f"  {core['item_entries']:,} co-occurrence entries, {core['bytes_per_entry']} "
              "bytes each")
        print("  top functions by own time (cProfile, learning and batched scoring):")
        for line in core["profile_top_tottime"]:
            print("   ", line)
    if args.part in ("all", "e2e"):
        print("e2e: produce, raw consumer, worker ...")
        result["e2e"] = bench_e2e(settings, batch_sizes=args.batch_sizes or [settings.batch_size],
                                  limit=args.limit, budget_s=args.budget,
                                  baseline=args.baseline,
                                  baseline_batch_size=args.baseline_batch_size)
    if args.part == "scaling":
        print(f"scaling: {args.limit or 'all'} replay events per run ...")
        result["scaling"] = bench_scaling(settings, args.configs, limit=args.limit,
                                          budget_s=args.budget)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
