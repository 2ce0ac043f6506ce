"""Published ranker versions in the real Redis: immutable, pruned, rolled back by the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest

from models.ranker import ArtefactError, RankerMLP
from streams import connections
from streams.contract.keys import Keys
from streams.runtime.model_store import ModelStore
from streams.settings import Settings
from streams.tools.supervisor import ROOT, settings_env
from tests.integration.harness import read_topic

pytestmark = pytest.mark.integration


def test_versions_are_immutable_pruned_and_rolled_back(unique_topics: Settings):
    settings = unique_topics
    keys = Keys(settings.key_prefix)

    async def publish_seven() -> tuple[list[int], list[int], bytes]:
        client = connections.redis_async(settings)
        store = ModelStore(client, keys, max_bytes=settings.ranker_max_artefact_bytes, keep=5)
        try:
            published = [await store.publish(RankerMLP(), {"n": n}) for n in range(7)]
            kept = await store.versions()
            with pytest.raises(ArtefactError, match="no artefact"):
                await store.rollback(published[0])  # pruned
            assert await store.current_version() == published[-1]
            # an artefact is never overwritten, and a corrupt one is refused, not served
            await client.set(keys.ranker_artefact(99), b"not safetensors")
            with pytest.raises(ArtefactError, match="readable"):
                await store.rollback(99)
            return published, kept, await client.get(keys.ranker_artefact(published[3]))
        finally:
            await client.aclose()

    published, kept, artefact = asyncio.run(publish_seven())
    assert kept == published[2:]
    rolled = subprocess.run(
        [sys.executable, "-m", "streams.tools.cli", "trainer", "--rollback", str(published[3])],
        cwd=ROOT, env=settings_env(settings), capture_output=True, text=True, timeout=120)
    assert rolled.returncode == 0, rolled.stderr
    r = connections.redis_sync(settings)
    assert int(r.get(keys.ranker_current)) == published[3]
    assert r.get(keys.ranker_artefact(published[3])) == artefact

    refused = subprocess.run(
        [sys.executable, "-m", "streams.tools.cli", "trainer", "--rollback", str(published[0])],
        cwd=ROOT, env=settings_env(settings), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "no artefact" in refused.stderr
    assert int(r.get(keys.ranker_current)) == published[3]
    announced = asyncio.run(read_topic(settings, settings.topic_model_updates, expected=10**9,
                                       idle_s=3))
    assert [orjson.loads(v)["version"] for _, _, v in announced] == [published[3]]

