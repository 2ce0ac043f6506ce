"""How events become the co-occurrence model, the same in the worker, the reference the tests
compare it with and the benchmarks: each event's feedback weight, the model's parameters built
once from the settings, and a batch's model over the shared item statistics.

>>> from streams.settings import load_settings
>>> config = CooccurrenceConfig.of(load_settings(history_cap=100))
>>> config.history_cap, config.model().history_cap
(100, 100)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from models.cooccurrence import CooccurrenceRecommender, ItemCooccurrence
from models.feedback import FeedbackWeights
from streams.contract.events import Event, Play, Rating, Review
from streams.runtime.state import UserState
from streams.settings import ReviewFeedback, Settings


def event_feedback(event: Event, weights: FeedbackWeights, *, p_positive: float | None = None,
                   review_feedback: ReviewFeedback = "sentiment") -> float:
    """The feedback weight of one event (see `models.feedback`). A review counts by its
    sentiment ``p_positive`` ("sentiment", falling back to its stars when unscored), by its
    attached stars alone ("stars"), or not at all ("none")."""
    if isinstance(event, Play):
        return weights.for_play(completion=event.completion)
    if isinstance(event, Rating):
        return weights.for_rating(event.rating)
    if isinstance(event, Review):
        if review_feedback == "none":
            return 0.0
        if review_feedback == "stars":
            return weights.for_review(p_positive=None, rating=event.rating)
        return weights.for_review(p_positive=p_positive, rating=event.rating)
    raise TypeError(f"not an event: {event!r}")


@dataclass(frozen=True, slots=True)
class CooccurrenceConfig:
    """The co-occurrence model's parameters (`models.cooccurrence.CooccurrenceRecommender`'s,
    which documents them), as the settings give them: built once (`of`), then every model of
    a process is made from it."""

    history_cap: int
    neighbour_cap: int
    row_cap: int
    half_life_days: float
    decay_epoch: float
    alpha: float
    recent_items: int
    recency_half_life: float
    explain_items: int
    similar_users: int
    user_blend: float
    likers_cap: int
    user_items_cap: int
    max_items: int
    max_users: int

    @classmethod
    def of(cls, settings: Settings) -> CooccurrenceConfig:
        s = settings
        return cls(history_cap=s.history_cap, neighbour_cap=s.neighbour_cap,
                   row_cap=s.row_cap, half_life_days=s.half_life_days,
                   decay_epoch=s.decay_epoch, alpha=s.similarity_alpha,
                   recent_items=s.recent_items, recency_half_life=s.recency_half_life,
                   explain_items=s.explain_items, similar_users=s.similar_users,
                   user_blend=s.user_blend, likers_cap=s.likers_cap,
                   user_items_cap=s.user_items_cap, max_items=s.max_items,
                   max_users=s.max_indexed_users)

    def params(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    def model(self) -> CooccurrenceRecommender:
        """A model of its own (histories and item statistics)."""
        return CooccurrenceRecommender(**self.params())  # type: ignore[arg-type]

    def sharing(self, items: ItemCooccurrence) -> CooccurrenceRecommender:
        """A model with no histories over existing item statistics."""
        return CooccurrenceRecommender.sharing(items, **self.params())

    def batch_model(self, items: ItemCooccurrence, users: Mapping[str, UserState]
                    ) -> CooccurrenceRecommender:
        """The users' stored histories over the shared item ``items``: what a batch learns on
        and scores from."""
        model = self.sharing(items)
        for user_id, state in users.items():
            if state.items:
                model.load_history(user_id, state.items, state.s, state.t, state.g)
        return model


def reference_recommender(settings: Settings) -> CooccurrenceRecommender:
    """The in-process model configured as the workers are: what their final Redis state must
    equal (tests and benchmarks replay events through it)."""
    return CooccurrenceConfig.of(settings).model()
