"""Worker state in Redis, written atomically with the source offsets it reflects.

Why this design (and not Faust tables): the item statistics aggregate over all users, so they
cannot live on one user's partition. Instead:

- per-user state (history, recent event ids) lives in ``hist:{user}`` (`UserState`, packed
  arrays);
- each batch's item-statistics changes are appended to the ``deltas`` stream as packed arrays
  (`encode_entry`: 12 bytes per co-occurrence pair, no per-pair objects);
- the next offset of every source partition lives in the ``offsets`` hash, its owner in
  ``owners``;
- each reviewed item's summary (``summary:{item}``, `models.summary.ItemSummary`) is read, merged
  with the batch's review digests and written back, under ``WATCH`` of those keys (several
  workers' reviews meet on one item: a concurrent merge makes the transaction start again);

and all of these are written in ONE ``MULTI/EXEC`` transaction (`BatchCommit`), guarded by
``WATCH`` of the offsets and owners: a worker commits only partitions it still owns (a zombie that
lost them is `Fenced`) and only from the offsets it read (else `StaleBatch`: the batch is
computed again from what Redis holds). On restart, messages below the stored offset are skipped:
each event changes the state exactly once, whatever Kafka redelivers.

Every worker follows the ``deltas`` stream in stream order — its own entries included, when it
reaches them — to keep an in-memory copy of the item statistics
(`models.cooccurrence.ItemCooccurrence`): every copy applies the same entries in the same order.
Snapshots of that copy, with the stream id they reflect, let a starting worker catch up without
reading the whole stream; a follower that finds entries it had not read trimmed away reloads the
snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from models.cooccurrence import (
    Delta,
    FrozenStatistics,
    ItemCooccurrence,
    PackedDeltas,
    UserHistory,
)
from models.summary import ItemSummary, ReviewDigest
from streams.contract.keys import Keys
from streams.runtime.metrics import REDIS_WRITE_SECONDS

logger = logging.getLogger(__name__)

SEEN_IDS_CAP = 1_000  # recent event ids kept per user for deduplication
FOLLOW_PAGE = 500  # deltas stream entries read per round trip
_USER_MAGIC = b"TMU1"
_USER_HEADER = struct.Struct("<4sIII")  # magic, items, bytes of item ids, bytes of seen ids


@dataclass(slots=True)
class UserState:
    """A user's history as arrays (items, feedback sums, last times, their decay weights) and
    their recent event ids; stored packed at ``hist:{user}`` (`to_bytes`)."""

    items: list[str] = field(default_factory=list)
    s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    g: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seen: list[str] = field(default_factory=list)  # recent event ids, oldest first
    # when the user was erased (their events up to it are ignored), as read with the history;
    # not stored here: it lives in the ``erased`` hash
    erased_at: float | None = None

    @classmethod
    def of(cls, history: UserHistory, seen: Sequence[str] = ()) -> UserState:
        return cls(*history.to_arrays(), seen=list(seen))

    @property
    def history(self) -> UserHistory:
        return UserHistory.from_arrays(self.items, self.s, self.t, self.g)

    def to_bytes(self) -> bytes:
        """Header, the item ids (JSON), the three float64 arrays, the seen ids (JSON).

        >>> state = UserState(["a", "b"], np.array([1.0, 2.0]), np.array([3.0, 4.0]),
        ...                   np.array([1.0, 1.0]), ["e1"])
        >>> back = UserState.from_bytes(state.to_bytes())
        >>> back.items, back.s.tolist(), back.seen
        (['a', 'b'], [1.0, 2.0], ['e1'])
        """
        names = orjson.dumps(self.items)
        seen = orjson.dumps(self.seen[-SEEN_IDS_CAP:])
        return b"".join((_USER_HEADER.pack(_USER_MAGIC, len(self.items), len(names), len(seen)),
                         names, np.ascontiguousarray(self.s, "<f8").tobytes(),
                         np.ascontiguousarray(self.t, "<f8").tobytes(),
                         np.ascontiguousarray(self.g, "<f8").tobytes(), seen))

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserState:
        """The state stored at ``hist:{user}`` (empty when absent; the JSON of earlier
        versions is read too)."""
        if raw is None:
            return cls()
        if raw[:1] == b"{":  # before issue 13: {"h": [[item, s, t, g], ...], "s": [ids]}
            data = orjson.loads(raw)
            return cls.of(UserHistory.from_state(data["h"]), data["s"])
        magic, n, names_len, seen_len = _USER_HEADER.unpack_from(raw)
        if magic != _USER_MAGIC:
            raise ValueError(f"not a user state: magic {magic!r}")
        at = _USER_HEADER.size
        items = orjson.loads(raw[at:at + names_len])
        at += names_len
        s, t, g = np.frombuffer(raw, "<f8", 3 * n, at).reshape(3, n)
        at += 24 * n
        seen = orjson.loads(raw[at:at + seen_len])
        return cls(items, s.copy(), t.copy(), g.copy(), seen)


def offset_field(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class StaleBatch(Exception):
    """Offsets of the batch's partitions moved since the batch read them (another worker
    committed them in between): compute the batch again from what Redis holds."""


class Fenced(Exception):
    """The worker no longer owns some of the batch's partitions: their messages are left to
    the new owner."""

    def __init__(self, partitions: set[str]) -> None:
        super().__init__(f"partitions owned by another worker now: {sorted(partitions)}")
        self.partitions = partitions


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


# --- the deltas stream's entries ----------------------------------------------------------------
def encode_entry(deltas: PackedDeltas, names: Callable[[np.ndarray], list[str]],
                 item_sentiment: Mapping[str, Sequence[float]] | None = None
                 ) -> dict[str, bytes]:
    """A ``deltas`` stream entry: the item ids the deltas use (JSON, once each), then per
    delta its item (int32 position in those ids), its pair count (int32) and its norm,
    popularity and like mass (3 float64), then per pair the other item (int32) and the
    increment (float64) — 12 bytes per pair; the users' latest liked items and the items'
    review sentiment sums as JSON. ``names`` maps the deltas' item indices to ids.

    >>> items = ItemCooccurrence()
    >>> packed = items.pack([Delta("x", ("y",), (2.0,), 1.0, 1.0)])
    >>> entry = encode_entry(packed, items.names)
    >>> other = ItemCooccurrence()
    >>> other.apply_packed(decode_entry(entry, other))
    >>> other.row("y")
    {'x': 2.0}
    """
    used, position = np.unique(np.concatenate([deltas.item, deltas.other]),
                               return_inverse=True)
    n = len(deltas.item)
    counts = np.diff(deltas.end, prepend=0)
    return {"v": b"2", "n": orjson.dumps(names(used)),
            "i": position[:n].astype("<i4").tobytes(), "c": counts.astype("<i4").tobytes(),
            "f": np.ascontiguousarray(deltas.stat, "<f8").tobytes(),
            "o": position[n:].astype("<i4").tobytes(),
            "x": np.ascontiguousarray(deltas.inc, "<f8").tobytes(),
            "u": orjson.dumps({u: [list(x) for x in v] for u, v in deltas.user_items.items()}),
            "s": orjson.dumps({i: list(v[:2]) for i, v in (item_sentiment or {}).items()})}


def decode_entry(fields: Mapping[bytes | str, bytes], items: ItemCooccurrence) -> PackedDeltas:
    """The deltas of an `encode_entry` entry over ``items``' indices (new ids interned)."""
    get = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}.get
    if get("v") is None:  # an entry written before issue 13: Delta objects as JSON
        return items.pack(Delta.from_json(value) for value in orjson.loads(get("d") or b"[]"))
    local = items.intern_all(orjson.loads(get("n")))
    counts = np.frombuffer(get("c"), "<i4")
    return PackedDeltas(
        local[np.frombuffer(get("i"), "<i4")], np.cumsum(counts, dtype=np.int64),
        np.frombuffer(get("f"), "<f8").reshape(len(counts), 3),
        local[np.frombuffer(get("o"), "<i4")], np.frombuffer(get("x"), "<f8"),
        {u: tuple((i, t) for i, t in v) for u, v in orjson.loads(get("u") or b"{}").items()})


