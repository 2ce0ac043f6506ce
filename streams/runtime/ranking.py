"""How a worker ranks a user's recommendations, and the training examples it logs.

One object, used by the stream workers, by `streams.tools.reference.StreamReplica` and by the ranker
benchmark, so all three rank — and featurise — the same way:

- without a ranker version, the top-N is the co-occurrence order (`models.cooccurrence`);
- with one, the top ``ranker_candidates`` co-occurrence candidates are re-ordered by the MLP
  (`models.ranker`) and the top-N kept;
- with ``popularity_penalty`` or ``diversity`` set, the top-N is then chosen from the top
  ``rerank_pool`` of that order by the popularity-bias and diversity controls (`models.rerank`).

A training example is the candidate list the user would be served at the moment of one of their
positive events (their history as of just before its time: `UserHistory.before`), with the
features of every candidate and the position of the item they chose; events whose item is not
among the candidates give none (the ranker can only re-order candidates). Its id is the choice —
user, item and time — not the event: a play, its rating and its review are one choice and give
one example, whichever of their three topics arrives first. A hash of that id picks
``ranker_example_rate`` of the choices, so the same ones are logged on every worker and replay.

>>> from streams.settings import load_settings
>>> from streams.tools.reference import StreamReplica
>>> replica = StreamReplica(load_settings(ranker_example_rate=1.0))
>>> for user, item in [("ann", "a"), ("ann", "b"), ("bob", "a"), ("bob", "b"), ("cy", "a")]:
...     _ = replica.learn("play", {"user_id": user, "item_id": item, "ts": 1e9})
>>> history = replica.model.histories["cy"]
>>> example = replica.ranking.example(replica.model.items, "cy", history, item_id="b", ts=2e9)
>>> example["id"], example["items"], example["positive"]
('cy|b|2000000000.0', ['b'], 0)
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson

from models import rerank as controls
from models.cooccurrence import (
    DAY_S,
    CooccurrenceRecommender,
    ItemCooccurrence,
    Recommendation,
    ScoreRequest,
    Snapshots,
    UserHistory,
)
from models.ranker import (
    FEATURE_VERSION,
    CandidateLists,
    RankerMLP,
    UserContext,
    featurise_lists,
    rerank,
)
from streams.settings import Settings


def choice_id(user_id: str, item_id: str, ts: float) -> str:
    """The id of the training example of a user's choice of an item at a time.

    >>> choice_id("ann", "m1", 874965758.0)
    'ann|m1|874965758.0'
    """
    return f"{user_id}|{item_id}|{ts!r}"


def sampled(example_id: str, rate: float) -> bool:
    """Whether a choice is among the ``rate`` share logged as training examples (by a hash of
    its `choice_id`, so every worker and replay picks the same ones)."""
    if rate >= 1.0:
        return True
    return zlib.crc32(example_id.encode()) / 2**32 < rate


@dataclass(slots=True)
class Ranking:
    settings: Settings
    catalogue: dict[str, tuple[str, ...]] = field(default_factory=dict)  # item -> genres
    model: RankerMLP | None = None
    version: int = 0  # the served ranker version; 0: none (co-occurrence order)

    def candidates(self, items: ItemCooccurrence, user_id: str, history: UserHistory, n: int
                   ) -> list[Recommendation]:
        """The user's top ``n`` in the co-occurrence order."""
        return self.candidates_many(items, {user_id: history}, n)[user_id]

    def candidates_many(self, items: ItemCooccurrence, histories: Mapping[str, UserHistory],
                        n: int) -> dict[str, list[Recommendation]]:
        """`candidates` for many users, scored in one pass of the kernel."""
        s = self.settings
        requests = [ScoreRequest(h.recent(s.recent_items), h.items.keys(), user_id)
                    for user_id, h in histories.items()]
        lists = items.score_many(requests, n, recency_half_life=s.recency_half_life,
                                 explain_items=s.explain_items, similar_users=s.similar_users,
                                 user_blend=s.user_blend)
        return dict(zip(histories, lists, strict=True))

    def features(self, items: ItemCooccurrence, history: UserHistory,
                 candidates: Sequence[Recommendation]) -> np.ndarray:
        """The features the served model would score ``candidates`` on."""
        user = UserContext.of(history, self.catalogue, recent_items=self.settings.recent_items)
        return self._features(items, CandidateLists.of([candidates], items), [user],
                              serving=True)

    def _features(self, items: ItemCooccurrence, lists: CandidateLists,
                  users: Sequence[UserContext], *, serving: bool) -> np.ndarray:
        """`featurise_lists` with the settings' recency and decay: every feature the workers
        log or serve from is computed here. Served lists get ``factor_score`` from the served
        model's item factors; logged examples get 0 there, and the trainer computes it from the
        factors it fits (`models.ranker.Groups.with_factor_scores`), from the example's
        ``liked`` items."""
        s = self.settings
        factors = self.model.factors if serving and self.model is not None else None
        return featurise_lists(lists, users, items, self.catalogue,
                               recency_half_life=s.recency_half_life,
                               half_life_s=s.half_life_days * DAY_S, decay_epoch=s.decay_epoch,
                               factors=factors)

    def recommend(self, items: ItemCooccurrence, user_id: str, history: UserHistory
                  ) -> list[Recommendation]:
        """The user's top-N: re-ordered by the ranker when one is served, then by the
        popularity and diversity controls when they are on."""
        return self.top_many(items, {user_id: history}, self.settings.top_n)[user_id]

    def top(self, items: ItemCooccurrence, user_id: str, history: UserHistory, n: int
            ) -> list[Recommendation]:
        """`recommend` for any ``n`` (the benchmarks ask for 10)."""
        return self.top_many(items, {user_id: history}, n)[user_id]

    def top_many(self, items: ItemCooccurrence, histories: Mapping[str, UserHistory], n: int
                 ) -> dict[str, list[Recommendation]]:
        """`top` for many users."""
        candidates = self.candidates_many(items, histories, self._width(n))
        return self._finish(items, candidates, histories.get, n)

    def top_model(self, model: CooccurrenceRecommender, user_ids: Iterable[str],
                  n: int | None = None) -> dict[str, list[Recommendation]]:
        """`top_many` for the users whose histories ``model`` holds (a worker's batch), from
        its arrays: the same lists (``n``: ``top_n``)."""
        n = self.settings.top_n if n is None else n
        candidates = model.recommend_many(user_ids, self._width(n))
        return self._finish(model.items, candidates, model.histories.get, n)

    def _width(self, n: int) -> int:
        """How many co-occurrence candidates the top ``n`` is chosen from."""
        s = self.settings
        pool = max(n, s.rerank_pool) if self.adjusting else n
        return pool if self.model is None else max(s.ranker_candidates, pool)

    def _finish(self, items: ItemCooccurrence, candidates: dict[str, list[Recommendation]],
                history_of: Callable[[str], UserHistory | None], n: int
                ) -> dict[str, list[Recommendation]]:
        """The top ``n`` of each user's candidates: re-ordered by the ranker when one is
        served, then chosen by the controls when they are on."""
        s = self.settings
        adjusting = self.adjusting
        pool = max(n, s.rerank_pool) if adjusting else n
        if self.model is not None and candidates:
            # every user's candidates featurised in one pass, each list scored on its own
            users = list(candidates)
            contexts = [UserContext.of(history_of(u) or UserHistory(), self.catalogue,
                                       recent_items=s.recent_items) for u in users]
            lists = CandidateLists.of([candidates[u] for u in users], items)
            features = self._features(items, lists, contexts, serving=True)
            bounds = lists.ptr.tolist()
            for k, user_id in enumerate(users):
                candidates[user_id] = rerank(self.model, candidates[user_id],
                                             features[bounds[k]:bounds[k + 1]], pool)
        for user_id, ranked in candidates.items():
            candidates[user_id] = self.adjust(items, ranked, n) if adjusting else ranked[:n]
        return candidates

    @property
    def adjusting(self) -> bool:
        return self.settings.popularity_penalty > 0.0 or self.settings.diversity > 0.0

    def adjust(self, items: ItemCooccurrence, candidates: Sequence[Recommendation], n: int
               ) -> list[Recommendation]:
        """The top ``n`` of ``candidates`` by the popularity-bias and diversity controls."""
        s = self.settings
        ids = [c.item_id for c in candidates]
        popularity = items.item_stats(ids)[:, 0]
        return controls.rerank(candidates, n, popularity=popularity,
                               similarity=items.similarities_to, diversify=items.diversify,
                               beta=s.popularity_penalty, lam=s.diversity)

    def example(self, items: ItemCooccurrence, user_id: str, history: UserHistory, *,
                item_id: str, ts: float) -> dict | None:
        """The training example of a positive event on ``item_id`` at ``ts``, drawn from
        ``history`` as of just before ``ts``; None when the chosen item is not among the
        candidates."""
        history = history.before(ts)
        candidates = self.candidates(items, user_id, history, self.settings.ranker_candidates)
        user = UserContext.of(history, self.catalogue, recent_items=self.settings.recent_items)
        return self._example(items, user_id, user, candidates, item_id=item_id, ts=ts)

    def examples(self, model: CooccurrenceRecommender, snapshots: Snapshots,
                 events: Sequence[tuple[str, str, float]]) -> list[dict]:
        """`example` of many events at once: ``events`` are (user, item, ts), and snapshot
        ``k`` is the history of ``events[k]``'s user as of just before it
        (`CooccurrenceRecommender.observe_many`); their candidates are scored in one pass."""
        if not events:
            return []
        s = self.settings
        lists, rec_ptr, rec_items, rec_affinity = model.rank_snapshots(
            snapshots, [e[0] for e in events], [e[1] for e in events], s.ranker_candidates)
        chosen = np.flatnonzero(lists.listed).tolist()  # the others give no example
        if not chosen:
            return []
        items, times, bounds = model.items, snapshots.t, rec_ptr.tolist()
        users = []
        for k in chosen:
            a, size = int(snapshots.start[k]), int(snapshots.size[k])
            now = float(times[a:a + size].max()) if size else 0.0
            recent = list(zip(items.names(rec_items[bounds[k]:bounds[k + 1]]),
                              rec_affinity[bounds[k]:bounds[k + 1]].tolist(), strict=True))
            users.append(UserContext.from_recent(recent, size, now, self.catalogue))
        candidates = CandidateLists.ranked(lists, items)
        features = self._features(items, candidates, users, serving=False)
        ptr = candidates.ptr.tolist()
        out = []
        for g, k in enumerate(chosen):
            user_id, item_id, ts = events[k]
            ids = candidates.item_ids[ptr[g]:ptr[g + 1]]
            out.append(self._record(user_id, item_id, ts, ids, features[ptr[g]:ptr[g + 1]],
                                    users[g]))
        return out

    def _example(self, items: ItemCooccurrence, user_id: str, user: UserContext,
                 candidates: Sequence[Recommendation], *, item_id: str, ts: float
                 ) -> dict | None:
        ids = [c.item_id for c in candidates]
        if item_id not in ids:
            return None
        features = self._features(items, CandidateLists.of([candidates], items), [user],
                                  serving=False)
        return self._record(user_id, item_id, ts, ids, features, user)

    @staticmethod
    def _record(user_id: str, item_id: str, ts: float, ids: list[str], features: np.ndarray,
                user: UserContext) -> dict:
        return {"id": choice_id(user_id, item_id, ts), "user_id": user_id, "ts": ts,
                "feature_version": FEATURE_VERSION, "items": ids,
                "positive": ids.index(item_id), "features": features,
                "liked": [item for item, _ in user.recent]}

    @staticmethod
    def encode_example(example: dict) -> bytes:
        """An example as its ``ranker-examples`` record: JSON, the float32 features written
        as the shortest decimals that read back as the same float32 (half the bytes of
        float64 decimals, and no Python float per feature)."""
        return orjson.dumps(example, option=orjson.OPT_SERIALIZE_NUMPY)

    def learn_catalogue(self, genres: Mapping[str, Sequence[str]]) -> None:
        for item_id, item_genres in genres.items():
            self.catalogue[item_id] = tuple(item_genres)
