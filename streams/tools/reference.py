"""The workers' computation in one process: what their final Redis state must equal.

Tests compare the workers against it; the quality benchmarks replay data sets through it. It
scores reviews as the workers do — one sentiment model per reviews partition, fed in produce
order (Kafka's default partitioner on the user id) — and drops events whose id it has seen.

>>> from streams.settings import load_settings
>>> replica = StreamReplica(load_settings())
>>> _ = replica.learn("play", {"user_id": "ann", "item_id": "alien", "ts": 1e9})
>>> _ = replica.learn("play", {"user_id": "ann", "item_id": "aliens", "ts": 1e9})
>>> _ = replica.learn("play", {"user_id": "bob", "item_id": "alien", "ts": 1e9})
>>> [r.item_id for r in replica.model.recommend("bob", 3, fresh=True)]
['aliens']
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.partitioner import DefaultPartitioner

from models.cooccurrence import CooccurrenceRecommender
from models.sentiment import ReviewSentiment, label_from_rating
from streams.contract.events import Event, Review, parse_event
from streams.runtime.learning import event_feedback, reference_recommender
from streams.runtime.ranking import Ranking
from streams.settings import ReviewFeedback, Settings


class StreamReplica:
    def __init__(self, settings: Settings, *, review_feedback: ReviewFeedback | None = None
                 ) -> None:
        self.settings = settings
        self.model: CooccurrenceRecommender = reference_recommender(settings)
        self.weights = settings.feedback_weights()
        self.review_feedback = review_feedback or settings.review_feedback
        self._partitions = list(range(settings.topic_partitions))
        self._partitioner = DefaultPartitioner()
        self.sentiment: dict[int, ReviewSentiment] = {}
        self._seen: set[tuple[str, str]] = set()
        self.ranking = Ranking(settings)  # set .model/.catalogue to rank as a worker would

    def learn(self, kind: str, value: dict) -> Event | None:
        """Learn one event as a worker would; None when it is a duplicate."""
        event = parse_event(kind, dict(value))  # type: ignore[arg-type]
        p_positive = self._score(event) if isinstance(event, Review) else None
        key = (event.user_id, event.dedup_id())
        if key in self._seen:
            return None
        self._seen.add(key)
        weight = event_feedback(event, self.weights, p_positive=p_positive,
                                review_feedback=self.review_feedback)
        self.model.learn_one(event.user_id, event.item_id, weight=weight, ts=event.ts)
        if p_positive is not None:
            self.model.items.add_reviews(event.item_id, 1.0, p_positive)
        return event

    def learn_many(self, events: Iterable[tuple[str, dict]], *, chunk: int = 2000) -> None:
        """`learn` for many events: scored and weighed one by one, in order, then learned by
        the model a chunk at a time (its `learn_many` equals `learn_one` applied one by one),
        several times faster."""
        batch: list[tuple[str, str, float, float]] = []
        reviews: list[tuple[str, float]] = []

        def flush() -> None:
            self.model.learn_many(batch)
            for item_id, p_positive in reviews:
                self.model.items.add_reviews(item_id, 1.0, p_positive)
            batch.clear()
            reviews.clear()

        for kind, value in events:
            event = parse_event(kind, dict(value))  # type: ignore[arg-type]
            p_positive = self._score(event) if isinstance(event, Review) else None
            key = (event.user_id, event.dedup_id())
            if key in self._seen:
                continue
            self._seen.add(key)
            batch.append((event.user_id, event.item_id,
                          event_feedback(event, self.weights, p_positive=p_positive,
                                         review_feedback=self.review_feedback), event.ts))
            if p_positive is not None:
                reviews.append((event.item_id, p_positive))
            if len(batch) >= chunk:
                flush()
        flush()

    def _score(self, review: Review) -> float:
        partition = self._partitioner(review.user_id.encode(), self._partitions,
                                      self._partitions)
        scorer = self.sentiment.setdefault(partition, ReviewSentiment())
        p_positive = scorer.predict_proba_one(review.text)
        label = label_from_rating(review.rating)
        if label is not None:
            scorer.learn_one(review.text, label)
        return p_positive