def entry_sentiment(fields: Mapping[bytes | str, bytes]) -> dict[str, list[float]]:
    raw = fields.get(b"s", fields.get("s", b"{}"))  # type: ignore[call-overload]
    return orjson.loads(raw)


def delta_entry(deltas: Iterable[Delta],
                item_sentiment: Mapping[str, Sequence[float]] | None = None) -> dict[str, bytes]:
    """The ``deltas`` stream entry of `Delta` objects (an erasure's)."""
    items = ItemCooccurrence()
    return encode_entry(items.pack(deltas), items.names, item_sentiment)


@dataclass(slots=True)
class BatchCommit:
    """Everything one batch writes, committed in one transaction by `RedisState.commit`."""

    expected: Mapping[str, int]  # next offsets of the batch's partitions, as read before it
    offsets: Mapping[str, int]  # ... and after it
    users: Mapping[str, UserState]  # the histories the batch changed
    deltas: PackedDeltas = field(default_factory=PackedDeltas.empty)
    dirty: Mapping[tuple[str, int], set[str]] = field(default_factory=dict)  # partition -> users
    item_sentiment: Mapping[str, list[float]] = field(default_factory=dict)
    blobs: Mapping[str, bytes] = field(default_factory=dict)  # key -> value, written as is
    erased: Mapping[str, float | None] = field(default_factory=dict)  # erasure marks as read
    summaries: Mapping[str, Sequence[ReviewDigest]] = field(default_factory=dict)

    @property
    def has_entry(self) -> bool:
        return bool(self.deltas) or bool(self.item_sentiment)


