"""Worker state in Redis, written atomically with the source offsets it reflects.

Why this design (and not Faust tables): the item statistics aggregate over all users, so they
cannot live on one user's partition. Instead:

- per-user state (history, recent event ids) lives in ``hist:{user}``;
- each batch's item-statistics changes are appended to the ``deltas`` stream;
- the next offset of every source partition lives in the ``offsets`` hash;
- each reviewed item's summary (``summary:{item}``, `models.summary.ItemSummary`) is read, merged
  with the batch's review digests and written back, under ``WATCH`` of those keys (several
  workers' reviews meet on one item: a concurrent merge makes the transaction start again);

and all of these are written in ONE ``MULTI/EXEC`` transaction, guarded by ``WATCH offsets`` so a
zombie worker that lost its partitions cannot commit. On restart, messages below the stored offset
are skipped: each event changes the state exactly once, whatever Kafka redelivers.

Every worker follows the ``deltas`` stream in stream order to keep an in-memory copy of the item
statistics (`models.cooccurrence.ItemCooccurrence`); snapshots of that copy, with the stream id
they reflect, let a starting worker catch up without reading the whole stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from models.cooccurrence import Delta, ItemCooccurrence, UserHistory
from models.summary import ItemSummary, ReviewDigest
from streams.keys import Keys
from streams.metrics import REDIS_WRITE_SECONDS

logger = logging.getLogger(__name__)

SEEN_IDS_CAP = 1_000  # recent event ids kept per user for deduplication


@dataclass(slots=True)
class UserState:
    history: UserHistory = field(default_factory=UserHistory)
    seen: list[str] = field(default_factory=list)  # recent event ids, oldest first
    # when the user was erased (their events up to it are ignored), as read with the history;
    # not part of the JSON: it lives in the ``erased`` hash
    erased_at: float | None = None

    def to_json(self) -> bytes:
        return orjson.dumps({"h": self.history.to_state(), "s": self.seen[-SEEN_IDS_CAP:]})

    @classmethod
    def from_json(cls, raw: bytes | None) -> UserState:
        if raw is None:
            return cls()
        data = orjson.loads(raw)
        return cls(UserHistory.from_state(data["h"]), list(data["s"]))


def offset_field(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class StaleBatch(Exception):
    """Another worker committed these partitions while this one was working: drop the batch."""


class UserErased(Exception):
    """A user of the batch was erased while the batch was computed: compute it again."""


class SnapshotTooLarge(RuntimeError):
    """A snapshot in Redis is over ``max_snapshot_bytes``: refuse to load it."""


def erased_mark(raw: bytes | None) -> float | None:
    return None if raw is None else float(raw)


def load_summary(raw: bytes | None) -> ItemSummary:
    """The summary state stored at ``summary:{item}`` (a fresh one when absent)."""
    if raw is None:
        return ItemSummary()
    return ItemSummary.from_state(orjson.loads(raw)["state"])


def dump_summary(summary: ItemSummary) -> bytes:
    """``summary:{item}``'s value: the rendered summary, and the state it was rendered from."""
    return orjson.dumps({**summary.render(), "state": summary.to_state()})


def delta_entry(deltas: Iterable[Delta],
                item_sentiment: Mapping[str, Sequence[float]] | None = None) -> dict[str, bytes]:
    """The ``deltas`` stream entry of a batch (or an erasure): every follower applies both the
    item-statistics deltas and the items' review sentiment sums (`apply_entry`)."""
    return {"d": orjson.dumps([d.to_json() for d in deltas]),
            "s": orjson.dumps({i: list(v[:2]) for i, v in (item_sentiment or {}).items()})}


