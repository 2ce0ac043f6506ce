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

Each review is also digested for its item's summary (`models.summary`), with the partition's model
before it learns the review, so the digest is the same in every run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from models.sentiment import ReviewSentiment, SnapshotFormatError, label_from_rating
from models.summary import ReviewDigest, author_tag, digest_reading, read_review
from streams.connections import kafka_consumer
from streams.events import RejectedEvent, Review, decode_event, latest_event_ts
from streams.keys import Keys
from streams.settings import Settings
from streams.state import SnapshotTooLarge

logger = logging.getLogger(__name__)


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

    async def ensure(self, client, partition: int, committed: int) -> None:  # noqa: ANN001
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
        if start >= end:
            return 0
        tp = TopicPartition(self.settings.topic_reviews, partition)
        consumer = kafka_consumer(self.settings, enable_auto_commit=False,
                                    max_partition_fetch_bytes=8 * 1024 * 1024)
        await consumer.start()
        learned = 0
        try:
            consumer.assign([tp])
            consumer.seek(tp, start)
            position, idle = start, 0
            while position < end and idle < 30:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=2000)
                idle = 0 if batch else idle + 1
                for message in batch.get(tp, []):
                    if message.offset >= end:
                        break
                    position = message.offset + 1
                    try:
                        # rejected as the worker rejected it (the same record timestamp)
                        review = decode_event("review", message.value,
                                              max_bytes=self.settings.max_message_bytes,
                                              not_after=latest_event_ts(
                                                  (message.timestamp or 0) / 1000.0,
                                                  max_future_s=self.settings.max_event_future_s))
                    except RejectedEvent:
                        continue
                    label = label_from_rating(review.rating)  # type: ignore[union-attr]
                    if label is not None:
                        model.learn_one(review.text, label)  # type: ignore[union-attr]
                        learned += 1
        finally:
            await consumer.stop()
        if position < end:
            logger.error("review partition %d: offsets %d..%d could not be read back; the "
                         "sentiment model resumes without them", partition, position, end)
        return learned
