"""What Faust itself costs per event: the ceiling of any worker built on a Faust agent.

Replays the first ``--events`` ML-100K events to topics of their own, then, in the same run:
a raw aiokafka consumer reads them (no group, no processing); then three Faust apps configured
as the worker's (`streams.runtime.app.create_app`: same broker settings, poll size, one agent over
the three event topics, batches of at most ``BATCH_SIZE`` within ``BATCH_WITHIN_S``, each event
turned into the worker's `SourceMessage`) consume them and do nothing else:

- ``stock``: Faust's own aiokafka transport (``kafka://``), raw schema and
  ``stream.take_events`` — a Faust agent as Faust ships it;
- ``take_events``: the worker's transport and topic (`streams.runtime.faust_consumer`), with
  ``stream.take_events``;
- ``worker``: the worker's transport, topic and `streams.runtime.faust_consumer.batches` — what the
  worker runs under its computation;

and, with ``--worker``, the real worker (``tastemaker worker``) processes them. Prints events/s
and CPU per event of each — from the first batch on (the child's own clock), and from its start
(from /proc: Faust's start-up included) — and writes ``bench/out/faust_ceiling.json``.

    python -m bench.faust_ceiling --events 100000 --worker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from bench.speed import (
    OUT_DIR,
    another_worker,
    bench_settings,
    cpu_seconds,
    create_topics,
    machine,
    raw_consume,
    run_worker_until,
)
from streams.settings import Settings, get_settings
from streams.tools.namespaces import drop_namespaces
from streams.tools.supervisor import settings_env

ROOT = Path(__file__).resolve().parents[1]


def null_agent(total: int, out: Path, mode: str) -> None:
    """The child: a Faust app as the worker builds it, whose agent only collects the batches;
    writes its time to ``total`` events (from the first batch) to ``out`` and exits. ``mode``:
    ``stock``, ``take_events`` or ``worker`` (see the module)."""
    import faust

    from streams import connections
    from streams.runtime import faust_consumer
    from streams.runtime.worker import SourceMessage

    settings = get_settings()
    (settings.stack_dir / "faust").mkdir(parents=True, exist_ok=True)
    broker = connections.faust_broker(settings)
    if mode == "stock":
        broker = ["kafka://" + url.split("://", 1)[1] for url in broker]
    app = faust.App(
        settings.app_id, broker=broker,
        broker_credentials=connections.faust_credentials(settings), store="memory://",
        datadir=str(settings.stack_dir / "faust" / "{conf.id}-data"),
        topic_partitions=settings.topic_partitions, topic_allow_declare=False,
        consumer_auto_offset_reset="earliest", web_enabled=False, producer_acks=-1,
        broker_max_poll_records=max(settings.batch_size, 500),
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 4)
    if mode == "stock":
        topic = app.topic(*settings.event_topics, key_serializer="raw", value_serializer="raw",
                          allow_empty=True)
    else:
        topic = faust_consumer.event_topic(app, settings.event_topics)
    seen = {"n": 0, "first": 0.0, "first_cpu": 0.0}

    def collect(events: list) -> None:  # Faust events
        batch = [SourceMessage.of(e.message) for e in events]
        if not seen["n"]:
            seen["first"], seen["first_cpu"] = time.perf_counter(), time.process_time()
        seen["n"] += len(batch)
        if seen["n"] >= total:
            out.write_text(json.dumps({
                "events": seen["n"], "seconds": time.perf_counter() - seen["first"],
                "cpu_seconds": time.process_time() - seen["first_cpu"]}))
            os._exit(0)

    @app.agent(topic, name="null_events", concurrency=1)
    async def null_events(stream):  # a Faust stream
        if mode == "worker":
            async for events in faust_consumer.batches(app, stream, settings.batch_size,
                                                       settings.batch_within_s):
                collect(events)
        async for events in stream.take_events(settings.batch_size,
                                               within=settings.batch_within_s):
            collect(events)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


def run_null_agent(settings: Settings, total: int, *, mode: str) -> dict[str, Any]:
    out = OUT_DIR / f"faust_null_{os.getpid()}.json"
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bench.faust_ceiling", "--child",
                             str(total), str(out), mode],
                            cwd=ROOT, env=settings_env(settings), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    cpu = 0.0
    while proc.poll() is None:
        with suppress(OSError):
            cpu = cpu_seconds(proc.pid)
        time.sleep(0.05)
        if time.perf_counter() - t0 > 600:
            proc.kill()
            raise RuntimeError("the Faust agent did not finish in 600 s")
    if not out.exists():
        raise RuntimeError(f"the Faust agent failed:\n{proc.stderr.read().decode()[-3000:]}")
    result = json.loads(out.read_text())
    out.unlink()
    seconds = result["seconds"]
    return {"events": result["events"], "seconds_from_first_batch": round(seconds, 2),
            "events_per_s": round(result["events"] / seconds, 1),
            "process_cpu_s": round(cpu, 2),
            "process_cpu_us_per_event": round(cpu / result["events"] * 1e6, 1),
            "cpu_us_per_event_from_first_batch": round(
                result["cpu_seconds"] / result["events"] * 1e6, 1)}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        null_agent(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--worker", action="store_true",
                        help="also run the real worker over the same events")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "faust_ceiling.json")
    args = parser.parse_args()
    from streams.tools.replay import replay

    settings = bench_settings(get_settings())
    modes = {mode: another_worker(settings, mode.replace("_", "-"))
             for mode in ("stock", "take_events", "worker")}
    worker = another_worker(settings, "worker-process")
    result: dict[str, Any] = {"load_before": machine()}
    try:
        asyncio.run(create_topics(settings))
        report = asyncio.run(replay(settings, limit=args.events, progress=False))
        total = report.events
        result["raw_consumer"] = asyncio.run(raw_consume(settings, total))
        print(f"raw aiokafka consumer: {result['raw_consumer']}")
        for mode, mode_settings in modes.items():
            result[f"faust_null_agent_{mode}"] = run_null_agent(mode_settings, total, mode=mode)
            print(f"Faust agent doing nothing ({mode}): {result[f'faust_null_agent_{mode}']}")
        if args.worker:
            run, _ = run_worker_until(worker, total, name="faust-ceiling-worker",
                                      budget_s=600)
            result["worker"] = run.as_dict()
            print(f"tastemaker worker: {result['worker']}")
    finally:
        with suppress(Exception):
            asyncio.run(drop_namespaces([settings, *modes.values(), worker]))
    result["load_after"] = machine()
    result["command"] = f"python -m bench.faust_ceiling --events {args.events}" + (
        " --worker" if args.worker else "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
