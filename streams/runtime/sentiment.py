"""Review sentiment in the stream: one online model per partition of the reviews topic.

Why per partition: a model that learns from every partition would learn rated reviews in an order
that depends on how batches interleave, so an unrated review's score — and with it the user's
feedback and the item statistics — would differ between a run with a crash and one without. A
partition's log is fixed, so a model fed only that partition, in offset order, gives every review
the same score in every run, on whichever worker owns the partition.

State: each model is snapshotted to ``sentiment_model:{topic}:{partition}`` (``.npz`` of fixed
arrays, < 2 MB, never pickle; the offset it reflects in its header) every
``snapshot_every_batches`` batches, inside the batch's Redis transaction. A worker that takes a
partition over loads the snapshot and re-learns the rated reviews between the snapshot's offset
and the committed offset, read back from Kafka: it resumes, it does not relearn from scratch.

A snapshot of the JSON format from before issue 14 (``tastemaker.ReviewSentiment/1``) cannot be
converted (other features); the worker migrates by replay: it logs a warning and re-learns the
partition from offset 0, which is the model a fresh deployment would learn from the same log (as
far as Kafka's retention still holds it). Any other unreadable snapshot stops the worker with a
`SnapshotFormatError` naming the key.

**Retention** (issue 18, part 5): re-learning reads offsets from the snapshot's (0 without one) to
the committed one. When retention has deleted the start of that range (the snapshot is older than
the topic's retention, or there is none and the log no longer starts at 0), the model is the
snapshot's (or a fresh one) plus the rated reviews the log still holds up to the committed offset,
and a warning names the offsets lost. The consumer has no reset policy, so it never jumps to the
log's end (it used to: then it waited 30 s for nothing, or, with reviews arriving, spun while the
worker waited on it); a log start that moves during the read is skipped to and logged the same
way; reading stops at the committed offset; it gives up, with an error, only when the log yields
nothing for ``RELEARN_IDLE_S`` seconds with offsets before the committed one unread (a truncated
log). The same snapshot and the same log start give the same model. The model that first read
the partition had learned the lost reviews, so from there on the partition's scores can differ
from a run that never lost them: a retention longer than the time between snapshots (and than a
partition may go unprocessed) keeps it from happening.

Each review is also digested for its item's summary (`models.summary`), with the partition's model
before it learns the review, so the digest is the same in every run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from models.sentiment import ReviewSentiment, SnapshotFormatError, label_from_rating
from models.summary import ReviewDigest, author_tag, digest_reading, read_review
from streams.connections import kafka_consumer
from streams.contract.events import (
    RejectedEvent,
    Review,
    check_event_key,
    decode_event,
    latest_event_ts,
)
from streams.contract.keys import Keys
from streams.runtime.state import SnapshotTooLarge
from streams.settings import Settings

logger = logging.getLogger(__name__)

# Re-learning gives up when the log yields nothing new for this long while offsets before the
# committed one are unread (a truncated log: waiting longer would not bring them).
RELEARN_IDLE_S = 10.0


@dataclass(slots=True)
class PartitionModel:
    model: ReviewSentiment
    next_offset: int  # the first offset of the partition this model has not seen
    batches_since_snapshot: int = 0


@dataclass(slots=True)
class ReviewSentiments:
    """The sentiment models of the review partitions this worker processes."""

    settings: Settings
    keys: Keys
    models: dict[int, PartitionModel] = field(default_factory=dict)

    def score(self, partition: int, offset: int, review: Review) -> tuple[float, ReviewDigest]:
        """P(positive) of ``review`` and its summary digest, before learning it; then learn it
        if it has a rating."""
        return self.score_many(partition, [(offset, review)])[0]

    def score_many(self, partition: int, reviews: Sequence[tuple[int, Review]]
                   ) -> list[tuple[float, ReviewDigest]]:
        """`score` of each ``(offset, review)`` of the partition, in order: the same results.

        The texts' hashed features do not depend on the model, so every review's and its
        sentences' are computed in one pass first; then each review is scored with its
        sentences by one read of the model's arrays, and learned.
        """
        entry = self.models[partition]
        model = entry.model
        readings = [read_review(review.text) for _, review in reviews]
        features = model.featurise([text for (_, review), reading in zip(
            reviews, readings, strict=True) for text in (review.text, *reading.to_score)])
        out, start = [], 0
        for (offset, review), reading in zip(reviews, readings, strict=True):
            end = start + 1 + len(reading.to_score)
            p, *sentence_ps = model.score_and_learn(features[start:end],
                                                    label_from_rating(review.rating))
            start = end
            out.append((p, digest_reading(reading, p, sentence_ps,
                                          author=author_tag(review.user_id))))
            entry.next_offset = offset + 1
        return out

    def skip(self, partition: int, offset: int) -> None:
        """A message of the partition that is not a valid review: the model moves past it."""
        self.models[partition].next_offset = offset + 1

    def snapshots_due(self, partitions: set[int]) -> dict[str, bytes]:
        """Snapshots to write with this batch (key -> value), every ``snapshot_every_batches``."""
        due = {}
        for p in partitions:
            entry = self.models[p]
            entry.batches_since_snapshot += 1
            if entry.batches_since_snapshot >= self.settings.snapshot_every_batches:
                due[self.keys.sentiment_model(self.settings.topic_reviews, p)] = (
                    entry.model.to_bytes(meta={"offset": entry.next_offset}))
                entry.batches_since_snapshot = 0
        return due

    async def ensure(self, client, partition: int, committed: int) -> None:
        """Make the partition's model reflect exactly the messages before ``committed``."""
        entry = self.models.get(partition)
        if entry is not None and entry.next_offset == committed:
            return
        key = self.keys.sentiment_model(self.settings.topic_reviews, partition)
        size = await client.strlen(key)
        if size > self.settings.max_snapshot_bytes:
            raise SnapshotTooLarge(f"{key} holds {size} bytes, over the "
                                   f"{self.settings.max_snapshot_bytes}-byte limit "
                                   "(TASTEMAKER_MAX_SNAPSHOT_BYTES)")
        raw = await client.get(key)
        model, offset = ReviewSentiment(), 0
        if raw is not None and raw[:1] == b"{":
            logger.warning("%s holds a sentiment model of the format before issue 14 (JSON); "
                           "re-learning partition %d from offset 0 instead", key, partition)
        elif raw is not None:
            try:
                model, meta = ReviewSentiment.from_bytes_with_meta(raw)
            except SnapshotFormatError as exc:
                raise SnapshotFormatError(f"{key}: {exc}") from exc
            offset = int(meta["offset"])
        if offset > committed:  # a snapshot can't be ahead of its batch's offsets; be safe
            model, offset = ReviewSentiment(), 0
        relearned = await self._relearn(model, partition, offset, committed)
        self.models[partition] = PartitionModel(model, committed)
        if relearned or offset:
            logger.info("review sentiment of partition %d resumed from offset %d (%d rated "
                        "reviews re-learned up to %d)", partition, offset, relearned, committed)

    async def _relearn(self, model: ReviewSentiment, partition: int, start: int, end: int
                       ) -> int:
        """Learn the rated reviews at offsets ``start..end`` of the partition, in order; those
        retention has deleted are skipped, and logged (see the module doc). Returns how many."""
        if start >= end:
            return 0
        tp = TopicPartition(self.settings.topic_reviews, partition)
        # no reset policy: an offset retention deleted raises instead of jumping to the log's end
        consumer = kafka_consumer(self.settings, enable_auto_commit=False,
                                  auto_offset_reset="none",
                                  max_partition_fetch_bytes=8 * 1024 * 1024)
        await consumer.start()
        learned, position = 0, start
        try:
            consumer.assign([tp])
            position = await self._past_retention(consumer, tp, position, end)
            consumer.seek(tp, position)
            progress_at = time.monotonic()
            while position < end:
                if time.monotonic() - progress_at > RELEARN_IDLE_S:
                    break
                try:
                    batch = await consumer.getmany(tp, timeout_ms=1000, max_records=2000)
                except OffsetOutOfRangeError:  # retention moved the log start while we read
                    moved = await self._past_retention(consumer, tp, position, end)
                    if moved == position:
                        raise
                    position = moved
                    consumer.seek(tp, position)
                    progress_at = time.monotonic()
                    continue
                before = position
                for message in batch.get(tp, []):
                    if message.offset >= end:
                        position = end
                        break
                    position = message.offset + 1
                    learned += self._learn_message(model, message)
                if position < end:  # past control records (transaction markers) too
                    position = max(position, min(end, await consumer.position(tp)))
                if position > before:
                    progress_at = time.monotonic()
        finally:
            await consumer.stop()
        if position < end:
            logger.error("review partition %d: offsets %d..%d could not be read back (nothing "
                         "came for %.0f s); the sentiment model resumes without them",
                         partition, position, end, RELEARN_IDLE_S)
        return learned

    async def _past_retention(self, consumer, tp: TopicPartition, position: int, end: int
                              ) -> int:
        """``position``, or the log's first offset (at most ``end``) when retention has deleted
        the offsets before it: logged as a warning naming what is lost."""
        first = (await consumer.beginning_offsets([tp]))[tp]
        if first <= position:
            return position
        resumed = min(first, end)
        logger.warning("review partition %d: offsets %d..%d are past the topic's retention (the "
                       "log starts at %d); the sentiment model learns offsets %d..%d without them",
                       tp.partition, position, resumed, first, resumed, end)
        return resumed

    def _learn_message(self, model: ReviewSentiment, message) -> int:
        """Learn one message as the worker did: rejected as the worker rejected it (the same
        record timestamp), learned when rated. Returns 1 when learned."""
        try:
            review = decode_event("review", message.value,
                                  max_bytes=self.settings.max_message_bytes,
                                  not_after=latest_event_ts(
                                      (message.timestamp or 0) / 1000.0,
                                      max_future_s=self.settings.max_event_future_s))
            if self.settings.key_guard:
                check_event_key(review, message.key)
        except RejectedEvent:
            return 0
        label = label_from_rating(review.rating)  # type: ignore[union-attr]
        if label is None:
            return 0
        model.learn_one(review.text, label)  # type: ignore[union-attr]
        return 1
