"""Publish-to-swap latency: from a ranker version's publication to every worker serving it.

Starts ``--workers`` worker processes on topics of their own, warms them with a few hundred
events, then ``--publishes`` times: publishes a new version through `streams.runtime.model_store`
(what the trainer does) and polls ``ranker:serving`` (each worker writes the version it serves
and when it swapped) until every worker reports it. The latency is the last worker's swap time
minus the publish time (one machine, one clock). Workers poll ``ranker:current`` every
``ranker_poll_s`` (0.25 s by default) and swap between batches.

    python -m bench.swap_latency                    # 2 workers, 10 publishes
    python -m bench.swap_latency --workers 3 --publishes 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import orjson

from bench.speed import OUT_DIR, bench_settings, create_topics, machine, start_worker
from models.ranker import RankerMLP, fine_tune, toy_groups
from streams import connections
from streams.contract.keys import Keys
from streams.runtime.model_store import ModelStore
from streams.settings import get_settings
from streams.tools.namespaces import drop_namespaces


async def measure(args: argparse.Namespace) -> dict:
    settings = bench_settings(get_settings(), ranker_example_rate=0.0)
    await create_topics(settings)
    workers = [start_worker(settings, f"swap-{n}") for n in range(args.workers)]
    keys = Keys(settings.key_prefix)
    client = connections.redis_async(settings)
    store = ModelStore(client, keys, max_bytes=settings.ranker_max_artefact_bytes,
                       keep=settings.ranker_keep_versions)
    try:
        for w in workers:
            w.wait_ready(timeout=120)
        producer = connections.kafka_producer(settings)
        await producer.start()
        try:  # some events, so that the workers have users to re-rank when they swap
            for n in range(300):
                await producer.send(settings.topic_plays, orjson.dumps(
                    {"user_id": f"u{n % 30}", "item_id": f"i{n % 50}", "ts": 1e9 + n}),
                    key=f"u{n % 30}".encode())
            await producer.flush()
        finally:
            await producer.stop()
        model = RankerMLP()
        groups = toy_groups(n_groups=200, seed=0)
        model.fit_scaler(groups)
        fine_tune(model, groups, epochs=2, device="cpu")
        await asyncio.sleep(5)
        latencies = []
        for _ in range(args.publishes):
            published_at = time.time()
            version = await store.publish(model, {})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                serving = [orjson.loads(v) for v in
                           (await client.hgetall(keys.ranker_serving)).values()]
                if len(serving) >= args.workers and all(s["version"] == version
                                                        for s in serving):
                    latencies.append(max(s["since"] for s in serving) - published_at)
                    break
                await asyncio.sleep(0.005)
            else:
                raise RuntimeError(f"version {version} not served by all workers in 30 s")
            await asyncio.sleep(0.5)
        latencies.sort()
        return {"workers": args.workers, "publishes": len(latencies),
                "poll_s": settings.ranker_poll_s,
                "p50_s": round(latencies[len(latencies) // 2], 3),
                "max_s": round(latencies[-1], 3),
                "all_s": [round(x, 3) for x in latencies], "machine": machine()}
    finally:
        for w in workers:
            w.stop()
        await client.aclose()
        await drop_namespaces([settings])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--publishes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=OUT_DIR / "swap_latency.json")
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"publish -> all {result['workers']} workers serving: p50 {result['p50_s']} s, "
          f"max {result['max_s']} s over {result['publishes']} publishes "
          f"(workers poll every {result['poll_s']} s)")


if __name__ == "__main__":
    main()
