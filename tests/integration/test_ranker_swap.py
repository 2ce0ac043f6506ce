"""The ranker on the real stack: the trainer process publishes, a running worker swaps."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from models.ranker import FEATURE_VERSION, from_artefact, toy_groups
from streams.contract.keys import Keys
from streams.runtime.ranking import Ranking
from streams.runtime.state import UserState
from streams.runtime.trainer import parse_example
from streams.settings import Settings, load_settings
from streams.tools.supervisor import ROOT
from tests.integration.harness import (
    WorkerProcess,
    as_messages,
    client,
    processed,
    read_topic,
    reference,
    send_raw,
    settings_env,
    wait_processed,
    wait_settled,
)

pytestmark = pytest.mark.integration

USERS, ITEMS, PER_USER = 60, 80, 40


def _plays() -> list[tuple[str, dict]]:
    """Users with overlapping tastes: user u plays items from a window that drifts with u."""
    events = []
    for k in range(PER_USER):
        for u in range(USERS):
            item = (u + (k * 7) % 23) % ITEMS
            events.append(("play", {"user_id": f"u{u}", "item_id": f"i{item}",
                                    "ts": 1e9 + 60 * (k * USERS + u), "event_id": f"e{u}-{k}"}))
    return events


def _toy_examples(settings: Settings) -> list[tuple[str, bytes, bytes]]:
    """Learnable examples, newer than the workers' (they form the held-out slice)."""
    groups = toy_groups(n_groups=600, seed=11)
    out = []
    for g in range(len(groups)):
        record = {"id": f"toy|{g}", "user_id": f"toy{g}", "ts": 3e9 + g,
                  "feature_version": FEATURE_VERSION, "items": [f"t{k}" for k in range(20)],
                  "positive": int(groups.positive[g]), "features": groups.x[g].tolist(),
                  "liked": []}
        out.append((settings.topic_ranker_examples, f"toy{g}".encode(), orjson.dumps(record)))
    return out


def _stream(settings: Settings, messages: list, chunks: int, pause: float,
            gate: threading.Event, errors: list[BaseException]) -> None:
    """Send ``messages`` in chunks, ``pause`` s apart; the last quarter waits for ``gate``."""
    try:
        size = -(-len(messages) // chunks)
        for n, start in enumerate(range(0, len(messages), size)):
            if n == chunks * 3 // 4:
                gate.wait(timeout=300)
            asyncio.run(send_raw(settings, messages[start:start + size]))
            time.sleep(pause)
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def test_trainer_publishes_and_a_running_worker_swaps_without_losing_or_repeating_an_event(
        unique_topics: Settings, tmp_path: Path):
    settings = load_settings(**{**unique_topics.model_dump(), "ranker_example_rate": 0.2,
                                "trainer_epochs": 15, "trainer_device": "cpu"})
    keys, r = Keys(settings.key_prefix), client(settings)
    events = _plays()
    messages = list(as_messages(settings, events))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        pid = worker.proc.pid
        errors: list[BaseException] = []
        swapped = threading.Event()
        # a continuous stream; its last quarter is held until the swap, so that it lands in
        # the middle of the stream however long training takes on this machine
        sender = threading.Thread(target=_stream,
                                  args=(settings, messages, 40, 0.2, swapped, errors))
        sender.start()
        wait_processed(settings, len(messages) // 4, [worker])
        asyncio.run(send_raw(settings, _toy_examples(settings)))
        trained = subprocess.run(
            [sys.executable, "-m", "streams.tools.cli", "trainer", "--once"], cwd=ROOT,
            env=settings_env(settings), capture_output=True, text=True, timeout=300)
        assert trained.returncode == 0, trained.stdout + trained.stderr
        assert "published" in trained.stdout, trained.stdout + trained.stderr
        assert "guard published" in trained.stderr  # the decision is logged with its figures
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            serving = {k.decode(): orjson.loads(v) for k, v in
                       r.hgetall(keys.ranker_serving).items()}
            if [s["version"] for s in serving.values()] == [1]:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"worker not serving version 1: {serving}\n{worker.tail()}")
        assert processed(settings) < len(messages)  # events are still to come after the swap
        swapped.set()
        sender.join(timeout=300)
        assert not errors, errors
        wait_processed(settings, len(messages), [worker])
        wait_settled(settings)
        assert worker.alive() and worker.proc.pid == pid  # swapped without a restart
        assert "serving ranker version 1" in worker.tail(200)

        # every event exactly once across the swap
        seen = []
        for u in range(USERS):
            seen += UserState.from_bytes(r.get(keys.history(f"u{u}"))).seen
        assert sorted(seen) == sorted(e["event_id"] for _, e in events)
        # the worker logged valid examples; the trainer read them with the toy ones
        logged = [v for _, _, v in asyncio.run(read_topic(
            settings, settings.topic_ranker_examples, expected=10**9, idle_s=3))
            if not v.startswith(b'{"id":"toy|')]
        assert logged and all(parse_example(raw)[0].startswith("u") for raw in logged)

        # the settled state: every user ranked by version 1, equal to the reference
        model, _ = from_artefact(r.get(keys.ranker_artefact(1)),
                                 max_bytes=settings.ranker_max_artefact_bytes)
        # fitted on the workers' examples' liked items: the lists below use factor_score
        assert model.factors is not None and "i0" in model.factors.index
        assert "item factors: " in trained.stderr
        replica_model = reference(settings, events)
        replica_model.items.refresh()
        ranking = Ranking(settings, model=model, version=1)
        for u in range(USERS):
            user = f"u{u}"
            assert r.hget(keys.recs_meta(user), "model") == b"1"
            want = ranking.recommend(replica_model.items, user, replica_model.histories[user])
            have = r.zrevrange(keys.recs(user), 0, -1, withscores=True)
            explain = r.hgetall(keys.explain(user))
            assert [i.decode() for i, _ in have] == [w.item_id for w in want], user
            for (item, score), w in zip(have, want, strict=True):
                assert score == pytest.approx(w.score, abs=2e-6)
                assert tuple(orjson.loads(explain[item])["because"]) == w.because
    finally:
        worker.stop()

