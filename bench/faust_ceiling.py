"""What Faust itself costs per event: the ceiling of any worker built on a Faust agent.

Replays the first ``--events`` ML-100K events to topics of their own, then, in the same run:
a raw aiokafka consumer reads them (no group, no processing); a Faust app configured as the
worker's (`streams.app.create_app`: same broker settings, poll size, one agent over the three
event topics, ``take_events(BATCH_SIZE, within=BATCH_WITHIN_S)``, each event turned into the
worker's `SourceMessage`) consumes them and does nothing else — once on Faust's own aiokafka
transport (``kafka://``) and schema, once on the worker's (`streams.faust_consumer`) — then a
third such app whose agent drains its batches from its channel's queue (`drained_batches`: is
the stream's per-event iteration the cost?); and, with ``--worker``, the real worker
(``tastemaker worker``) processes them. Prints events/s and CPU per event of each (CPU
of the child process, from /proc, from its start: Faust's start-up included) and writes
``bench/out/faust_ceiling.json``.

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
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from bench.speed import (
    OUT_DIR,
    another_worker,
    bench_settings,
    cleanup,
    cpu_seconds,
    create_topics,
    machine,
    raw_consume,
    run_worker_until,
)
from streams.settings import Settings, get_settings
from streams.supervisor import settings_env

ROOT = Path(__file__).resolve().parents[1]


async def drained_batches(app: Any, stream: Any, max_: int, within: float
                          ) -> AsyncIterator[list[Any]]:
    """Batches of the agent ``stream``'s events (``faust.EventT``), at most ``max_`` each,
    taken from the queue the conductor fills instead of through the stream's per-event
    iterator (what ``take_events`` uses), keeping its rules: events of an earlier consumer
    generation or taken while flow control is off are acknowledged and dropped, kept events
    are tracked before the batch is handed out and acknowledged when the next is asked for.
    The second do-nothing agent: does the stream's iteration cost what a Faust agent pays per
    event?"""
    channel = aiter(stream.channel)  # subscribes the agent's queue, as iterating the stream does
    queue = channel.queue
    consumer = app.consumer
    sensors = app.sensors
    acking_topics = app.topics.acking_topics
    loop = asyncio.get_running_loop()
    while not stream.should_stop:
        events = [await channel.__anext__()]
        deadline = loop.time() + within
        while len(events) < max_:
            if not queue.empty():
                events.append(queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                events.append(await asyncio.wait_for(queue.get(), left))
            except TimeoutError:
                break
        kept = []
        active, generation = app.flow_control.is_active(), app.consumer_generation_id
        for event in events:
            message = event.message
            if not active or message.generation_id != generation:
                continue  # acknowledged below, as the stream does with what it skips
            if message.topic in acking_topics and not message.tracked:
                message.tracked = True
                consumer.track_message(message)
            kept.append(event)
        if kept:
            yield kept
        _ack(events, sensors)  # the caller asked for the next batch: this one is done


def _ack(events: list[Any], sensors: Any) -> None:
    for event in events:
        if event.ack():
            message = event.message
            sensors.on_message_out(message.tp, message.offset, message)



def null_agent(total: int, out: Path, mode: str) -> None:
    """The child: a Faust app as the worker builds it, whose agent only collects the batches;
    writes its time to ``total`` events (from the first batch) to ``out`` and exits. ``mode``:
    ``stream`` (the worker's transport, topic and ``take_events``), ``stock`` (Faust's own
    aiokafka transport, ``kafka://``, and schema) or ``drain`` (the worker's transport and
    topic, `drained_batches`)."""
    import faust

    from streams import connections, faust_consumer
    from streams.worker import SourceMessage

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
    seen = {"n": 0, "first": 0.0}

    def collect(events: list) -> None:  # noqa: ANN001 - Faust events
        batch = [SourceMessage.of(e.message) for e in events]
        if not seen["n"]:
            seen["first"] = time.perf_counter()
        seen["n"] += len(batch)
        if seen["n"] >= total:
            out.write_text(json.dumps({"events": seen["n"],
                                       "seconds": time.perf_counter() - seen["first"]}))
            os._exit(0)

    @app.agent(topic, name="null_events", concurrency=1)
    async def null_events(stream):  # noqa: ANN001, ANN202 - a Faust stream
        if mode == "drain":
            async for events in drained_batches(app, stream, settings.batch_size,
                                                settings.batch_within_s):
                collect(events)
        async for events in stream.take_events(settings.batch_size,
                                               within=settings.batch_within_s):
            collect(events)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


def run_null_agent(settings: Settings, total: int, *, mode: str = "stream") -> dict[str, Any]:
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
            "process_cpu_us_per_event": round(cpu / result["events"] * 1e6, 1)}


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
    from streams.replay import replay

    settings = bench_settings(get_settings())
    stock = another_worker(settings, "stock")
    null = another_worker(settings, "null")
    drained = another_worker(settings, "drained")
    worker = another_worker(settings, "worker")
    result: dict[str, Any] = {"load_before": machine()}
    try:
        asyncio.run(create_topics(settings))
        report = asyncio.run(replay(settings, limit=args.events, progress=False))
        total = report.events
        result["raw_consumer"] = asyncio.run(raw_consume(settings, total))
        print(f"raw aiokafka consumer: {result['raw_consumer']}")
        result["faust_null_agent_stock"] = run_null_agent(stock, total, mode="stock")
        print(f"Faust agent doing nothing, Faust's own transport: "
              f"{result['faust_null_agent_stock']}")
        result["faust_null_agent"] = run_null_agent(null, total)
        print(f"Faust agent doing nothing, the worker's transport (streams.faust_consumer): "
              f"{result['faust_null_agent']}")
        result["faust_null_agent_drained"] = run_null_agent(drained, total, mode="drain")
        print(f"Faust agent doing nothing, batches drained from its queue "
              f"(drained_batches): {result['faust_null_agent_drained']}")
        if args.worker:
            run, _ = run_worker_until(worker, total, name="faust-ceiling-worker",
                                      budget_s=600)
            result["worker"] = run.as_dict()
            print(f"tastemaker worker: {result['worker']}")
    finally:
        with suppress(Exception):
            asyncio.run(cleanup([settings, stock, null, drained, worker]))
    result["load_after"] = machine()
    result["command"] = f"python -m bench.faust_ceiling --events {args.events}" + (
        " --worker" if args.worker else "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
