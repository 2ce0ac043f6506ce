"""The scalar co-occurrence model: the readable oracle that `models.cooccurrence` must equal.

One Python dict per item row, one `Delta` applied at a time: slow (a dict update per pair) but
plain to read and check by hand. Its user histories are `models.cooccurrence.UserHistory`, the
scalar histories the stream workers keep too. The vectorised model keeps the same semantics
with arrays; property tests (`tests/unit/test_cooccurrence_oracle.py`) replay random streams
through both, and ``python -m bench.speed --part core`` times both on the same events.

What the model computes is documented in `models.cooccurrence`.

>>> model = CooccurrenceRecommender(half_life_days=30)
>>> for user, item in [("ann", "alien"), ("ann", "aliens"), ("bob", "alien"), ("bob", "aliens"),
...                    ("bob", "heat"), ("cy", "alien")]:
...     model.learn_one(user, item, weight=1.0, ts=0.0)
>>> [(r.item_id, r.because) for r in model.recommend("cy", 2)]
[('aliens', ('alien',)), ('heat', ('alien',))]
"""

from __future__ import annotations

import heapq
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from models.cooccurrence import (
    DAY_S,
    MIN_SIMILARITY,
    Delta,
    Recommendation,
    UserHistory,
    _cancel,
    decay_factor,
    item_key,
    round12,
    user_key,
)


@dataclass(slots=True)
class _Neighbours:
    churn_budget: float  # refresh once the row has changed by this much
    ids: np.ndarray  # interned item indices, most similar first
    sims: np.ndarray
    by_id: dict[int, float]


