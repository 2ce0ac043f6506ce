"""Published ranker versions in Redis: immutable artefacts, a pointer, pruning, rollback.

- ``ranker:artefact:{v}``: the safetensors bytes of version ``v``, written once (``SET NX``);
- ``ranker:versions``: sorted set of published versions by publish time;
- ``ranker:current``: the version workers serve. Workers read it at start and every
  ``ranker_poll_s`` and swap between batches; a version that fails to load is refused and the
  current one stays.

Artefacts are size-checked (``STRLEN``) before they are read and loaded with safetensors, never
unpickled (`models.ranker.from_artefact`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import redis.asyncio as aioredis

from models.ranker import ArtefactError, RankerMLP, from_artefact, to_artefact
from streams.contract.keys import Keys

logger = logging.getLogger(__name__)


_WIDEST_VERSION = 2**63 - 1  # Redis's INCR goes no higher


class ModelStore:
    def __init__(self, client: aioredis.Redis, keys: Keys, *, max_bytes: int, keep: int) -> None:
        self.client = client
        self.keys = keys
        self.max_bytes = max_bytes
        self.keep = keep

    async def current_version(self) -> int:
        """The served version, 0 when none was published."""
        raw = await self.client.get(self.keys.ranker_current)
        return int(raw) if raw is not None else 0

    async def publish(self, model: RankerMLP, metrics: Mapping[str, object]) -> int:
        """Store ``model`` as a new immutable version, point workers at it, prune old ones.
        `ArtefactError` when its artefact is over ``max_bytes``: checked before a version number
        is taken (with the widest one: the artefact holds its version), so none is used up."""
        widest = len(to_artefact(model, version=_WIDEST_VERSION, metrics=metrics))
        if widest > self.max_bytes:
            raise ArtefactError(f"artefact of {widest} bytes is over the {self.max_bytes} "
                                "byte limit (TASTEMAKER_RANKER_MAX_ARTEFACT_BYTES)")
        version = int(await self.client.incr(self.keys.ranker_next_version))
        data = to_artefact(model, version=version, metrics=metrics)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.ranker_artefact(version), data, nx=True)
            pipe.zadd(self.keys.ranker_versions, {str(version): time.time()})
            pipe.set(self.keys.ranker_current, str(version))
            written, *_ = await pipe.execute()
        if not written:
            raise RuntimeError(f"ranker version {version} already existed: not overwritten")
        await self.prune()
        logger.info("published ranker version %d (%d bytes)", version, len(data))
        return version

    async def load(self, version: int) -> tuple[RankerMLP, dict[str, str]]:
        """Load a published version; `ArtefactError` when missing, too large or unusable."""
        key = self.keys.ranker_artefact(version)
        size = await self.client.strlen(key)
        if size == 0:
            raise ArtefactError(f"ranker version {version} has no artefact ({key})")
        if size > self.max_bytes:
            raise ArtefactError(f"ranker version {version} is {size} bytes, over the "
                                f"{self.max_bytes} byte limit")
        return from_artefact(await self.client.get(key), max_bytes=self.max_bytes)

    async def rollback(self, version: int) -> None:
        """Serve ``version`` again (it must still be stored and load cleanly)."""
        await self.load(version)
        await self.client.set(self.keys.ranker_current, str(version))
        logger.info("rolled back to ranker version %d", version)

    async def versions(self) -> list[int]:
        return [int(v) for v in await self.client.zrange(self.keys.ranker_versions, 0, -1)]

    async def prune(self) -> list[int]:
        """Delete all but the ``keep`` newest versions, never the current one."""
        versions = await self.versions()
        current = await self.current_version()
        doomed = [v for v in versions[: max(0, len(versions) - self.keep)] if v != current]
        if doomed:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(*(self.keys.ranker_artefact(v) for v in doomed))
                pipe.zrem(self.keys.ranker_versions, *(str(v) for v in doomed))
                await pipe.execute()
        return doomed
