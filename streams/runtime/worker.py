"""What a stream worker does per batch, apart from Faust (`streams.runtime.app` runs it): named
steps that tests can drive one by one.

`EventProcessor.process`: skip what Redis says was already processed; decode and validate (bad
input goes to the dead-letter topic with its reason and source offset) and score the reviews
(`_decode`); load the batch's users and learn the batch on the vectorised core — histories
updated, item-statistics deltas packed, training examples scored in one pass (`_learn`); commit
histories + deltas + offsets as one `streams.runtime.state.BatchCommit` (one Redis transaction,
refused for a partition this worker no longer owns); follow the deltas stream (its own entry
included, in stream order); write the users' top-N with explanations in one transaction.

When the stream has been quiet for ``settle_after_s``, a settle pass recomputes the
recommendations of the owned users active within ``settle_window_s`` from fresh neighbour lists,
so that their lists in Redis are a function of the events alone — the same after a crash, a
rebalance or with more workers. Older users' lists stay as they were last written (issue 19).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception, wait_exponential

from models.cooccurrence import (
    DAY_S,
    CooccurrenceRecommender,
    PackedDeltas,
    decay_factor,
)
from models.feedback import FeedbackWeights
from models.ranker import ArtefactError
from models.summary import ReviewDigest
from streams.connections import write_pipelined
from streams.contract.dlq import dead_letter
from streams.contract.events import (
    Event,
    RejectedEvent,
    Review,
    check_event_key,
    decode_event,
    kind_of_topic,
    latest_event_ts,
)
from streams.contract.keys import Keys
from streams.runtime.learning import CooccurrenceConfig, event_feedback
from streams.runtime.metrics import (
    BATCH_SECONDS,
    DUPLICATES,
    EVENTS,
    FRESHNESS,
    RANKER_EXAMPLES,
    RANKER_VERSION,
    REDIS_WRITE_SECONDS,
    REJECTS,
)
from streams.runtime.model_store import ModelStore
from streams.runtime.ranking import Ranking, choice_id, sampled
from streams.runtime.sentiment import ReviewSentiments
from streams.runtime.state import (
    BatchCommit,
    Fenced,
    RedisState,
    StaleBatch,
    UserErased,
    UserState,
    offset_field,
)
from streams.settings import Settings

logger = logging.getLogger(__name__)

COMPACT_MIN_ITEMS = 4096  # empty items worth renumbering the statistics for
SETTLE_USERS_PER_STEP = 200  # users the settle pass re-ranks per hold of the lock
ITEM_LIST_ENTRIES_PER_STEP = 25_000  # neighbour-list entries written per settle call
RETRYABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def _log_failure(task: asyncio.Task) -> None:
    """A background write's error, logged (outages are retried inside it)."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("a background write failed", exc_info=task.exception())


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is an outage that passes, to be retried rather than crash the worker:
    Redis or the network unreachable (`RETRYABLE`), a Kafka error its client marks retriable
    (a dead letter sent while the broker is away fails with `UnknownTopicOrPartitionError` when
    the producer has no metadata yet), or a produce that timed out (`KafkaTimeoutError`, which
    aiokafka does not mark retriable)."""
    if isinstance(exc, (*RETRYABLE, KafkaTimeoutError)):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """What the worker needs of one Kafka record."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: float = 0.0  # Kafka record timestamp, seconds
    key: bytes | None = None

    @classmethod
    def of(cls, message: object) -> SourceMessage:
        """From a Faust message (its timestamp in seconds)."""
        ts = getattr(message, "timestamp", None) or 0.0
        return cls(message.topic, message.partition, message.offset,  # type: ignore[attr-defined]
                   message.value, float(ts), message.key)  # type: ignore[attr-defined]

    @classmethod
    def of_record(cls, record: object) -> SourceMessage:
        """From an aiokafka record (its timestamp in milliseconds)."""
        ts = getattr(record, "timestamp", None) or 0
        return cls(record.topic, record.partition, record.offset,  # type: ignore[attr-defined]
                   record.value, ts / 1000, record.key)  # type: ignore[attr-defined]


#: Reads from Kafka the messages of each (topic, partition) from offset ``start`` up to, not
#: including, ``stop``, at most ``limit`` in all, in offset order per partition.
Reread = Callable[[dict[tuple[str, int], tuple[int, int]], int],
                  Awaitable[list[SourceMessage]]]