class RedisState:
    """Reads and commits worker state; follows the deltas stream into an `ItemCooccurrence`."""

    def __init__(self, client: aioredis.Redis, keys: Keys, items: ItemCooccurrence, *,
                 max_snapshot_bytes: int = 1 << 30) -> None:
        self.client = client
        self.keys = keys
        self.items = items
        self.max_snapshot_bytes = max_snapshot_bytes
        self.last_delta_id = "0-0"
        self._applied_own: set[str] = set()  # ids of our own entries, applied at commit

    # --- per batch ------------------------------------------------------------------------------
    async def next_offsets(self, fields: Iterable[str]) -> dict[str, int]:
        names = list(fields)
        values = await self.client.hmget(self.keys.offsets, names)
        return {f: int(v) if v is not None else 0 for f, v in zip(names, values, strict=False)}

    async def user_states(self, user_ids: Iterable[str]) -> dict[str, UserState]:
        """Histories with their erasure marks, read in one transaction (so an erasure is seen
        either in both or in neither)."""
        users = list(user_ids)
        if not users:
            return {}
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(self.keys.erased, users)
            pipe.mget([self.keys.history(u) for u in users])
            marks, raws = await pipe.execute()
        states = {}
        for user, raw, mark in zip(users, raws, marks, strict=True):
            state = UserState.from_json(raw)
            state.erased_at = erased_mark(mark)
            states[user] = state
        return states

    async def write_users(self, users: Mapping[str, UserState],
                          queue: Callable[[object, str], None]) -> None:
        """Run ``queue(pipeline, user_id)`` for each user in one MULTI/EXEC, leaving out the
        users erased since their state was read (and erased users without new history): a
        write computed from a history that an erasure removed must not bring the user back."""
        names = list(users)
        while True:
            try:
                async with self.client.pipeline(transaction=True) as pipe:
                    await pipe.watch(self.keys.erased)
                    marks = await pipe.hmget(self.keys.erased, names) if names else []
                    pipe.multi()
                    for user_id, raw in zip(names, marks, strict=True):
                        state, mark = users[user_id], erased_mark(raw)
                        if mark == state.erased_at and (mark is None or state.history.items):
                            queue(pipe, user_id)
                    await pipe.execute()
                return
            except WatchError:
                logger.debug("a user was erased during a write; checking the users again")

    async def commit(self, *, expected: Mapping[str, int], offsets: Mapping[str, int],
                     users: Mapping[str, UserState], deltas: list[Delta],
                     dirty: Mapping[tuple[str, int], set[str]],
                     item_sentiment: Mapping[str, list[float]] | None = None,
                     blobs: Mapping[str, bytes] | None = None,
                     erased: Mapping[str, float | None] | None = None,
                     summaries: Mapping[str, Sequence[ReviewDigest]] | None = None) -> None:
        """Write one batch's effects atomically and apply its deltas to the in-memory statistics
        (`follow` skips our own entries). Raises `StaleBatch` if any partition's offset moved
        since ``expected`` was read, `UserErased` if a user's erasure mark is no longer the
        ``erased`` one the batch read."""
        # the offsets hash is shared by all workers: a WatchError caused by another worker
        # committing other partitions is retried; only our own partitions moving is stale
        while True:
            try:
                with REDIS_WRITE_SECONDS.labels("commit").time():
                    results = await self._commit_once(
                        expected=expected, offsets=offsets, users=users, deltas=deltas,
                        dirty=dirty, item_sentiment=item_sentiment, blobs=blobs, erased=erased,
                        summaries=summaries)
                break
            except WatchError:
                logger.debug("offsets changed during commit; checking our partitions")
        if deltas or item_sentiment:
            entry_id = results[-1]
            self._applied_own.add(entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
            self.items.apply_many(deltas)
            for item_id, (count, total, *_) in (item_sentiment or {}).items():
                self.items.add_reviews(item_id, count, total)

    async def _commit_once(self, *, expected: Mapping[str, int], offsets: Mapping[str, int],
                           users: Mapping[str, UserState], deltas: list[Delta],
                           dirty: Mapping[tuple[str, int], set[str]],
                           item_sentiment: Mapping[str, list[float]] | None,
                           blobs: Mapping[str, bytes] | None,
                           erased: Mapping[str, float | None] | None,
                           summaries: Mapping[str, Sequence[ReviewDigest]] | None = None) -> list:
        summary_keys = {item: self.keys.summary(item) for item in sorted(summaries or {})}
        async with self.client.pipeline(transaction=True) as pipe:
            await pipe.watch(self.keys.offsets, self.keys.erased, *summary_keys.values())
            current = await pipe.hmget(self.keys.offsets, list(expected))
            for (name, want), got in zip(expected.items(), current, strict=False):
                if (int(got) if got is not None else 0) != want:
                    raise StaleBatch(f"{name}: expected offset {want}, found {got}")
            if erased:
                marks = await pipe.hmget(self.keys.erased, list(erased))
                for (user_id, seen), mark in zip(erased.items(), marks, strict=True):
                    if erased_mark(mark) != seen:
                        raise UserErased(f"user {user_id} was erased during the batch")
            merged = {}
            if summary_keys:
                stored = await pipe.mget(list(summary_keys.values()))
                for (item, key), raw in zip(summary_keys.items(), stored, strict=True):
                    summary = load_summary(raw)
                    for digest in summaries[item]:  # type: ignore[index]
                        summary.add(digest)
                    merged[key] = dump_summary(summary)
            pipe.multi()
            pipe.hset(self.keys.offsets, mapping={k: str(v) for k, v in offsets.items()})
            for user_id, state in users.items():
                pipe.set(self.keys.history(user_id), state.to_json())
            for (topic, partition), user_ids in dirty.items():
                pipe.sadd(self.keys.users(topic, partition), *user_ids)
            for item_id, (count, total, decayed_sum, decayed_weight) in (
                    item_sentiment or {}).items():
                key = self.keys.item_sentiment(item_id)
                pipe.hincrbyfloat(key, "count", count)
                pipe.hincrbyfloat(key, "sum", total)
                pipe.hincrbyfloat(key, "decayed_sum", decayed_sum)
                pipe.hincrbyfloat(key, "decayed_weight", decayed_weight)
            for key, value in (blobs or {}).items():
                pipe.set(key, value)
            for key, value in merged.items():
                pipe.set(key, value)
            # these partitions' users now await a settle pass (see streams.worker)
            pipe.hdel(self.keys.settled, *expected)
            if deltas or item_sentiment:
                pipe.xadd(self.keys.deltas, delta_entry(deltas, item_sentiment))
            return await pipe.execute()

    # --- the replicated item statistics ----------------------------------------------------------
    async def follow(self, *, block_ms: int | None = None) -> int:
        """Apply every delta committed since the last call, in stream order; return how many
        batches were applied."""
        trimmed_before = await self.client.hget(self.keys.snapshot, "trimmed_before")
        if trimmed_before is not None and _id_tuple(trimmed_before) > _id_tuple(self.last_delta_id):
            logger.warning("deltas after %s were trimmed: reloading the snapshot",
                           self.last_delta_id)
            await self.load_snapshot()
        applied = 0
        while True:
            reply = await self.client.xread({self.keys.deltas: self.last_delta_id}, count=500,
                                            block=block_ms)
            if not reply:
                return applied
            _, entries = reply[0]
            for raw_id, fields in entries:
                entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                if entry_id in self._applied_own:
                    self._applied_own.discard(entry_id)
                else:
                    apply_entry(self.items, fields)
                self.last_delta_id = entry_id
                applied += 1
            block_ms = None

    async def save_snapshot(self) -> None:
        """Store the item statistics with the stream id they reflect, then trim the stream to the
        entries after the previous snapshot: a follower up to one snapshot behind can still catch
        up from the stream; one further behind reloads the snapshot."""
        await self.follow()  # own deltas are applied at commit: catch up so the id covers them
        previous = await self.client.hget(self.keys.snapshot, "delta_id")
        await self.client.hset(self.keys.snapshot, mapping={
            "delta_id": self.last_delta_id, "items": self.items.to_bytes()})
        if previous is not None:
            await self.client.hset(self.keys.snapshot, "trimmed_before", previous)
            await self.client.xtrim(self.keys.deltas, minid=previous.decode(), approximate=False)
        logger.info("snapshot saved at delta %s (%d items)", self.last_delta_id,
                    self.items.n_items)

    async def load_snapshot(self) -> bool:
        """Start from the latest snapshot, if any. The snapshot is read from our own Redis and
        decoded as plain arrays (never unpickled), after its size is checked."""
        size = await self.client.hstrlen(self.keys.snapshot, "items")
        if size > self.max_snapshot_bytes:
            raise SnapshotTooLarge(
                f"the snapshot {self.keys.snapshot} holds {size} bytes, over the "
                f"{self.max_snapshot_bytes}-byte limit (TASTEMAKER_MAX_SNAPSHOT_BYTES)")
        delta_id, blob = await self.client.hmget(self.keys.snapshot, ["delta_id", "items"])
        if blob is None or delta_id is None:
            return False
        self.items.load_bytes(blob)
        self.last_delta_id = delta_id.decode()
        self._applied_own.clear()
        logger.info("snapshot loaded at delta %s (%d items)", self.last_delta_id,
                    self.items.n_items)
        return True


def apply_entry(items: ItemCooccurrence, fields: Mapping[bytes, bytes]) -> None:
    """Apply one ``deltas`` stream entry: item-statistics deltas and review sentiment sums."""
    items.apply_many(Delta.from_json(value) for value in orjson.loads(fields[b"d"]))
    for item_id, (count, total) in orjson.loads(fields.get(b"s", b"{}")).items():
        items.add_reviews(item_id, count, total)


def _id_tuple(stream_id: bytes | str) -> tuple[int, int]:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
