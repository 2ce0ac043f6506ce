"""The README's "one minute with plain clients", run as written: its Python producer (plain
aiokafka, pointed at this test's broker and topic) sends the plays, a real worker processes them,
and Redis holds what the README's ``redis-cli`` session shows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from streams.contract.keys import Keys
from streams.settings import Settings
from streams.tools.supervisor import WorkerProcess
from tests.integration.harness import client, wait_processed, wait_settled

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def block(language: str) -> str:
    """The README's first fenced block in ``language``."""
    found = re.search(rf"```{language}\n(.*?)```", README.read_text(), re.S)
    assert found, f"README.md has no {language} block"
    return found.group(1)


def test_the_readme_minute_gives_what_the_readme_shows(unique_topics: Settings, tmp_path: Path):
    settings = unique_topics
    code = block("python")
    assert code.count('"127.0.0.1:9092"') == 1 and code.count('"plays"') == 1
    code = code.replace('"127.0.0.1:9092"', repr(settings.kafka_bootstrap_servers))
    code = code.replace('"plays"', repr(settings.topic_plays))
    session = block("console")
    shown = re.findall(r'^\d+\) "([^"]+)"$', session, re.M)  # ZREVRANGE ... WITHSCORES
    want_recs = [(shown[k], float(shown[k + 1])) for k in range(0, len(shown), 2)]
    explained = re.search(r'^\$ redis-cli HGET explain:bob (\S+)\n"(.*)"$', session, re.M)
    assert want_recs and explained

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
        wait_processed(settings, 5, [worker])
        wait_settled(settings)
        r, keys = client(settings), Keys(settings.key_prefix)
        recs = [(m.decode(), s) for m, s in r.zrevrange(keys.recs("bob"), 0, 9, withscores=True)]
        assert [m for m, _ in recs] == [m for m, _ in want_recs]
        assert [s for _, s in recs] == pytest.approx([s for _, s in want_recs], rel=1e-9)
        item, shown_json = explained.groups()
        assert json.loads(r.hget(keys.explain("bob"), item)) == json.loads(
            shown_json.replace('\\"', '"'))
    finally:
        worker.stop()