class MissedMessages(Exception):
    """A batch starts past the offsets Redis holds for some of its partitions: Kafka's
    consumer moved on from messages whose effects Redis no longer has (it lost acknowledged
    writes), or the gap holds only transaction markers. ``gaps``: (topic, partition) ->
    (Redis's next offset, the batch's first offset)."""

    def __init__(self, gaps: dict[tuple[str, int], tuple[int, int]]) -> None:
        super().__init__(f"batch starts past the committed offsets: {gaps}")
        self.gaps = gaps


@dataclass(slots=True)
class BatchReport:
    processed: int = 0
    rejected: int = 0
    duplicates: int = 0
    skipped: int = 0  # already processed before (redelivery after a crash or rebalance)
    erased: int = 0  # events of erased users, from before their erasure (`streams.runtime.erasure`)
    users: int = 0
    reread: int = 0  # messages read back from Kafka that Redis had lost (`MissedMessages`)

    def add(self, other: BatchReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(slots=True)
class Decoded:
    """A batch's messages decoded: valid events, rejected ones, the reviews' scores."""

    events: list[tuple[SourceMessage, Event]] = field(default_factory=list)
    rejected: list[tuple[SourceMessage, RejectedEvent]] = field(default_factory=list)
    scores: dict[int, tuple[float, ReviewDigest]] = field(default_factory=dict)  # by id(event)


@dataclass(slots=True)
class Learned:
    """What learning a batch made (`EventProcessor._learn`)."""

    model: CooccurrenceRecommender  # the batch's users' histories, updated
    deltas: PackedDeltas = field(default_factory=PackedDeltas.empty)
    touched: dict[str, tuple[float, float]] = field(default_factory=dict)  # user -> (ts, kafka ts)
    dirty: dict[tuple[str, int], set[str]] = field(default_factory=lambda: defaultdict(set))
    item_sentiment: dict[str, list[float]] = field(default_factory=dict)  # count, sum, decayed
    summaries: dict[str, list[ReviewDigest]] = field(default_factory=lambda: defaultdict(list))
    examples: list[dict] = field(default_factory=list)


@dataclass(slots=True)
class EventProcessor:
    """Everything a worker does per batch, independent of Faust (so tests can drive it)."""

    settings: Settings
    client: aioredis.Redis
    producer: AIOKafkaProducer
    state: RedisState = field(init=False)
    sentiments: ReviewSentiments = field(init=False)
    keys: Keys = field(init=False)
    weights: FeedbackWeights = field(init=False)
    config: CooccurrenceConfig = field(init=False)  # the co-occurrence parameters, built once
    ranking: Ranking = field(init=False)
    store: ModelStore = field(init=False)
    # unique per process (a restarted container has the same host name and pid)
    worker_id: str = field(default_factory=lambda: (
        f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"))
    # a stream worker claims the partitions Kafka assigns it (`claim`); without a consumer
    # group (tests drive the processor directly) a partition is claimed by its first commit
    claims_on_assignment: bool = False
    # reads back what Kafka's consumer moved past but Redis lost (`MissedMessages`); without
    # it (a processor driven directly) a batch's gaps are taken as transaction markers
    reread: Reread | None = None
    # per (topic, partition): the offset after the last message the consumer delivered
    consumed: dict[tuple[str, int], int] = field(default_factory=dict)
    refused_versions: set[int] = field(default_factory=set)
    catalogue_upto: int = 0  # item statistics' items whose metadata was looked up
    dropped_items: set[str] = field(default_factory=set)  # compacted away: lists to delete
    lists_to_write: set[str] = field(default_factory=set)  # item lists the writer owes
    lists_pending: bool = False  # the item lists of the last settled statistics are not all out
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    snapshot_write: asyncio.Task | None = None  # `maybe_snapshot`'s write under way, if any
    last_batch_at: float = 0.0
    settled_at: tuple[str, list[tuple[str, int]]] = ("", [])  # delta id and partitions settled
    batches_since_snapshot: int = 0
    started: bool = False
    unsettled: bool = False  # recommendations were written since the last settle pass

    def __post_init__(self) -> None:
        s = self.settings
        self.keys = Keys(s.key_prefix)
        self.weights = s.feedback_weights()
        self.config = CooccurrenceConfig.of(s)
        self.state = RedisState(self.client, self.keys, self.config.model().items,
                                owner=self.worker_id,
                                claim_on_commit=not self.claims_on_assignment,
                                max_snapshot_bytes=s.max_snapshot_bytes)
        self.sentiments = ReviewSentiments(s, self.keys)
        self.ranking = Ranking(s)
        self.store = ModelStore(self.client, self.keys, max_bytes=s.ranker_max_artefact_bytes,
                                keep=s.ranker_keep_versions)

    async def start(self) -> None:
        """Load the latest snapshot and catch up with the deltas stream, once."""
        async with self.lock:  # the agent and the settle timer may both ask first
            if self.started:
                return
            await self._retrying(self.state.load_snapshot)
            await self._retrying(self.state.follow)
            self.started = True
        await self.maybe_swap()

    # --- per batch ------------------------------------------------------------------------------
    async def process(self, messages: Sequence[SourceMessage]) -> BatchReport:
        """Process one batch; retries Redis/Kafka outages until they pass (never drops a batch).
        A batch whose offsets moved meanwhile (`StaleBatch`) is computed again from what Redis
        holds; messages of partitions another worker owns now (`Fenced`) are left to it. A
        batch that starts past the offsets Redis holds (`MissedMessages`: Redis lost writes
        the consumer had moved past) is preceded by the messages in between, read back from
        Kafka (`reread`) and processed first: the offsets kept with the state, not the
        consumer's, decide what is processed."""
        await self.start()
        async with self.lock:
            for m in messages:
                key = (m.topic, m.partition)
                self.consumed[key] = max(self.consumed.get(key, 0), m.offset + 1)
            with BATCH_SECONDS.time():
                report = BatchReport()
                allow_gaps = self.reread is None
                while True:
                    try:
                        report.add(await self._process_batch(messages, allow_gaps=allow_gaps))
                        break
                    except MissedMessages as exc:
                        if not await self._replay(exc.gaps, report):
                            allow_gaps = True  # transaction markers, or records gone
            self.last_batch_at = time.monotonic()
            return report

    async def repair(self) -> BatchReport:
        """Process what Redis lost behind the consumer (`MissedMessages`) when no batch comes
        to show it: Redis restored from an older copy on a quiet stream. Compares the offsets
        Redis holds with those this worker's consumer delivered, and replays the difference
        from Kafka. Called by a timer; a no-op without ``reread`` or with nothing lost."""
        report = BatchReport()
        if self.reread is None or not self.consumed:
            return report
        await self.start()
        async with self.lock:
            while True:
                names = {offset_field(*key): key for key in self.consumed}
                nexts = await self._retrying(self.state.next_offsets, names)
                gaps = {key: (nexts[name], self.consumed[key]) for name, key in names.items()
                        if nexts[name] < self.consumed[key]}
                if not gaps or not await self._replay(gaps, report):
                    break
            if report.processed or report.rejected:
                self.last_batch_at = time.monotonic()
        return report

    async def _replay(self, gaps: dict[tuple[str, int], tuple[int, int]],
                      report: BatchReport) -> bool:
        """Read back from Kafka up to ``batch_size`` messages of the ``gaps`` and process
        them; whether any was committed (none read, or all left to another worker: no)."""
        assert self.reread is not None
        missing = await self._retrying(self.reread, gaps, self.settings.batch_size)
        if not missing:
            return False
        logger.warning("Redis holds no effects of %d messages the consumer is past (offsets "
                       "from, to: %s): it lost committed writes; reading them back from Kafka",
                       len(missing), gaps)
        replayed = await self._process_batch(missing, allow_gaps=True)
        replayed.reread = len(missing)
        report.add(replayed)
        return replayed.skipped < len(missing)

    async def _process_batch(self, messages: Sequence[SourceMessage], *, allow_gaps: bool
                             ) -> BatchReport:
        """`_process` until it commits or leaves the messages to another worker."""
        skipped = 0
        while True:
            try:
                report = await self._retrying(self._process, messages, allow_gaps=allow_gaps)
                break
            except UserErased as exc:  # recompute without the erased history
                logger.info("%s; processing the batch again", exc)
            except StaleBatch as exc:
                logger.warning("%s; processing the batch again", exc)
            except Fenced as exc:
                logger.warning("%s: leaving their messages to it", exc)
                kept = [m for m in messages
                        if offset_field(m.topic, m.partition) not in exc.partitions]
                skipped += len(messages) - len(kept)
                messages = kept
                for key in [k for k in self.consumed if offset_field(*k) in exc.partitions]:
                    del self.consumed[key]
        report.skipped += skipped
        return report

    async def claim(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Kafka assigned these partitions to this worker: own them in Redis (fencing off the
        previous owner), after the batch in flight."""
        async with self.lock:
            await self._retrying(self.state.claim, [offset_field(t, p) for t, p in partitions])

    def note_consumed(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """The consumer is past these offsets (the group's committed ones, on assignment):
        what Redis lacks before them, `repair` reads back from Kafka."""
        for key, offset in offsets.items():
            self.consumed[key] = max(self.consumed.get(key, 0), offset)

    def release(self, partitions: Iterable[tuple[str, int]]) -> None:
        partitions = list(partitions)
        self.state.release(offset_field(t, p) for t, p in partitions)
        for key in partitions:
            self.consumed.pop(key, None)

    async def _process(self, messages: Sequence[SourceMessage], *, allow_gaps: bool = True
                       ) -> BatchReport:
        report = BatchReport()
        if not messages:
            return report
        self._maybe_compact()
        expected = await self.state.next_offsets(
            {offset_field(m.topic, m.partition) for m in messages})
        if not allow_gaps:
            first: dict[tuple[str, int], int] = {}
            for m in messages:
                key = (m.topic, m.partition)
                first[key] = min(first.get(key, m.offset), m.offset)
            gaps = {key: (expected[offset_field(*key)], offset)
                    for key, offset in first.items() if offset > expected[offset_field(*key)]}
            if gaps:
                raise MissedMessages(gaps)
        fresh = [m for m in messages if m.offset >= expected[offset_field(m.topic, m.partition)]]
        report.skipped = len(messages) - len(fresh)
        if not fresh:
            return report
        decoded = await self._decode(fresh, expected)
        events, rejected = decoded.events, decoded.rejected
        users = await self.state.user_states({e.user_id for _, e in events})
        await self._drop_evicted(users)
        await self._refresh_catalogue({e.item_id for _, e in events})
        batch = self._learn(events, decoded.scores, users, report)

        offsets = dict(expected)
        for m in fresh:
            name = offset_field(m.topic, m.partition)
            offsets[name] = max(offsets[name], m.offset + 1)
        if rejected:
            await self._send_dead_letters(rejected)
        if batch.examples:  # at-least-once, like the DLQ: the trainer drops repeats by example id
            await self._send_examples(batch.examples)
        review_partitions = {m.partition for m in fresh
                             if m.topic == self.settings.topic_reviews}
        commit = BatchCommit(
            expected=expected, offsets=offsets,
            users={u: users[u] for u in batch.touched}, deltas=batch.deltas,
            dirty=batch.dirty, item_sentiment=batch.item_sentiment, summaries=batch.summaries,
            blobs=self.sentiments.snapshots_due(review_partitions),
            erased={u: s.erased_at for u, s in users.items()})
        try:
            await self.state.commit(commit)
        except (StaleBatch, Fenced, UserErased):
            for partition in review_partitions:  # reloaded by the next batch that has them
                self.sentiments.models.pop(partition, None)
            raise
        await self.state.follow()
        await self._refresh_catalogue(())
        # recommendations written now use neighbour lists up to 10% stale: the next settle pass
        # must recompute them, even if no statistics changed (commit cleared the settled marks)
        self.unsettled = True
        await self._write_recommendations(batch.model, {u: users[u] for u in batch.touched},
                                          batch.touched)

        for m, _ in events:
            EVENTS.labels(m.topic).inc()
        for _, exc in rejected:
            REJECTS.labels(exc.code).inc()
        DUPLICATES.inc(report.duplicates)
        report.rejected = len(rejected)
        report.users = len(batch.touched)
        self.batches_since_snapshot += 1
        return report

    async def _decode(self, fresh: Sequence[SourceMessage], expected: Mapping[str, int]
                      ) -> Decoded:
        """Decode and validate the messages (bad ones become dead letters); score the reviews
        with their partition's sentiment model, in offset order."""
        reviews_topic = self.settings.topic_reviews
        for partition in sorted({m.partition for m in fresh if m.topic == reviews_topic}):
            await self.sentiments.ensure(self.client, partition,
                                         expected[offset_field(reviews_topic, partition)])
        out = Decoded()
        reviews: dict[int, list[tuple[int, Review]]] = defaultdict(list)  # partition -> ...
        last: dict[int, int] = {}  # the batch's last offset of each reviews partition
        for m in fresh:
            try:
                event = decode_event(self._kind(m.topic), m.value,
                                     max_bytes=self.settings.max_message_bytes,
                                     not_after=latest_event_ts(
                                         m.timestamp,
                                         max_future_s=self.settings.max_event_future_s))
                if self.settings.key_guard:
                    check_event_key(event, m.key)
            except RejectedEvent as exc:
                out.rejected.append((m, exc))
                event = None
            if m.topic == reviews_topic:
                last[m.partition] = m.offset
                if isinstance(event, Review):
                    reviews[m.partition].append((m.offset, event))
            if event is not None:
                out.events.append((m, event))
        for partition, offset in last.items():
            # every valid review of the partition, in offset order, duplicates too: the
            # model's history must be the partition's log, as when it is re-learned
            scored = self.sentiments.score_many(partition, reviews[partition])
            for (_, review), score in zip(reviews[partition], scored, strict=True):
                out.scores[id(review)] = score
            self.sentiments.skip(partition, offset)  # past invalid messages at the end too
        return out

    def _learn(self, events: Sequence[tuple[SourceMessage, Event]],
               scores: Mapping[int, tuple[float, ReviewDigest]], users: dict[str, UserState],
               report: BatchReport) -> Learned:
        """The batch's effect: its users' histories updated (in ``users``), the deltas to the
        item statistics, the review aggregates and the training examples."""
        s = self.settings
        out = Learned(self.config.batch_model(self.state.items, users))
        learned: list[tuple[str, str, float, float]] = []
        snapshot: list[bool] = []
        chosen: list[tuple[str, str, float]] = []
        choices: set[str] = set()  # a play, its rating and its review: one choice, one example
        seen = {u: set(state.seen) for u, state in users.items()}
        for m, event in events:
            user = users[event.user_id]
            if user.erased_at is not None and event.ts <= user.erased_at:
                report.erased += 1
                continue
            event_id = event.dedup_id()
            if event_id in seen[event.user_id]:
                report.duplicates += 1
                continue
            seen[event.user_id].add(event_id)
            user.seen.append(event_id)
            scored = scores.get(id(event))
            p_positive = scored[0] if scored is not None else None
            if scored is not None:
                out.summaries[event.item_id].append(scored[1])
                g = self._decay(event.ts)
                agg = out.item_sentiment.setdefault(event.item_id, [0.0, 0.0, 0.0, 0.0])
                agg[0] += 1.0
                agg[1] += p_positive
                agg[2] += p_positive * g
                agg[3] += g
            weight = event_feedback(event, self.weights, p_positive=p_positive,
                                    review_feedback=s.review_feedback)
            sample = False
            if weight > 0 and s.ranker_example_rate > 0:
                choice = choice_id(event.user_id, event.item_id, event.ts)
                sample = choice not in choices and sampled(choice, s.ranker_example_rate)
                if sample:
                    choices.add(choice)
                    chosen.append((event.user_id, event.item_id, event.ts))
            learned.append((event.user_id, event.item_id, weight, event.ts))
            snapshot.append(sample)
            out.dirty[(m.topic, m.partition)].add(event.user_id)
            out.touched[event.user_id] = (event.ts, m.timestamp)
            report.processed += 1
        out.deltas, snapshots = out.model.observe_many(learned, snapshot)
        if chosen:
            out.examples = self.ranking.examples(out.model, snapshots, chosen)
        for user_id in out.touched:
            state = users[user_id]
            state.items, state.s, state.t, state.g = out.model.history_arrays(user_id)
        return out

    def _kind(self, topic: str) -> str:
        s = self.settings
        kind = kind_of_topic(topic, plays=s.topic_plays, ratings=s.topic_ratings,
                             reviews=s.topic_reviews)
        return kind or topic  # decode_event rejects an unknown topic with its name

    def _decay(self, ts: float) -> float:
        return decay_factor(ts, half_life_s=self.settings.half_life_days * DAY_S,
                            epoch=self.settings.decay_epoch)

    async def _send_dead_letters(self, rejected: list[tuple[SourceMessage, RejectedEvent]]
                                 ) -> None:
        now = time.time()
        futures = [
            await self.producer.send(
                self.settings.topic_dlq,
                dead_letter(m.value, topic=m.topic, partition=m.partition, offset=m.offset,
                            reason=exc.reason, code=exc.code, rejected_at=now),
            )
            for m, exc in rejected
        ]
        await asyncio.gather(*futures)
        for m, exc in rejected:
            logger.info("rejected %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc.reason)

    async def _send_examples(self, examples: list[dict]) -> None:
        encode = self.ranking.encode_example
        futures = [await self.producer.send(self.settings.topic_ranker_examples, encode(e),
                                            key=e["user_id"].encode())
                   for e in examples]
        await asyncio.gather(*futures)
        RANKER_EXAMPLES.inc(len(examples))

    async def _refresh_catalogue(self, item_ids: Iterable[str]) -> None:
        """Look up the genres of items not looked up yet (``item:{id}`` hashes, when the
        catalogue was written): the ranker's genre feature. Each item is looked up once."""
        known = self.state.items.item_ids()[self.catalogue_upto:]
        wanted = sorted({*known, *item_ids} - self.ranking.catalogue.keys())
        self.catalogue_upto += len(known)
        if not wanted:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for item_id in wanted:
                pipe.hget(self.keys.item(item_id), "genres")
            found = await pipe.execute()
        self.ranking.learn_catalogue({
            item_id: (raw.decode().split() if raw else ())
            for item_id, raw in zip(wanted, found, strict=True)})

    # --- the ranker -----------------------------------------------------------------------------
    async def maybe_swap(self) -> int:
        """Serve the published ranker version if it changed: load and check it outside the lock,
        then swap between batches. A version that fails to load is refused (logged once) and
        the current one stays. Returns the version served."""
        try:
            version = await self.store.current_version()
        except RETRYABLE as exc:
            logger.warning("cannot read the ranker version (%s); keeping version %d", exc,
                           self.ranking.version)
            return self.ranking.version
        if version == self.ranking.version or version in self.refused_versions:
            return self.ranking.version
        model = None
        if version:
            try:
                model, _ = await self.store.load(version)
            except RETRYABLE as exc:  # the next poll tries again
                logger.warning("cannot load ranker version %d (%s); keeping version %d",
                               version, exc, self.ranking.version)
                return self.ranking.version
            except ArtefactError as exc:
                self.refused_versions.add(version)
                logger.error("refusing ranker version %d: %s; still serving version %d",
                             version, exc, self.ranking.version)
                return self.ranking.version
        async with self.lock:
            previous = self.ranking.version
            self.ranking.model, self.ranking.version = model, version
            self.unsettled = True  # the settle pass re-ranks the active users with it
        RANKER_VERSION.set(version)
        await self._retrying(self.client.hset, self.keys.ranker_serving, self.worker_id,
                             orjson.dumps({"version": version, "since": time.time()}))
        logger.info("serving ranker version %d (was %d)", version, previous)
        return version

    # --- recommendations ------------------------------------------------------------------------
    async def _write_recommendations(self, model: CooccurrenceRecommender,
                                     users: dict[str, UserState],
                                     touched: dict[str, tuple[float, float]] | None = None
                                     ) -> None:
        """Rewrite the users' top-N from their histories in ``model``."""
        keys = self.keys
        lists = self.ranking.top_model(model, users)
        ttl_ms = int(self.settings.recs_ttl_s * 1000)

        def queue(pipe, user_id: str) -> None:  # a redis pipeline
            recs = lists[user_id]
            pipe.delete(keys.recs(user_id), keys.explain(user_id))
            if recs:
                pipe.zadd(keys.recs(user_id), {r.item_id: r.score for r in recs})
                pipe.hset(keys.explain(user_id), mapping={
                    r.item_id: orjson.dumps({"because": list(r.because), "source": r.source})
                    for r in recs})
            meta = {"updated_at": time.time(),
                    "model": str(self.ranking.version) if self.ranking.version else "none"}
            if touched and user_id in touched:
                meta["event_ts"] = touched[user_id][0]
            pipe.hset(keys.recs_meta(user_id), mapping=meta)
            if ttl_ms:
                for key in (keys.recs(user_id), keys.explain(user_id), keys.recs_meta(user_id)):
                    pipe.pexpire(key, ttl_ms)

        # one MULTI/EXEC: a reader never sees a user's list without its explanations; users
        # erased meanwhile are left out
        with REDIS_WRITE_SECONDS.labels("recommendations").time():
            await self.state.write_users(users, queue)
        if touched:
            now = time.time()
            for _, kafka_ts in touched.values():
                if kafka_ts > 0:
                    FRESHNESS.observe(max(0.0, now - kafka_ts))

    # --- settling -------------------------------------------------------------------------------
    async def settle(self, assigned: Iterable[tuple[str, int]], *, writes_items: bool,
                     backlog: Callable[[], Awaitable[bool]] | None = None) -> int:
        """If the stream was quiet for ``settle_after_s`` and the item statistics changed since
        the last settle, recompute the recommendations of the owned users active within
        ``settle_window_s`` from fresh neighbour lists; then (``writes_items``) write the item
        lists that changed. ``backlog`` (when given) says whether events are still waiting in
        Kafka: then it is a pause, not quiet, and the pass waits. Returns the number of users
        rewritten.

        The pass takes the worker lock in bounded steps — `SETTLE_USERS_PER_STEP` users, then
        at most `ITEM_LIST_ENTRIES_PER_STEP` neighbour-list entries per call — so a batch or a
        rebalance never waits long behind it. A batch that comes in between makes the users'
        part start again at the next quiet moment; item lists left over are written by the next
        calls. The partitions are marked settled when both are done; the statistics' snapshot
        that follows is copied under the lock and serialised and written after it."""
        if time.monotonic() - self.last_batch_at < self.settings.settle_after_s:
            return 0
        await self.start()
        assigned = sorted(assigned)
        async with self.lock:
            await self._retrying(self.state.follow)
            users_due = (self.unsettled
                         or (self.state.last_delta_id, assigned) != self.settled_at)
            if not users_due and not (writes_items and self.lists_pending):
                return 0
            if backlog is not None and await backlog():
                return 0
            marker = self._settle_marker()
            users: list[str] = []
            if users_due:
                await self._refresh_catalogue(())
                self._maybe_compact()
                # every neighbour list read from now on is computed afresh: the lists written
                # are a function of the statistics alone
                self.state.items.invalidate_lists()
                users = await self._retrying(self._active_users, assigned)
        for start in range(0, len(users), SETTLE_USERS_PER_STEP):
            async with self.lock:
                if self._settle_marker() != marker:  # a batch or a ranker swap came in:
                    return start  # the next quiet moment starts again
                states = await self._retrying(
                    self.state.user_states, users[start:start + SETTLE_USERS_PER_STEP])
                model = self.config.batch_model(self.state.items, states)
                await self._retrying(self._write_recommendations, model, states)
        snapshot = None
        async with self.lock:
            if self._settle_marker() != marker:
                return len(users)
            if users_due:
                self.settled_at = (marker[1], assigned)
                self.unsettled = False
                self.lists_pending = writes_items
                logger.info("settled %d users at delta %s", len(users), marker[1])
            if writes_items and self.lists_pending:
                if not await self._retrying(self._write_item_lists):
                    return len(users)
                snapshot = await self._retrying(self.state.take_snapshot)
                self.batches_since_snapshot = 0
                self.lists_pending = False
            if assigned:
                await self._retrying(self.client.hset, self.keys.settled, None, None, {
                    offset_field(t, p): marker[1] for t, p in assigned})
        if snapshot is not None:  # serialised and written with the lock let go
            await self._retrying(self.state.write_snapshot, *snapshot)
        return len(users)

    def _settle_marker(self) -> tuple[float, str, int]:
        """What a settle pass's lists depend on besides the statistics' entries: a pass that
        sees it change before it ends (a batch, a ranker swap) leaves the users unsettled."""
        return self.last_batch_at, self.state.last_delta_id, self.ranking.version

    async def _active_users(self, assigned: list[tuple[str, int]]) -> list[str]:
        """The users of these partitions with an event within ``settle_window_s``; the older
        ones leave the partitions' ``active`` sets."""
        since = time.time() - self.settings.settle_window_s
        async with self.client.pipeline(transaction=False) as pipe:
            for topic, partition in assigned:
                key = self.keys.active(topic, partition)
                pipe.zremrangebyscore(key, "-inf", f"({since}")
                pipe.zrange(key, since, "+inf", byscore=True)
            replies = await pipe.execute()
        return sorted({u.decode() for members in replies[1::2] for u in members})

    async def _write_item_lists(self) -> bool:
        """Write the neighbour lists of items whose statistics changed (deleting those of
        items that left), at most `ITEM_LIST_ENTRIES_PER_STEP` entries a call, and the trending
        list (written by one worker). Returns whether none is left."""
        items, keys = self.state.items, self.keys
        self.lists_to_write.update(items.take_changed())
        self.lists_to_write.update(self.dropped_items)
        self.dropped_items.clear()
        budget = ITEM_LIST_ENTRIES_PER_STEP
        commands: list[tuple] = []
        while self.lists_to_write and budget > 0:
            chunk = [self.lists_to_write.pop() for _ in range(min(len(self.lists_to_write), 256))]
            lengths, ids, sims = items.neighbours_flat(chunk)
            commands.append(("DEL", *map(keys.neighbours, chunk)))
            at = 0
            for item_id, n in zip(chunk, lengths, strict=True):
                if n:  # ZADD key score member score member ...
                    pairs: list = [None] * (2 * n)
                    pairs[0::2], pairs[1::2] = sims[at:at + n], ids[at:at + n]
                    commands.append(("ZADD", keys.neighbours(item_id), *pairs))
                    at += n
                budget -= 1 + n
        commands.append(("DEL", keys.trending))
        trending = items.trending(self.settings.top_n)
        if trending:
            commands.append(("ZADD", keys.trending,
                             *itertools.chain.from_iterable((s, i) for i, s in trending)))
        await write_pipelined(self.client, commands)
        return not self.lists_to_write

    async def _drop_evicted(self, users: Mapping[str, UserState]) -> None:
        """Take out of the users' histories the liked items the cap evicted from the
        statistics (`models.cooccurrence.ItemCooccurrence`): what they held of them is gone.
        Follows the stream first, so that the statistics are at least as new as the histories
        (committed with their entries)."""
        items = self.state.items
        if not items.max_items:
            return
        await self.state.follow()
        lookup = items.live_lookup()
        for state in users.values():
            if state.items:
                keep = items.held(state.items, state.s, lookup)
                if not keep.all():
                    state.items = [i for i, k in zip(state.items, keep.tolist(), strict=True)
                                   if k]
                    state.s, state.t, state.g = state.s[keep], state.t[keep], state.g[keep]

    def _maybe_compact(self) -> None:
        """Renumber the item statistics without their empty items once those are a quarter of
        the live ones (`ItemCooccurrence.compact`; scores do not change): between batches, when
        no interned index is held."""
        items = self.state.items
        live, indexed = items.n_live, items.n_users_indexed
        if self.state.following_own or (
                items.n_items - live < max(COMPACT_MIN_ITEMS, live // 4)
                and items.n_unindexed_users < max(COMPACT_MIN_ITEMS, indexed // 4)):
            return
        dropped = items.compact()
        self.dropped_items.update(dropped)
        for item_id in dropped:
            self.ranking.catalogue.pop(item_id, None)
        self.catalogue_upto = items.n_items
        logger.info("compacted the item statistics: %d empty items dropped, %d left",
                    len(dropped), items.n_items)

    async def maybe_snapshot(self, *, owner: bool) -> None:
        """A snapshot of the statistics (by the worker that writes item-wide keys) once
        ``snapshot_every_batches`` batches have passed and the stream holds, since the last one,
        at least as many pair updates as the statistics hold entries: reading the stream back
        then costs about what loading a snapshot does, and a large state under a high rate is
        not rewritten every few seconds (ML-100K's statistics, 17 MB, were rewritten every 2.5 s
        at 2,000 events/s). Copied under the lock (~17 ms at ML-100K's size), serialised in a
        thread and written to Redis by a task of its own while the next batches go on (the
        write, ~90 ms, and then the serialising, ~100 ms, under the lock made the slowest 1% of
        events at that rate: `bench.freshness`); one write at a time."""
        if not owner or self.batches_since_snapshot < self.settings.snapshot_every_batches or (
                self.snapshot_write is not None and not self.snapshot_write.done()) or (
                self.state.pairs_since_snapshot < self.state.items.n_entries()):
            return
        async with self.lock:
            delta_id, frozen = await self._retrying(self.state.take_snapshot)
            self.batches_since_snapshot = 0
        self.snapshot_write = asyncio.create_task(
            self._retrying(self.state.write_snapshot, delta_id, frozen))
        self.snapshot_write.add_done_callback(_log_failure)

    # --- resilience -----------------------------------------------------------------------------
    async def _retrying(self, fn, *args, **kwargs):
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_outage),
            wait=wait_exponential(multiplier=0.1, max=5.0),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        ):
            with attempt:
                return await fn(*args, **kwargs)
        raise AssertionError("unreachable")
