"""Decoding speed: CPU µs per event to decode and validate the ML-100K replay's message values.

The values are the replay's own encoding (`streams.contract.events.encode_event` of
`bench.speed.ml_events`), decoded in batches of one topic as a worker takes them, with a time limit
as a worker passes it. Measures, interleaved round by round so that a busy machine slows all alike:

- ``before``: `decode_event` of ``--before`` (a git revision; default the parent of the fast path),
  loaded from that revision's ``streams/contract/events.py``;
- ``decode_event`` and ``decode_events`` of the working tree;
- parts: ``orjson.loads`` alone, pydantic's ``model_validate`` of the decoded dicts, the fast
  path's checks and construction alone (`streams.contract.events.parse_event` of the dicts), and
  building the ratings from their already-checked values: as a pydantic model the way the fast path
  does, and, for what a lighter event class would save, as a frozen slotted dataclass or a
  NamedTuple.

The parts run over values decoded or checked beforehand (colder in the caches than a value
just read), so they do not add up to the totals; they say where the time goes. With the garbage
collector on (the default), building events that stay alive gets dearer as the heap grows;
``--no-gc`` measures the code alone.

    python -m bench.decode                   # writes bench/out/decode.json
    python -m bench.decode --rounds 3 --limit 50000 --no-gc
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from bench.speed import ml_events
from streams.contract import events
from streams.settings import get_settings

OUT = Path(__file__).parent / "out" / "decode.json"
ROOT = Path(__file__).resolve().parent.parent
BEFORE = "f0c576b"  # the last revision whose decoder validated every event with pydantic


@dataclasses.dataclass(slots=True, frozen=True)
class _LightRating:
    user_id: str
    item_id: str
    ts: float
    event_id: str | None
    rating: float


class _TupleRating(NamedTuple):
    user_id: str
    item_id: str
    ts: float
    event_id: str | None
    rating: float


def module_at(revision: str) -> types.ModuleType:
    """``streams/contract/events.py`` as it was at ``revision`` (``streams/events.py`` before
    ``streams/`` was grouped into packages), as a module of its own."""
    for path in ("streams/contract/events.py", "streams/events.py"):
        shown = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT,
                               capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        raise FileNotFoundError(f"no events module at {revision}: {shown.stderr.strip()}")
    module = types.ModuleType(f"events_at_{revision}")
    sys.modules[module.__name__] = module  # pydantic resolves annotations through it
    exec(compile(shown.stdout, f"{revision}:{path}", "exec"), module.__dict__)
    return module


def batches(values: list[tuple[str, bytes]], size: int) -> list[list[tuple[str, list[bytes]]]]:
    """Batches of ``size`` values in replay order, each split by kind (a worker's topics)."""
    out = []
    for start in range(0, len(values), size):
        by_kind: dict[str, list[bytes]] = {}
        for kind, raw in values[start:start + size]:
            by_kind.setdefault(kind, []).append(raw)
        out.append(list(by_kind.items()))
    return out


def timed(run: Callable[[], object], n: int, *, collect: bool) -> float:
    """CPU µs per event of ``run`` (its results dropped after, as a worker drops a batch), with
    the garbage collector running as usual or (``collect=False``) switched off."""
    gc.collect()
    if not collect:
        gc.disable()
    try:
        started = time.process_time()
        run()
        return (time.process_time() - started) / n * 1e6
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N events")
    parser.add_argument("--batch", type=int, default=1000, help="messages per batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default=BEFORE, help="git revision to compare against")
    parser.add_argument("--no-gc", action="store_true",
                        help="switch the garbage collector off while timing: the cost of the "
                             "code alone, without collections of everything else alive")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    values = [(e.kind, events.encode_event(e)) for e in ml_events(get_settings(), args.limit)]
    work = batches(values, args.batch)
    n = len(values)
    not_after = events.latest_event_ts(0.0)
    before = module_at(args.before)
    dicts = [(kind, orjson.loads(raw)) for kind, raw in values]
    ratings = [(obj["user_id"], obj["item_id"], obj["ts"], obj.get("event_id"), obj["rating"])
               for kind, obj in dicts if kind == "rating"]

    def per_message(decode: Callable[..., object]) -> Callable[[], object]:
        def run() -> object:
            for batch in work:
                kept = [decode(kind, raw, max_bytes=1_000_000, not_after=not_after)
                        for kind, raws in batch for raw in raws]
                del kept
            return None
        return run

    def batched() -> object:
        for batch in work:
            kept = [events.decode_events(kind, raws, max_bytes=1_000_000, not_after=not_after)
                    for kind, raws in batch]
            del kept
        return None

    def loads_only() -> object:
        return [orjson.loads(raw) for _, raw in values]

    def pydantic_only() -> object:
        return [events.SCHEMA_BY_KIND[kind].model_validate(obj) for kind, obj in dicts]

    def fast_only() -> object:
        return [events.parse_event(kind, obj) for kind, obj in dicts]

    _set = object.__setattr__

    def construct_model() -> object:
        out = []
        for user_id, item_id, ts, event_id, rating in ratings:
            event = events.Rating.__new__(events.Rating)  # as the fast path builds one
            _set(event, "__dict__", {"user_id": user_id, "item_id": item_id, "ts": ts,
                                     "event_id": event_id, "rating": rating})
            _set(event, "__pydantic_fields_set__", {"user_id", "item_id", "ts", "rating"})
            _set(event, "__pydantic_extra__", None)
            _set(event, "__pydantic_private__", None)
            out.append(event)
        return out

    def construct_dataclass() -> object:
        return [_LightRating(*fields) for fields in ratings]

    def construct_tuple() -> object:
        return [_TupleRating(*fields) for fields in ratings]

    cases: dict[str, tuple[Callable[[], object], int]] = {
        "before": (per_message(before.decode_event), n),
        "decode_event": (per_message(events.decode_event), n),
        "decode_events": (batched, n),
        "orjson.loads": (loads_only, n),
        "model_validate": (pydantic_only, n),
        "parse_event (fast path)": (fast_only, n),
        "construct Rating: pydantic model": (construct_model, len(ratings)),
        "construct Rating: frozen slotted dataclass": (construct_dataclass, len(ratings)),
        "construct Rating: NamedTuple": (construct_tuple, len(ratings)),
    }
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        rounds.append({name: timed(run, count, collect=not args.no_gc)
                       for name, (run, count) in cases.items()})
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in rounds[-1].items()),
              flush=True)
    median = {name: statistics.median(r[name] for r in rounds) for name in cases}
    ratio = {name: statistics.median(r["before"] / r[name] for r in rounds)
             for name in ("decode_event", "decode_events")}
    result: dict[str, Any] = {
        "events": n, "by_kind": {k: sum(1 for kk, _ in values if kk == k)
                                 for k in events.SCHEMA_BY_KIND},
        "batch": args.batch, "rounds": args.rounds, "before": args.before,
        "gc": not args.no_gc,
        "us_per_event_median": median,
        "us_per_event_min": {name: min(r[name] for r in rounds) for name in cases},
        "speedup_vs_before_median_of_rounds": ratio,
        "per_round": rounds,
        "machine": {"python": platform.python_version(), "cpu": platform.processor(),
                    "node": platform.node()},
    }
    for name, value in median.items():
        print(f"{name:28s} {value:6.2f} µs/event (median of {args.rounds})")
    print("speedup vs before: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
