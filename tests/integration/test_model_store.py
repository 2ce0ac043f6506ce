"""Published ranker versions in the real Redis: immutable, pruned, rolled back by the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson
import pytest

from models.ranker import ArtefactError, RankerMLP, toy_groups
from streams import connections
from streams.contract.keys import Keys
from streams.runtime.model_store import ModelStore
from streams.runtime.trainer import Example, Trainer
from streams.settings import Settings, load_settings
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



def test_a_ranker_over_the_artefact_limit_is_not_published_and_the_trainer_goes_on(
        unique_topics: Settings):
    """The guard passes a fine-tuned ranker whose artefact is over RANKER_MAX_ARTEFACT_BYTES
    (the MLP alone is ~5 KB here): the trainer logs it, records the decision as not published
    with the error, and fits again later; no version number is used up by the refusal."""
    settings = load_settings(**{**unique_topics.model_dump(), "ranker_max_artefact_bytes": 4096,
                                "ranker_factor_items": 10, "trainer_epochs": 15,
                                "trainer_device": "cpu"})
    groups = toy_groups(n_groups=400, seed=8)  # a first model the guard publishes
    width = groups.x.shape[1]
    examples = [Example(f"u{g % 20}", groups.x[g], int(groups.positive[g]),
                        float(groups.ts[g]), tuple(f"i{c}" for c in range(width)), ())
                for g in range(len(groups))]

    async def fit_twice() -> tuple[list, int, bytes | None, list]:
        trainer = Trainer(settings)
        producer = connections.kafka_producer(settings, acks="all")
        await producer.start()
        try:
            trainer.window.update((f"e{n}", e) for n, e in enumerate(examples))
            refused = await trainer.fit(producer)
            after_refusal = await trainer.store.current_version()
            next_version = await trainer.client.get(Keys(settings.key_prefix).ranker_next_version)
            trainer.store.max_bytes = 1 << 20  # an operator raised the limit
            published = await trainer.fit(producer)
            log = await trainer.client.xrange(Keys(settings.key_prefix).trainer_log)
            return ([refused, published], after_refusal, next_version,
                    [fields for _, fields in log if fields[b"kind"] == b"decision"])
        finally:
            await producer.stop()
            await trainer.client.aclose()

    (refused, published), after_refusal, next_version, decisions = asyncio.run(fit_twice())
    assert refused is not None and not refused.published and after_refusal == 0
    assert next_version is None  # the refusal took no version number
    assert decisions[0][b"published"] == b"0"
    assert b"byte limit" in decisions[0][b"error"]
    assert published is not None and published.published
    assert decisions[1][b"published"] == b"1" and b"error" not in decisions[1]
    r = connections.redis_sync(settings)
    assert int(r.get(Keys(settings.key_prefix).ranker_current)) == 1
