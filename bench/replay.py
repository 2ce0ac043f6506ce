"""Replay throughput: the full MovieLens-100K replay against a running stack, as fast as it goes.

Measures what ``tastemaker replay movielens-100k`` does end to end: validation, encoding, sending
with ``acks=all`` + idempotence, and waiting for every acknowledgement (the item-metadata write to
Redis is timed apart). Point it at a stack with the usual settings (``eval "$(tastemaker up)"``).

    python -m bench.replay                  # writes bench/out/replay.json
    python -m bench.replay --limit 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
from pathlib import Path

from streams.settings import get_settings
from streams.tools.replay import replay

OUT = Path(__file__).parent / "out" / "replay.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="stop after this many events")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    settings = get_settings()
    report = asyncio.run(replay(settings, "movielens-100k", limit=args.limit, seed=args.seed))
    result = {
        "dataset": report.dataset,
        "events": report.events,
        "by_kind": dict(sorted(report.by_kind.items())),
        "seconds": round(report.seconds, 3),
        "events_per_s": round(report.rate, 1),
        "item_hashes": report.items,
        "seed": args.seed,
        "kafka": settings.kafka_bootstrap_servers,
        "partitions": settings.topic_partitions,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(report.summary())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
