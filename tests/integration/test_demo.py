"""``tastemaker demo`` on a slice of MovieLens-100K: a real worker and a real trainer process, the
printed users' tables and the summary."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import suppress

import pytest
from rich.console import Console

from streams.client.recs import get_recommendations
from streams.settings import Settings
from streams.tools.demo import DemoReport, demo_settings, run_demo
from streams.tools.namespaces import drop_namespaces
from streams.tools.stack import run_coroutine

pytestmark = pytest.mark.integration

LIMIT = 6_000  # events: enough for the trainer to fit (it needs 20 examples), fast to process


@pytest.fixture
def demo_name(settings: Settings) -> Iterator[str]:
    """A demo name of this test's own (topics ``{name}-*``, keys ``{name}:``), removed after."""
    name = f"demotest{uuid.uuid4().hex[:10]}"
    yield name
    own = demo_settings(settings, name)
    with suppress(Exception):
        run_coroutine(drop_namespaces([own]))


def test_demo_prints_titled_explained_recommendations_and_the_summary(
        settings: Settings, demo_name: str):
    out = io.StringIO()
    console = Console(file=out, width=400, color_system=None, soft_wrap=True)
    report: DemoReport = run_demo(settings, limit=LIMIT, console=console, name=demo_name)
    text = out.getvalue()

    assert report.events == LIMIT
    assert report.dlq == 0  # the replay sends only valid events
    # both processes ran and stopped cleanly; the trainer read the worker's examples and tried to
    # fit (publishing is not required: the guard may refuse on a slice this small)
    assert report.worker_exit == 0, text
    assert report.trainer_exit == 0, text
    assert report.examples > 0
    assert report.trainer.attempts and report.trainer.attempts[-1] >= report.examples
    assert report.ranker_ready, text  # the last fit, the swap and the settle pass happened

    own = demo_settings(settings, demo_name)
    assert len(report.served) == 3
    for user, model in report.served.items():
        assert f"user {user}: last plays and ratings" in text
        assert f"Recommendations for user {user}" in text
        # ranked with the served version (or the co-occurrence order when none was published)
        assert model == (str(report.ranker.version) if report.ranker.version else "none")
        recs = get_recommendations(user, 10, settings=own)
        assert len(recs) == 10
        for rec in recs:
            assert rec.title and rec.title in text  # titles, not item ids
            if rec.because:
                assert "because you liked: " + ", ".join(
                    b.title or b.item_id for b in rec.because) in text
    assert "because you liked: " in text

    for row in ("events replayed", f"{LIMIT:,}", "replay rate (produce)", "end to end",
                "freshness, Kafka append → list in Redis", "p50 ", "p99 ", "dead-lettered",
                "ranker fits", f"{report.examples:,} examples", "ranker model served",
                "shown lists ranked with", "worker / trainer exit codes", "0 / 0"):
        assert row in text, row
    assert report.freshness is not None and report.freshness.count > 0
    assert f"{len(report.trainer.decisions)}: {report.trainer.published} published" in text
