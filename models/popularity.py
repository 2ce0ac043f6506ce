"""Popularity with time decay: the baseline every recommender here must beat.

>>> pop = DecayedPopularity(half_life_days=1.0, decay_epoch=0.0)
>>> for item, ts in [("old", 0.0), ("old", 0.0), ("new", 3 * 86_400.0)]:
...     pop.learn_one("u", item, weight=1.0, ts=ts)
>>> pop.recommend("someone", 2)
['new', 'old']
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.cooccurrence import DAY_S, decay_factor


@dataclass(slots=True)
class DecayedPopularity:
    half_life_days: float = 30.0
    decay_epoch: float = 1e9
    exclude_seen: bool = True
    scores: dict[str, float] = field(default_factory=dict)
    seen: dict[str, set[str]] = field(default_factory=dict)

    def learn_one(self, user_id: str, item_id: str, *, weight: float, ts: float) -> None:
        self.seen.setdefault(user_id, set()).add(item_id)
        if weight > 0:
            g = decay_factor(ts, half_life_s=self.half_life_days * DAY_S, epoch=self.decay_epoch)
            self.scores[item_id] = self.scores.get(item_id, 0.0) + weight * g

    def recommend(self, user_id: str, n: int = 10) -> list[str]:
        seen = self.seen.get(user_id, set()) if self.exclude_seen else set()
        ranked = sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))
        return [item for item, _ in ranked if item not in seen][:n]