class RedisState:
    """Reads and commits worker state; follows the deltas stream into an `ItemCooccurrence`.

    ``owner`` is this worker's id in the ``owners`` hash. With ``claim_on_commit`` (a
    processor driven without a consumer group, as tests do) a partition is claimed the first
    time a batch commits it; a stream worker claims its partitions when Kafka assigns them
    (`claim`) and never otherwise, so that a zombie cannot take them back."""

    def __init__(self, client: aioredis.Redis, keys: Keys, items: ItemCooccurrence, *,
                 owner: str = "", claim_on_commit: bool = True,
                 max_snapshot_bytes: int = 1 << 30) -> None:
        self.client = client
        self.keys = keys
        self.items = items
        self.owner = owner
        self.claim_on_commit = claim_on_commit
        self.claimed: set[str] = set()  # offset fields of the partitions this worker owns
        self.max_snapshot_bytes = max_snapshot_bytes
        self.last_delta_id = "0-0"
        # our own entries, committed but not yet reached by `follow`: id -> (deltas, sentiment)
        self._own: dict[str, tuple[PackedDeltas, Mapping[str, Sequence[float]]]] = {}
        self._snapshot_writes = asyncio.Lock()  # one `write_snapshot` at a time
        self.pairs_since_snapshot = 0  # pair updates applied since the last snapshot taken

    # --- ownership ------------------------------------------------------------------------------
    async def claim(self, fields: Iterable[str]) -> None:
        """Own these partitions from now on: commits of their previous owner are refused."""
        names = sorted(fields)
        if names:
            await self.client.hset(self.keys.owners, mapping=dict.fromkeys(names, self.owner))
        self.claimed |= set(names)

    def release(self, fields: Iterable[str]) -> None:
        """These partitions were revoked: this worker commits them no more (unless claimed
        again)."""
        self.claimed -= set(fields)

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
            state = UserState.from_bytes(raw)
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
                        if mark == state.erased_at and (mark is None or state.items):
                            queue(pipe, user_id)
                    await pipe.execute()
                return
            except WatchError:
                logger.debug("a user was erased during a write; checking the users again")

    async def commit(self, batch: BatchCommit) -> None:
        """Write one batch's effects atomically; its deltas are applied to the in-memory
        statistics when `follow` reaches its entry (in stream order, as every worker applies
        them). Raises `Fenced` if another worker owns some of its partitions now, `StaleBatch`
        if any partition's offset moved since ``batch.expected`` was read, `UserErased` if a
        user's erasure mark is no longer the one the batch read."""
        fields = list(batch.expected)
        if self.claim_on_commit and not self.claimed.issuperset(fields):
            await self.claim(set(fields) - self.claimed)
        # the offsets and owners hashes are shared by all workers: a WatchError caused by
        # another worker committing other partitions is retried; only ours moving is stale
        while True:
            try:
                with REDIS_WRITE_SECONDS.labels("commit").time():
                    results = await self._commit_once(batch)
                break
            except WatchError:
                logger.debug("offsets changed during commit; checking our partitions")
        if batch.has_entry:
            entry_id = results[-1]
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            self._own[entry_id] = (batch.deltas, batch.item_sentiment)

    async def _commit_once(self, batch: BatchCommit) -> list:
        keys = self.keys
        summary_keys = {item: keys.summary(item) for item in sorted(batch.summaries)}
        fields = list(batch.expected)
        async with self.client.pipeline(transaction=True) as pipe:
            await pipe.watch(keys.offsets, keys.owners, keys.erased, *summary_keys.values())
            owners = await pipe.hmget(keys.owners, fields)
            lost = {f for f, o in zip(fields, owners, strict=True)
                    if f not in self.claimed or (o.decode() if o else None) != self.owner}
            if lost:
                raise Fenced(lost)
            current = await pipe.hmget(keys.offsets, fields)
            for (name, want), got in zip(batch.expected.items(), current, strict=True):
                if (int(got) if got is not None else 0) != want:
                    raise StaleBatch(f"{name}: expected offset {want}, found {got}")
            if batch.erased:
                marks = await pipe.hmget(keys.erased, list(batch.erased))
                for (user_id, seen), mark in zip(batch.erased.items(), marks, strict=True):
                    if erased_mark(mark) != seen:
                        raise UserErased(f"user {user_id} was erased during the batch")
            merged = {}
            if summary_keys:
                stored = await pipe.mget(list(summary_keys.values()))
                for (item, key), raw in zip(summary_keys.items(), stored, strict=True):
                    summary = load_summary(raw)
                    for digest in batch.summaries[item]:
                        summary.add(digest)
                    merged[key] = dump_summary(summary)
            pipe.multi()
            pipe.hset(keys.offsets, mapping={k: str(v) for k, v in batch.offsets.items()})
            for user_id, state in batch.users.items():
                pipe.set(keys.history(user_id), state.to_bytes())
            now = time.time()
            for (topic, partition), user_ids in batch.dirty.items():
                if user_ids:
                    pipe.zadd(keys.active(topic, partition), dict.fromkeys(user_ids, now))
            for item_id, (count, total, decayed_sum, decayed_weight) in (
                    batch.item_sentiment.items()):
                key = keys.item_sentiment(item_id)
                pipe.hincrbyfloat(key, "count", count)
                pipe.hincrbyfloat(key, "sum", total)
                pipe.hincrbyfloat(key, "decayed_sum", decayed_sum)
                pipe.hincrbyfloat(key, "decayed_weight", decayed_weight)
            for key, value in {**batch.blobs, **merged}.items():
                pipe.set(key, value)
            # these partitions' users now await a settle pass (see streams.runtime.worker)
            pipe.hdel(keys.settled, *fields)
            if batch.has_entry:
                pipe.xadd(keys.deltas, encode_entry(batch.deltas, self.items.names,
                                                    batch.item_sentiment))
            return await pipe.execute()

    # --- the replicated item statistics ----------------------------------------------------------
    async def follow(self) -> int:
        """Apply every delta committed since the last call, in stream order (our own entries
        too, from memory); return how many entries were applied. Entries trimmed before they
        were read (a snapshot saved meanwhile) make it reload the snapshot and go on from it;
        so does the last entry applied missing from the stream (`reload`: Redis lost writes)."""
        applied = 0
        while True:
            last = self.last_delta_id
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xread({self.keys.deltas: last}, count=FOLLOW_PAGE)
                pipe.hget(self.keys.snapshot, "trimmed_before")
                if last != "0-0":
                    pipe.xrange(self.keys.deltas, min=last, max=last, count=1)
                reply, trimmed_before, *held = await pipe.execute()
            if trimmed_before is not None and _id_tuple(trimmed_before) > _id_tuple(last):
                # entries after the last one applied may have gone before this read
                logger.warning("deltas after %s were trimmed: reloading the snapshot", last)
                if not await self.load_snapshot():
                    raise RuntimeError(f"{self.keys.snapshot} has trimmed_before but no items")
                continue
            if held and not held[0]:
                # not trimmed, yet gone: Redis lost writes it had acknowledged (restored from
                # an older copy, or a machine crash within its fsync interval). What this copy
                # applied since is gone with them; start again from what Redis holds
                logger.warning("Redis no longer holds delta %s, which was applied here: it lost "
                               "committed writes; reloading the item statistics from it", last)
                await self.reload()
                continue
            if not reply:
                return applied
            _, entries = reply[0]
            for raw_id, fields in entries:
                entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                own = self._own.pop(entry_id, None)
                if own is not None:
                    deltas, sentiment = own
                else:
                    deltas, sentiment = decode_entry(fields, self.items), entry_sentiment(fields)
                self.items.apply_packed(deltas)
                self.pairs_since_snapshot += deltas.pairs
                for item_id, (count, total, *_) in sentiment.items():
                    self.items.add_reviews(item_id, count, total)
                self.last_delta_id = entry_id
                applied += 1

    @property
    def following_own(self) -> bool:
        """Whether some of our committed entries were not applied yet (their deltas hold
        interned indices: the items may not be renumbered meanwhile)."""
        return bool(self._own)

    async def take_snapshot(self) -> tuple[str, FrozenStatistics]:
        """A copy of the item statistics with the stream id they reflect: what a caller
        holding the worker lock takes (~17 ms at ML-100K's size), to serialise and write it
        (`write_snapshot`) once it has let go."""
        await self.follow()
        self.pairs_since_snapshot = 0
        return self.last_delta_id, self.items.frozen()

    async def write_snapshot(self, delta_id: str, frozen: FrozenStatistics) -> None:
        """Serialise a `take_snapshot` in a thread (~80 ms at ML-100K's size; the kernel that
        renumbers the rows lets go of the GIL, so the batches go on) and store it unless a
        newer one is stored, then trim the stream to the entries after the previous snapshot:
        a follower up to one snapshot behind can still catch up from the stream; one further
        behind reloads the snapshot. One write at a time: a snapshot taken earlier and written
        later never replaces a newer one, nor goes to a Redis that no longer holds the delta
        it reflects (restored from an older copy in between: its statistics would count
        deltas that are read back from Kafka again)."""
        async with self._snapshot_writes:
            items = await asyncio.to_thread(frozen.to_bytes)
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hget(self.keys.snapshot, "delta_id")
                pipe.xrange(self.keys.deltas, min=delta_id, max=delta_id, count=1)
                previous, held = await pipe.execute()
            if previous is not None and _id_tuple(previous) >= _id_tuple(delta_id):
                return
            if delta_id != "0-0" and not held:  # restored from an older copy since it was taken
                logger.warning("snapshot at delta %s not written: Redis no longer holds that "
                               "delta (it lost committed writes)", delta_id)
                return
            await self.client.hset(self.keys.snapshot, mapping={"delta_id": delta_id,
                                                                 "items": items})
            if previous is not None:
                await self.client.hset(self.keys.snapshot, "trimmed_before", previous)
                await self.client.xtrim(self.keys.deltas, minid=previous.decode(),
                                        approximate=False)
        logger.info("snapshot saved at delta %s (%d bytes)", delta_id, len(items))

    async def reload(self) -> None:
        """Start again from what Redis holds: its snapshot (or nothing), then the stream."""
        if not await self.load_snapshot():
            self.items.clear()
            self.last_delta_id = "0-0"
            self._own.clear()

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
        self.pairs_since_snapshot = 0
        self._own.clear()  # entries after the snapshot are read back from the stream
        logger.info("snapshot loaded at delta %s (%d items)", self.last_delta_id,
                    self.items.n_items)
        return True


def _id_tuple(stream_id: bytes | str) -> tuple[int, int]:
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
