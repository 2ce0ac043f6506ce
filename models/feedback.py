"""Feedback: how much one event says a user likes an item.

Each event maps to a signed weight; a user's affinity for an item is the sum of the weights of
their events on it, clipped at zero (see `models.cooccurrence.UserHistory`). So a play followed by
a one-star rating cancels out instead of counting as a like.

>>> w = FeedbackWeights(rating=1.0)
>>> w.for_play(completion=1.0), w.for_play(completion=0.1), w.for_rating(5), w.for_rating(1)
(1.0, 0.1, 1.0, -1.0)
>>> w.for_review(p_positive=0.9), w.for_review(p_positive=None, rating=2)
(0.8, -0.5)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedbackWeights:
    """Per-event-type weights (settings ``TASTEMAKER_FEEDBACK_*``). Defaults were chosen by
    prequential Recall@10 on ML-100K (``python -m bench.quality --sweep-feedback``)."""

    play: float = 1.0  # a full play
    skip_below: float = 0.0  # plays completed less than this share count for nothing
    # multiplies (stars - rating_centre) / 2. 0 by default: on ML-100K, where the replay's play
    # completion already follows the stars, counting ratings again lowered both benchmarks
    rating: float = 0.0
    rating_centre: float = 3.0
    review: float = 1.0  # multiplies (2 * p_positive - 1)

    def for_play(self, *, completion: float | None = None) -> float:
        c = 1.0 if completion is None else completion
        return 0.0 if c < self.skip_below else self.play * c

    def for_rating(self, stars: float) -> float:
        return self.rating * (stars - self.rating_centre) / 2.0

    def for_review(self, *, p_positive: float | None, rating: float | None = None) -> float:
        """Sentiment when the review was scored, else the attached rating, else nothing."""
        if p_positive is not None:
            return round(self.review * (2.0 * p_positive - 1.0), 12)
        if rating is not None:
            return self.review * (rating - self.rating_centre) / 2.0
        return 0.0