class ItemCooccurrence:
    """Global item statistics built from `Delta`s; answers neighbour and scoring queries."""

    def __init__(self, *, neighbour_cap: int = 300, row_cap: int = 1000, alpha: float = 0.5,
                 staleness: float = 0.1, likers_cap: int = 100, user_items_cap: int = 50
                 ) -> None:
        if row_cap < neighbour_cap:
            raise ValueError("row_cap must be >= neighbour_cap")
        self.neighbour_cap = neighbour_cap
        self.row_cap = row_cap
        self.alpha = alpha
        self.staleness = staleness  # neighbour lists are refreshed after this relative change
        self.likers_cap = likers_cap
        self.user_items_cap = user_items_cap
        # the similar-user index: each user's latest liked items (as their deltas say), and its
        # inverse, each item's likers among those
        self._user_items: dict[str, dict[str, float]] = {}
        self._likers: dict[str, dict[str, float]] = {}
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._rows: list[defaultdict[int, float]] = []
        self._norm = np.zeros(64)
        self._popularity = np.zeros(64)
        self._mass = np.zeros(64)  # undecayed like mass: popularity / mass = mean g of the likes
        self._reviews = np.zeros((64, 2))  # review count, sum of P(positive)
        self._churn = np.zeros(64)
        self._neighbours: dict[int, _Neighbours] = {}

    # --- learning -------------------------------------------------------------------------------
    def _intern(self, item_id: str) -> int:
        idx = self._index.get(item_id)
        if idx is None:
            idx = len(self._ids)
            self._index[item_id] = idx
            self._ids.append(item_id)
            self._rows.append(defaultdict(float))
            if idx >= len(self._norm):
                grow = len(self._norm)
                self._norm = np.concatenate([self._norm, np.zeros(grow)])
                self._popularity = np.concatenate([self._popularity, np.zeros(grow)])
                self._mass = np.concatenate([self._mass, np.zeros(grow)])
                self._reviews = np.concatenate([self._reviews, np.zeros((grow, 2))])
                self._churn = np.concatenate([self._churn, np.zeros(grow)])
        return idx

    def apply(self, delta: Delta) -> None:
        """Add one event's delta. Sums commute: deltas of different users may come in any order."""
        i = self._intern(delta.item_id)
        if delta.others:
            rows, index_get = self._rows, self._index.get
            row_i = rows[i]
            touched = []
            touch = touched.append
            for other, inc in zip(delta.others, delta.increments, strict=True):
                j = index_get(other)
                if j is None:
                    j = self._intern(other)
                row_i[j] += inc
                rows[j][i] += inc
                touch(j)
            changes = np.abs(np.asarray(delta.increments))
            self._churn[touched] += changes
            self._churn[i] += changes.sum()
            cap = self.row_cap
            for j in (i, *touched) if len(row_i) > cap else touched:
                if len(rows[j]) > cap:
                    self._prune(j)
        self._churn[i] += abs(delta.norm)
        # sums of non-negative contributions: below zero is float residue (a contribution
        # absorbed by a much larger one, then removed), as the kernels have it
        self._norm[i] = max(0.0, _cancel(self._norm[i], delta.norm))
        self._popularity[i] = max(0.0, _cancel(self._popularity[i], delta.popularity))
        self._mass[i] = max(0.0, _cancel(self._mass[i], delta.mass))
        if delta.user_items is not None:
            self._set_user_items(delta.user_id, dict(delta.user_items))

    def add_reviews(self, item_id: str, count: float, p_positive_sum: float) -> None:
        """Add ``count`` scored reviews of ``item_id`` whose P(positive) sum to the given sum."""
        i = self._intern(item_id)
        self._reviews[i, 0] += count
        self._reviews[i, 1] += p_positive_sum

    def item_stats(self, item_ids: Iterable[str]) -> np.ndarray:
        """Per item: decayed popularity, like mass, review count, review P(positive) sum (rows
        of zeros for unknown items)."""
        index = [self._index.get(i, -1) for i in item_ids]
        out = np.zeros((len(index), 4))
        known = np.array([k >= 0 for k in index], dtype=bool)
        if known.any():
            k = np.array(index)[known]
            out[known, 0] = self._popularity[k]
            out[known, 1] = self._mass[k]
            out[known, 2:] = self._reviews[k]
        return out

    def similarities_to(self, item_id: str, candidates: Iterable[str]) -> np.ndarray:
        """Each candidate's similarity to ``item_id`` in ``item_id``'s neighbour list (0 when
        not in it), from the same cached lists that scoring uses."""
        index = [self._index.get(c, -1) for c in candidates]
        j = self._index.get(item_id)
        if j is None:
            return np.zeros(len(index))
        by_id = self._neighbour_list(j).by_id
        return np.array([by_id.get(k, 0.0) for k in index])

    @property
    def max_popularity(self) -> float:
        return float(self._popularity[: len(self._ids)].max(initial=0.0))

    def _set_user_items(self, user_id: str, items: dict[str, float]) -> None:
        for item_id in self._user_items.get(user_id, {}).keys() - items.keys():
            likers = self._likers[item_id]
            likers.pop(user_id, None)
            if not likers:
                del self._likers[item_id]
        for item_id, ts in items.items():
            self._likers.setdefault(item_id, {})[user_id] = ts
        if items:
            self._user_items[user_id] = items
        else:  # no liked item left (or erased): the user leaves the index
            self._user_items.pop(user_id, None)

    def _prune(self, i: int) -> None:
        """Keep the row's ``row_cap // 2`` most similar entries (ties: smaller `item_key`
        first): bounded memory, room to grow."""
        row = self._rows[i]
        ids = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
        sims = self._similarities(i, ids, np.fromiter(row.values(), float, len(row)))
        tie = np.array([item_key(self._ids[k]) for k in ids.tolist()], dtype=np.int64)
        keep = np.lexsort((tie, -sims))[: self.row_cap // 2]
        self._rows[i] = defaultdict(float, {int(ids[k]): row[int(ids[k])] for k in keep})
        self._neighbours.pop(i, None)

    def _similarities(self, i: int, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
        norm_i = self._norm[i]
        norm_j = self._norm[ids]
        with np.errstate(divide="ignore", invalid="ignore"):
            sims = counts / (norm_i**self.alpha * norm_j ** (1.0 - self.alpha))
        sims[~np.isfinite(sims)] = 0.0
        return sims

    # --- queries --------------------------------------------------------------------------------
    def _neighbour_list(self, i: int, *, fresh: bool = False) -> _Neighbours:
        cached = self._neighbours.get(i)
        if cached is not None and not fresh and self._churn[i] <= cached.churn_budget:
            return cached
        row = self._rows[i]
        ids = np.fromiter(row.keys(), dtype=np.int64, count=len(row))
        counts = np.fromiter(row.values(), float, len(row))
        sims = self._similarities(i, ids, counts)
        positive = sims > MIN_SIMILARITY
        ids, sims = ids[positive], sims[positive]
        cap = self.neighbour_cap
        if len(ids) > cap:  # keep a margin below the cut: ties are broken by id, below
            kth = np.partition(sims, len(sims) - cap)[len(sims) - cap]
            keep = sims >= kth * (1.0 - 1e-9)
            ids, sims = ids[keep], sims[keep]
        ties = np.array([item_key(self._ids[k]) for k in ids.tolist()], dtype=np.int64)
        order = np.lexsort((ties, -round12(sims)))
        order = order[:cap]
        ids, sims = ids[order], sims[order]
        self._churn[i] = 0.0
        total = float(np.abs(counts).sum()) + abs(float(self._norm[i]))
        by_id = dict(zip(ids.tolist(), sims.tolist(), strict=True))
        entry = _Neighbours(self.staleness * total, ids, sims, by_id)
        self._neighbours[i] = entry
        return entry

    def neighbours(self, item_id: str, *, fresh: bool = False) -> list[tuple[str, float]]:
        """The item's most similar items, most similar first (ties by id)."""
        i = self._index.get(item_id)
        if i is None:
            return []
        entry = self._neighbour_list(i, fresh=fresh)
        pairs = zip(entry.ids.tolist(), entry.sims.tolist(), strict=True)
        return [(self._ids[k], float(s)) for k, s in pairs]

    def trending(self, n: int, *, exclude: frozenset[str] | set[str] = frozenset()
                 ) -> list[tuple[str, float]]:
        """Most popular items with time decay (ties by id)."""
        m = len(self._ids)
        if m == 0:
            return []
        pop = self._popularity[:m]
        k = min(m, n + len(exclude))
        if k < m:  # those at or above the k-th popularity, ties at the cut included
            top = np.flatnonzero(pop >= np.partition(pop, m - k)[m - k])
        else:
            top = np.arange(m)
        ranked = sorted((-float(pop[t]), self._ids[t]) for t in top.tolist() if pop[t] > 0.0)
        return [(item, -neg) for neg, item in ranked if item not in exclude][:n]

    def score(self, recent: list[tuple[str, float]], n: int, *, exclude: Iterable[str] = (),
              recency_half_life: float = 50.0, explain_items: int = 3, fresh: bool = False,
              backfill: bool = True, user_id: str | None = None, similar_users: int = 0,
              user_blend: float = 1.0) -> list[Recommendation]:
        """Top ``n`` items for a user whose liked items, newest first, are ``recent``.

        An item's score sums its similarity to each recent item, weighted by the user's affinity
        and by recency (half-life ``recency_half_life`` positions). With ``similar_users`` > 0,
        the items liked by the user's most similar users (overlap of liked items, cosine) add
        ``user_blend`` times their score, both parts scaled to a maximum of 1. Items in
        ``exclude`` are left out. When fewer than ``n`` items score, trending items fill the list.
        """
        m = len(self._ids)
        excluded = set(exclude)
        scores = np.zeros(m)
        contributors: list[tuple[str, float, _Neighbours]] = []
        for rank, (item_id, affinity) in enumerate(recent):
            j = self._index.get(item_id)
            if j is None:
                continue
            w = affinity * 0.5 ** (rank / recency_half_life)
            entry = self._neighbour_list(j, fresh=fresh)
            if len(entry.ids):
                scores[entry.ids] += w * entry.sims
                contributors.append((item_id, w, entry))
        for item_id in excluded:
            k = self._index.get(item_id)
            if k is not None:
                scores[k] = 0.0
        from_users = np.zeros(0)
        item_part = scores
        if user_id is not None and similar_users > 0:
            from_users = self._similar_user_scores(user_id, [i for i, _ in recent], excluded,
                                                   similar_users)
            top_items, top_users = scores.max(initial=0.0), from_users.max(initial=0.0)
            if top_users > 0.0:
                item_part = scores / top_items if top_items > 0.0 else scores
                from_users = user_blend * from_users / top_users
                scores = item_part + from_users
        candidates = np.flatnonzero(scores > 0.0)
        if len(candidates) > n:
            # a margin below the n-th score so that ties at the cut are broken by id
            cut = np.partition(scores[candidates], len(candidates) - n)[len(candidates) - n]
            candidates = candidates[scores[candidates] >= cut * (1.0 - 1e-9)]
        # rank on scores rounded to 12 significant digits: sums taken in another order (another
        # worker, a replay after a crash) differ in the last bits, and must not reorder ties
        rounded = round12(scores[candidates]).tolist()
        ranked = sorted((-r, item_key(self._ids[k]), k) for r, k in zip(
            rounded, candidates.tolist(), strict=True))
        top = [k for _, _, k in ranked[:n]]
        because = self._explain(top, contributors, explain_items)
        out = [Recommendation(self._ids[k], float(scores[k]), why,
                              "users" if len(from_users) and from_users[k] * 2 > scores[k]
                              else "items", float(item_part[k]),
                              float(from_users[k]) if len(from_users) else 0.0)
               for k, why in zip(top, because, strict=True)]
        if backfill and len(out) < n:
            # trending items fill the list, scored below every co-occurrence candidate so that
            # a sorted set keeps their order
            taken = excluded | {r.item_id for r in out}
            floor = out[-1].score if out else 1.0
            out += [Recommendation(item_id, floor * 0.5 ** (rank + 1), (), "trending")
                    for rank, (item_id, _) in enumerate(
                        self.trending(n - len(out), exclude=taken))]
        return out

    def _similar_user_scores(self, user_id: str, recent: list[str], excluded: set[str],
                             limit: int) -> np.ndarray:
        """Per item, the summed similarity of the ``limit`` users most similar to ``user_id``
        among those who liked it: users sharing the user's latest liked items (cosine of the
        two sets, ties by user id)."""
        mine = recent[: self.user_items_cap]
        overlap: dict[str, int] = {}
        for item_id in mine:
            likers = self._likers.get(item_id, {})
            if len(likers) > self.likers_cap:  # the latest likers (ties by id)
                likers = heapq.nlargest(self.likers_cap, likers,
                                        key=lambda u: (likers[u], -user_key(u)))
            for other in likers:
                if other != user_id:
                    overlap[other] = overlap.get(other, 0) + 1
        ranked = [(neg, v) for neg, _, v in sorted(
            (-c / math.sqrt(len(mine) * len(self._user_items[v])), user_key(v), v)
            for v, c in overlap.items())[:limit]]
        scores = np.zeros(len(self._ids))
        for neg_sim, other in ranked:
            for item_id in self._user_items[other]:
                k = self._index.get(item_id)
                if k is not None and item_id not in excluded:
                    scores[k] -= neg_sim
        return scores

    def _explain(self, top: list[int], contributors: list[tuple[str, float, _Neighbours]],
                 limit: int) -> list[tuple[str, ...]]:
        """For each item of ``top``, the ``limit`` contributors that added most to its score
        (ties, after rounding to 12 digits, by item id)."""
        if limit == 0 or not contributors:
            return [()] * len(top)
        contributors = sorted(contributors, key=lambda c: item_key(c[0]))
        position = np.full(len(self._ids), -1)
        position[top] = np.arange(len(top))
        added = np.zeros((len(top), len(contributors)))
        for column, (_, w, entry) in enumerate(contributors):
            rows = position[entry.ids]
            hit = rows >= 0
            added[rows[hit], column] = w * entry.sims[hit]
        order = np.argsort(-round12(added), axis=1, kind="stable")[:, :limit]
        names = [c[0] for c in contributors]
        return [tuple(names[c] for c in row if added[r, c] > 0.0)
                for r, row in enumerate(order.tolist())]

    # --- state ----------------------------------------------------------------------------------
    def item_ids(self) -> list[str]:
        return list(self._ids)

    @property
    def n_items(self) -> int:
        return len(self._ids)

    def n_entries(self) -> int:
        return sum(len(r) for r in self._rows)

    def row(self, item_id: str) -> dict[str, float]:
        i = self._index.get(item_id)
        return {} if i is None else {self._ids[j]: v for j, v in self._rows[i].items()}

    def statistics(self, item_id: str) -> tuple[float, float, float]:
        i = self._index.get(item_id)
        if i is None:
            return (0.0, 0.0, 0.0)
        return (float(self._norm[i]), float(self._popularity[i]), float(self._mass[i]))

    def to_bytes(self) -> bytes:
        """Snapshot of the statistics as an ``.npz`` archive: plain arrays, loadable without
        pickle (``np.load(..., allow_pickle=False)``)."""
        m = len(self._ids)
        sizes = np.fromiter((len(r) for r in self._rows), dtype=np.int64, count=m)
        total = int(sizes.sum())
        cols = np.fromiter((j for r in self._rows for j in r), dtype=np.int64, count=total)
        vals = np.fromiter((v for r in self._rows for v in r.values()), float, int(sizes.sum()))
        index = json.dumps(self._user_items).encode()
        buffer = io.BytesIO()
        np.savez(buffer, ids=np.array(self._ids, dtype=np.str_), norm=self._norm[:m],
                 popularity=self._popularity[:m], mass=self._mass[:m],
                 reviews=self._reviews[:m], sizes=sizes, cols=cols, vals=vals,
                 user_index=np.frombuffer(index, dtype=np.uint8))
        return buffer.getvalue()

    def load_bytes(self, data: bytes) -> None:
        """Replace these statistics with a snapshot made by `to_bytes`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            ids = [str(i) for i in arrays["ids"]]
            norm, popularity = arrays["norm"], arrays["popularity"]
            mass, reviews = arrays["mass"], arrays["reviews"]
            sizes, cols, vals = arrays["sizes"], arrays["cols"], arrays["vals"]
            user_index = json.loads(arrays["user_index"].tobytes())
        self.__init__(neighbour_cap=self.neighbour_cap, row_cap=self.row_cap,  # type: ignore[misc]
                      alpha=self.alpha, staleness=self.staleness, likers_cap=self.likers_cap,
                      user_items_cap=self.user_items_cap)
        for user_id, items in user_index.items():
            self._set_user_items(user_id, items)
        for item_id in ids:
            self._intern(item_id)
        m = len(ids)
        self._norm[:m] = norm
        self._popularity[:m] = popularity
        self._mass[:m] = mass
        self._reviews[:m] = reviews
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        cols_l, vals_l = cols.tolist(), vals.tolist()
        self._rows = [defaultdict(float, zip(cols_l[a:b], vals_l[a:b], strict=False))
                      for a, b in zip(bounds[:-1], bounds[1:], strict=False)]

    def refresh(self) -> None:
        """Recompute every neighbour list from the current statistics, so that what is scored
        next is a function of the statistics alone (no staleness)."""
        for i in range(len(self._ids)):
            self._neighbour_list(i, fresh=True)


@dataclass(slots=True)
class CooccurrenceRecommender:
    """Histories and item statistics in one process: the model the benchmarks replay and the
    reference the stream workers must match.

    ``learn_one`` takes one event's feedback weight (see `models.feedback`).
    """

    history_cap: int = 500
    neighbour_cap: int = 300
    row_cap: int = 1000
    half_life_days: float = 180.0
    decay_epoch: float = 1e9
    alpha: float = 0.5
    recent_items: int = 500
    recency_half_life: float = 200.0
    similar_users: int = 30
    user_blend: float = 1.0
    explain_items: int = 3
    exclude_seen: bool = True
    likers_cap: int = 100
    user_items_cap: int = 50
    histories: dict[str, UserHistory] = field(default_factory=dict)
    items: ItemCooccurrence = field(init=False)

    def __post_init__(self) -> None:
        self.items = ItemCooccurrence(neighbour_cap=self.neighbour_cap, row_cap=self.row_cap,
                                      alpha=self.alpha, likers_cap=self.likers_cap,
                                      user_items_cap=self.user_items_cap)

    def observe(self, user_id: str, item_id: str, weight: float, ts: float) -> list[Delta]:
        """Update the user's history only; return the deltas for the item statistics."""
        history = self.histories.get(user_id)
        if history is None:
            history = self.histories[user_id] = UserHistory()
        g = decay_factor(ts, half_life_s=self.half_life_days * DAY_S, epoch=self.decay_epoch)
        return history.observe(item_id, weight, ts, cap=self.history_cap, g=g, user_id=user_id,
                               user_items_cap=self.user_items_cap)

    def learn_one(self, user_id: str, item_id: str, *, weight: float, ts: float) -> None:
        for delta in self.observe(user_id, item_id, weight, ts):
            self.items.apply(delta)

    def recommend(self, user_id: str, n: int = 10, *, fresh: bool = False,
                  explain: bool = True) -> list[Recommendation]:
        history = self.histories.get(user_id)
        if history is None:
            return self.cold_start(n)
        return self.items.score(
            history.recent(self.recent_items), n,
            exclude=history.items.keys() if self.exclude_seen else (),
            recency_half_life=self.recency_half_life,
            explain_items=self.explain_items if explain else 0, fresh=fresh,
            user_id=user_id, similar_users=self.similar_users, user_blend=self.user_blend,
        )

    def cold_start(self, n: int) -> list[Recommendation]:
        return self.items.score([], n)

