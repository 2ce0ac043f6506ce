"""Incremental item–item co-occurrence: item-based collaborative filtering, learned per event.

The model is split along the keys it aggregates by, so the stream workers can keep each part
where recovery finds it:

- `UserHistory` (keyed by user): the user's recent items with their affinity (sum of feedback,
  clipped at zero), capped at ``history_cap`` items. `UserHistory.observe` turns one event into a
  `Delta`: the change it makes to the item statistics. It depends only on the user's own history,
  so a user's deltas are the same whichever worker computes them.
- `ItemCooccurrence` (global): decayed co-occurrence ``C[i][j] = sum_u a_ui * a_uj * g(t)`` and
  item norms ``N[i] = sum_u a_ui^2 * g(t)``, updated by applying deltas. Applying is a sum, so the
  result does not depend on the order in which different users' deltas arrive (up to floating-point
  rounding). Similarity is the (asymmetric) cosine ``C[i][j] / (N[i]^alpha * N[j]^(1 - alpha))``,
  not raw counts, which would only rank popularity.

Time decay is forward decay: an event at time ``t`` weighs
``g(t) = 2 ** ((t - epoch) / half_life)``,
so newer co-occurrences count more without ever rescaling stored values.

Memory is bounded by the caps: a user keeps at most ``history_cap`` items (~120 B each); an item
keeps at most ``row_cap`` co-occurrence entries (~100 B each, pruned to the most similar when
exceeded) plus a cached list of its ``neighbour_cap`` most similar items (~40 B each).

>>> model = CooccurrenceRecommender(half_life_days=30)
>>> for user, item in [("ann", "alien"), ("ann", "aliens"), ("bob", "alien"), ("bob", "aliens"),
...                    ("bob", "heat"), ("cy", "alien")]:
...     model.learn_one(user, item, weight=1.0, ts=0.0)
>>> [(r.item_id, r.because) for r in model.recommend("cy", 2)]
[('aliens', ('alien',)), ('heat', ('alien',))]
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import heapq
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numba
import numpy as np

from models.kernels import (
    apply_deltas,
    drop_items,
    latest_liked,
    mmr,
    neighbour_lists,
    observe_events,
    recent_items,
    renumbered_rows,
    score_users,
    similarity_rows,
    similarity_to_recent,
)
from models.stores import HistoryStore, RowStore, RowTable

DAY_S = 86_400.0
MAX_DECAY_EXPONENT = 900.0  # 2**900 is far inside float64: sums of such terms cannot overflow
MIN_SIMILARITY = 1e-9  # below this a similarity is rounding residue of added-then-removed terms
# a norm or popularity that a removal brings within this fraction of the amount removed is the
# rounding residue of terms that cancelled (the item's last liker evicted it, or was erased): 0
CANCELLED = 1e-12

Source = Literal["items", "users", "trending"]
SOURCES: tuple[Source, ...] = ("items", "users", "trending")  # `RankedLists.source` codes


def decay_factor(ts: float, *, half_life_s: float, epoch: float) -> float:
    """Forward-decay weight of an event at ``ts``: doubles every ``half_life_s`` after ``epoch``.

    Saturates ``MAX_DECAY_EXPONENT`` half-lives from the epoch, so that no timestamp can raise or
    overflow the sums: the stream contract keeps event times near their Kafka record's time
    (`streams.contract.events.latest_event_ts`), and the settings refuse an epoch and half-life
    whose range does not cover the years ahead (`streams.settings`), so live events never reach it.

    >>> decay_factor(86_400.0, half_life_s=86_400.0, epoch=0.0)
    2.0
    >>> decay_factor(1e300, half_life_s=1.0, epoch=0.0) == 2.0**MAX_DECAY_EXPONENT
    True
    """
    exponent = (ts - epoch) / half_life_s
    return 2.0 ** min(MAX_DECAY_EXPONENT, max(-MAX_DECAY_EXPONENT, exponent))


def decay_factors(ts: np.ndarray, *, half_life_s: float, epoch: float) -> np.ndarray:
    """`decay_factor` of many times at once, the same values to the bit
    (`tests/unit/test_cooccurrence.py` checks). The power is Python's (the C library's ``pow``):
    numpy's ``power`` takes SIMD code on CPUs with AVX-512, whose results differ in the last bit
    for about one exponent in twenty.

    >>> decay_factors(np.array([0.0, 86_400.0]), half_life_s=86_400.0, epoch=0.0).tolist()
    [1.0, 2.0]
    """
    exponent = (np.asarray(ts, dtype=np.float64) - epoch) / half_life_s
    clipped = np.clip(exponent, -MAX_DECAY_EXPONENT, MAX_DECAY_EXPONENT)
    return np.fromiter(map((2.0).__pow__, clipped.ravel().tolist()), dtype=np.float64,
                       count=clipped.size).reshape(clipped.shape)


def decay_horizon(*, half_life_s: float, epoch: float) -> float:
    """The latest time whose decay weight does not saturate (see `decay_factor`).

    >>> decay_horizon(half_life_s=1.0, epoch=0.0)
    900.0
    """
    return epoch + MAX_DECAY_EXPONENT * half_life_s


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while building many acyclic objects (lists of
    tuples of strings and floats): the collections it would start meanwhile (the youngest
    generation every 700 allocations, the whole heap every 100 of those at most) walk live
    objects, free nothing, and cost more than building them when the heap is large
    (`CooccurrenceRecommender.recommend_many` of 943 users with the scalar oracle's millions of
    objects alive in the process: 0.95 vs 0.43 ms per user).

    >>> import gc
    >>> with gc_paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _cancel(total: float, change: float) -> float:
    """``total + change``, or exactly 0 when a removal leaves only rounding residue: otherwise
    residues of an item nobody likes any more divide into spurious similarities.

    >>> 0.1 + 0.2 - 0.3, _cancel(0.1 + 0.2, -0.3)
    (5.551115123125783e-17, 0.0)
    """
    new = total + change
    if change < 0.0 and abs(new) <= CANCELLED * -change:
        return 0.0
    return new


def item_key(item_id: str) -> int:
    """A stable 64-bit key of an item id (the same in every process): the order of ties where
    the statistics keep the top of a row.

    >>> item_key("alien") == item_key("alien") != item_key("aliens")
    True
    """
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little", signed=True)


def user_key(user_id: str) -> int:
    """A stable 64-bit key of a user id: the order of ties among similar users.

    >>> user_key("ann") == user_key("ann") != user_key("bob")
    True
    """
    return item_key("u\x00" + user_id)


def round12(values: np.ndarray) -> np.ndarray:
    """Values rounded to about 12 significant digits (the binary mantissa to 12 decimals).
    Rankings compare these, so that the same terms summed in another order (another worker, a
    replay) cannot reorder near-equal scores.

    >>> a, b = round12(np.array([7.538439600233355, 7.538439600233353]))
    >>> bool(a == b)
    True
    """
    mantissa, exponent = np.frexp(values)
    return np.ldexp(np.round(mantissa, 12), exponent)


@dataclass(frozen=True, slots=True)
class Delta:
    """The change one event makes to the item statistics (all already multiplied by ``g(t)``)."""

    item_id: str
    others: tuple[str, ...]  # the user's other liked items ...
    increments: tuple[float, ...]  # ... and the increment of C[item][other] = C[other][item]
    norm: float  # increment of N[item]
    popularity: float  # increment of the item's decayed popularity
    user_id: str = ""  # whose event, and, when it changed, the user's latest liked items
    user_items: tuple[tuple[str, float], ...] | None = None  # (item, ts), for similar users
    mass: float = 0.0  # increment of the item's undecayed like mass (sum of affinities)

    @classmethod
    def from_json(cls, value: list) -> Delta:
        """A delta as the JSON ``deltas`` stream entries before issue 13 held it."""
        item_id, others, increments, norm, popularity, user_id, user_items, mass = value
        return cls(item_id, tuple(others), tuple(increments), norm, popularity, user_id,
                   None if user_items is None else tuple((i, t) for i, t in user_items), mass)


@dataclass(slots=True)
class PackedDeltas:
    """Deltas as flat arrays over the items of one `ItemCooccurrence` (its interned indices):
    delta ``d`` is item ``item[d]`` with the pairs ``end[d - 1]..end[d]`` of ``other``/``inc``
    and ``stat[d]`` = (norm, popularity, like mass) increments — the same change as the
    `Delta` objects it replaces, without a Python object per delta or pair. ``user_items``:
    the users whose latest liked items changed, with those items (the similar-user index)."""

    item: np.ndarray  # int64
    end: np.ndarray  # int64
    stat: np.ndarray  # (n, 3) float64
    other: np.ndarray  # int64
    inc: np.ndarray  # float64
    user_items: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> PackedDeltas:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)),
                   np.zeros(0, np.int64), np.zeros(0))

    def __len__(self) -> int:
        return len(self.item)

    @property
    def pairs(self) -> int:
        return len(self.other)

    def __bool__(self) -> bool:
        return len(self.item) > 0 or bool(self.user_items)


@dataclass(frozen=True, slots=True)
class Snapshots:
    """Users' histories as of just before some events (`CooccurrenceRecommender.observe_many`):
    snapshot ``k`` is ``item``/``s``/``t`` from ``start[k]``, ``size[k]`` entries. Only entries
    last touched before the event's time are in it (`UserHistory.before`), so a snapshot does not
    depend on the order in which events of the same time, or of later times, arrived."""

    item: np.ndarray
    s: np.ndarray
    t: np.ndarray
    start: np.ndarray
    size: np.ndarray


class UserHistory:
    """A user's items: ``item -> [feedback sum, last ts, g(last ts)]``, at most ``cap`` items.

    The user's affinity for an item is the sum of their feedback on it, clipped at zero. The
    user's contribution to the item statistics is a function of this state alone:
    ``C[i][j] += a_i * a_j * max(g_i, g_j)``, ``N[i] += a_i^2 * g_i``, ``P[i] += a_i * g_i``.
    `observe` returns the difference that one event makes to that contribution, so the deltas of
    a user's events telescope: the statistics depend on which events arrived, not on their order
    (the plays, ratings and reviews topics are not ordered with respect to each other). When the
    history is over its cap, the item with the oldest interaction (ties: smaller `item_key`)
    leaves it and its contribution is subtracted.
    """

    __slots__ = ("items", "_latest")

    def __init__(self, items: dict[str, list[float]] | None = None) -> None:
        self.items: dict[str, list[float]] = {} if items is None else items
        self._latest: tuple[tuple[str, float], ...] | None = None  # derived: latest_liked

    def before(self, ts: float) -> UserHistory:
        """The entries last touched before ``ts``: the history as of just before an event at
        ``ts``, whatever the order in which events of that time or later arrived (a play, its
        rating and its review share a time and come on three unordered topics).

        >>> h = UserHistory({"a": [1.0, 10.0, 1.0], "b": [0.0, 20.0, 1.0]})
        >>> list(h.before(20.0).items)
        ['a']
        """
        return UserHistory({j: v for j, v in self.items.items() if v[1] < ts})

    def latest_liked(self, limit: int) -> tuple[tuple[str, float], ...]:
        """The ``limit`` latest liked items with their time, newest first (ties by id)."""
        liked = [(t, j) for j, (s, t, _) in self.items.items() if s > 0.0]
        return tuple((j, t) for t, j in heapq.nlargest(limit, liked, key=lambda x: (x[0], x[1])))

    def observe(self, item_id: str, weight: float, ts: float, *, cap: int, g: float,
                user_id: str = "", user_items_cap: int = 50) -> list[Delta]:
        """Record feedback ``weight`` on ``item_id`` at ``ts`` (decay weight ``g = g(ts)``);
        return the deltas to the item statistics (none when nothing changed). When the user's
        ``user_items_cap`` latest liked items change, the last delta carries them: a function
        of this history, so followers' similar-user index is too."""
        if self._latest is None:
            self._latest = self.latest_liked(user_items_cap)
        previous = self.items.get(item_id)
        if previous is None:
            s0, a0, t0, g0 = 0.0, 0.0, ts, g
        else:
            s0, t0, g0 = previous
            a0 = max(0.0, s0)
        s1 = s0 + weight
        a1 = max(0.0, s1)
        t1, g1 = (ts, g) if ts >= t0 else (t0, g0)
        self.items[item_id] = [s1, t1, g1]
        deltas = []
        if a1 != a0 or (g1 != g0 and a1 > 0.0):
            liked = [(j, v) for j, v in self.items.items() if v[0] > 0.0 and j != item_id]
            if a0 == 0.0:  # the common case: a new like
                increments = [v[0] * a1 * (g1 if g1 > v[2] else v[2]) for _, v in liked]
            else:
                increments = [v[0] * (a1 * (g1 if g1 > v[2] else v[2])
                                      - a0 * (g0 if g0 > v[2] else v[2])) for _, v in liked]
            deltas.append(Delta(item_id, tuple(j for j, _ in liked), tuple(increments),
                                a1 * a1 * g1 - a0 * a0 * g0, a1 * g1 - a0 * g0,
                                mass=a1 - a0))
        evicted = []
        while len(self.items) > cap:
            deltas.append(self._evict_oldest())
            evicted.append(deltas[-1].item_id)
        deltas = [d for d in deltas if d.others or d.norm or d.popularity]
        latest = self._next_latest(item_id, s1 > 0.0, t1, evicted, user_items_cap)
        if latest != self._latest:
            self._latest = latest
            last = deltas.pop() if deltas else Delta(item_id, (), (), 0.0, 0.0)
            deltas.append(dataclasses.replace(last, user_id=user_id, user_items=latest))
        return deltas

    def _next_latest(self, item_id: str, liked: bool, ts: float, evicted: list[str],
                     limit: int) -> tuple[tuple[str, float], ...]:
        """`latest_liked` after an event on ``item_id``, from the list before it: only that item
        can enter or move (times only grow), so a full scan is needed only when a listed item
        stops being liked or is evicted (rare)."""
        current = self._latest
        assert current is not None
        listed = {j for j, _ in current}
        if item_id in evicted or any(e in listed for e in evicted):
            return self.latest_liked(limit) if listed.intersection(evicted) else current
        if not liked:
            return self.latest_liked(limit) if item_id in listed else current
        rest = [x for x in current if x[0] != item_id]
        key = (ts, item_id)
        if len(rest) >= limit and key <= (rest[-1][1], rest[-1][0]):
            return current
        at = next((k for k, (j, t) in enumerate(rest) if key > (t, j)), len(rest))
        rest.insert(at, (item_id, ts))
        return tuple(rest[:limit])

    def forget(self, *, user_id: str = "") -> list[Delta]:
        """Empty this history and return the deltas that remove the user's whole contribution
        to the item statistics (the erasure of a user). Evicting every item telescopes to the
        exact negative of what the user's events added; the last delta clears the user from the
        similar-user index (``user_items=()``).

        >>> h = UserHistory()
        >>> added = [d for i in "ab" for d in h.observe(i, 1.0, 0.0, cap=10, g=1.0)]
        >>> removed = h.forget()
        >>> sum(d.norm for d in added + removed), h.items, removed[-1].user_items
        (0.0, {}, ())
        """
        liked = bool(self.latest_liked(1))
        deltas = [self._evict_oldest() for _ in range(len(self.items))]
        deltas = [d for d in deltas if d.others or d.norm or d.popularity]
        self._latest = ()
        if liked and deltas:
            deltas[-1] = dataclasses.replace(deltas[-1], user_id=user_id, user_items=())
        return deltas

    def _evict_oldest(self) -> Delta:
        oldest = min(self.items, key=lambda j: (self.items[j][1], item_key(j)))
        s, _, g = self.items.pop(oldest)
        a = max(0.0, s)
        if a == 0.0:
            return Delta(oldest, (), (), 0.0, 0.0)
        others = tuple(j for j, (sj, _, _) in self.items.items() if sj > 0.0)
        increments = tuple(-a * self.items[j][0] * max(g, self.items[j][2]) for j in others)
        return Delta(oldest, others, increments, -a * a * g, -a * g, mass=-a)

    def recent(self, limit: int) -> list[tuple[str, float]]:
        """Up to ``limit`` liked items, newest first (ties: smaller `item_key`), with their
        affinity."""
        liked = [(t, item_key(j), j, s) for j, (s, t, _) in self.items.items() if s > 0.0]
        liked.sort(key=lambda x: (-x[0], x[1]))
        return [(j, s) for _, _, j, s in liked[:limit]]

    def to_arrays(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """The items, feedback sums, last times and their decay weights, as arrays."""
        values = np.array(list(self.items.values()), dtype=np.float64).reshape(-1, 3)
        return list(self.items), values[:, 0].copy(), values[:, 1].copy(), values[:, 2].copy()

    @classmethod
    def from_arrays(cls, item_ids: Sequence[str], s: np.ndarray, t: np.ndarray, g: np.ndarray
                    ) -> UserHistory:
        """`to_arrays` back.

        >>> h = UserHistory({"a": [1.0, 2.0, 3.0]})
        >>> UserHistory.from_arrays(*h.to_arrays()).items
        {'a': [1.0, 2.0, 3.0]}
        """
        return cls({j: [si, ti, gi] for j, si, ti, gi in zip(
            item_ids, s.tolist(), t.tolist(), g.tolist(), strict=True)})

    def to_state(self) -> list:
        return [[item_id, s, t, g] for item_id, (s, t, g) in self.items.items()]

    @classmethod
    def from_state(cls, state: Iterable[list]) -> UserHistory:
        return cls({str(i): [float(s), float(t), float(g)] for i, s, t, g in state})


class Recommendation(NamedTuple):
    """One recommended item (a named tuple: cheap to make by the thousand per batch)."""

    item_id: str
    score: float
    because: tuple[str, ...]  # the user's items that contributed most, strongest first
    source: Source
    item_score: float = 0.0  # the co-occurrence part of ``score`` ...
    user_score: float = 0.0  # ... and the similar-user part (each scaled to a maximum of 1
    #                          when both are blended)


@dataclass(frozen=True, slots=True)
class RankedLists:
    """Ranked lists as flat arrays (`ItemCooccurrence.rank_arrays`), nothing built per item:
    list ``r`` is rows ``ptr[r]:ptr[r + 1]`` — each an item (interned index) with its score, its
    co-occurrence and similar-user parts, its source (a `SOURCES` code) and the items that
    explain it (``because``, -1 padded) — or empty with ``listed[r]`` False when the list was
    not wanted (its wanted item was not among its candidates)."""

    ptr: np.ndarray
    item: np.ndarray
    score: np.ndarray
    item_part: np.ndarray
    user_part: np.ndarray
    source: np.ndarray
    because: np.ndarray  # [rows, explain_items]
    listed: np.ndarray

    def select(self, keep: np.ndarray) -> RankedLists:
        """The lists ``keep`` marks, in order."""
        rows = np.repeat(keep, np.diff(self.ptr))
        ptr = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
        np.cumsum(np.diff(self.ptr)[keep], out=ptr[1:])
        return RankedLists(ptr, self.item[rows], self.score[rows], self.item_part[rows],
                           self.user_part[rows], self.source[rows], self.because[rows],
                           self.listed[keep])


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """One user to score: their liked items, newest first, with affinity; the items to leave
    out; their id (for similar users)."""

    recent: Sequence[tuple[str, float]]
    exclude: Iterable[str] = ()
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class FrozenStatistics:
    """Item statistics copied at one moment (`ItemCooccurrence.frozen`): ids, per-item columns,
    the row arena and the similar-user index (JSON), owned by no model."""

    ids: list[str]
    norm: np.ndarray
    popularity: np.ndarray
    mass: np.ndarray
    reviews: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    start: np.ndarray
    cap: np.ndarray
    size: np.ndarray
    user_index: bytes

    def arrays(self, new_index: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The statistics as plain arrays, the items renumbered by ``new_index`` (old index
        -> new, -1: left out) when given."""
        if new_index is None:
            new_index = np.arange(len(self.ids), dtype=np.int64)
        kept = np.flatnonzero(new_index >= 0)
        kept = kept[np.argsort(new_index[kept])]
        sizes, cols, vals = renumbered_rows(self.cols, self.vals, self.start, self.cap,
                                            self.size, new_index, len(kept))
        ids = self.ids
        return {"ids": np.array([ids[i] for i in kept.tolist()], dtype=np.str_),
                "norm": self.norm[kept], "popularity": self.popularity[kept],
                "mass": self.mass[kept], "reviews": self.reviews[kept], "sizes": sizes,
                "cols": cols, "vals": vals,
                "user_index": np.frombuffer(self.user_index, dtype=np.uint8)}

    def to_bytes(self) -> bytes:
        """The ``.npz`` snapshot (`ItemCooccurrence.to_bytes`)."""
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays())
        return buffer.getvalue()


class ItemCooccurrence:
    """Global item statistics built from `Delta`s; answers neighbour and scoring queries.

    Items leave in two ways (issue 19):

    - **exactly**, when nothing is left of them: an item no user's history holds as liked any
      more (its norm, popularity and like mass are 0, every co-occurrence with it cancelled)
      and with no scored review is *empty*; `compact` renumbers the items without the empty
      ones, which changes no score (a stream worker calls it between batches);
    - **by the cap**: when more than ``max_items`` items are *live* (not empty) after deltas
      are applied, the coldest (lowest decayed popularity; ties: smaller `item_key`) are
      evicted down to 90% of the cap (`evict_coldest`). The decision is a function of the
      deltas applied, in their order, so every worker following one stream evicts the same
      items at the same point. What is lost: an evicted item's norm, popularity, like mass,
      review sums, its row and every other row's entry for it, its neighbour list and its
      likers; the histories that held it drop it when next loaded (the stream workers) or at
      once (`CooccurrenceRecommender`). It starts again from zero. (Should a delta of a history
      loaded before the eviction still take something of it away, norms, popularity and mass
      are floored at zero.)

    >>> items = ItemCooccurrence(max_items=2)
    >>> items.apply_many([Delta("a", (), (), 1.0, 3.0), Delta("b", (), (), 1.0, 1.0),
    ...                   Delta("c", (), (), 1.0, 2.0)])
    >>> sorted(items.live_ids())
    ['a']
    >>> items.compact()
    ['b', 'c']

    Parameters
    ----------
    neighbour_cap
        Nearest neighbours kept per item.
    row_cap
        Co-occurrence entries a row keeps (pruned to its most similar half past it); at least
        ``neighbour_cap``.
    alpha
        Similarity ``C[i][j] / (N[i]^alpha N[j]^(1 - alpha))``; 0.5 is cosine.
    staleness
        Relative change of a row after which its neighbour list is computed again.
    likers_cap
        Latest likers kept per item in the similar-user index.
    user_items_cap
        Latest liked items kept per user in the similar-user index.
    max_items
        Live items at most (the coldest are evicted; 0: no cap).
    max_users
        Users in the similar-user index at most (0: no cap).
    """

    def __init__(self, *, neighbour_cap: int = 300, row_cap: int = 1000, alpha: float = 0.5,
                 staleness: float = 0.1, likers_cap: int = 100, user_items_cap: int = 50,
                 max_items: int = 0, max_users: int = 0) -> None:
        if row_cap < neighbour_cap:
            raise ValueError("row_cap must be >= neighbour_cap")
        self.max_items = max_items  # live items kept at most (0: no cap): see `evict_coldest`
        self.max_users = max_users  # users in the similar-user index at most (0: no cap)
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
        self._rows = RowStore()
        self._key = np.zeros(64, dtype=np.int64)  # item_key of each item: ties in pruning
        self._norm = np.zeros(64)
        self._powers = np.full((64, 3), np.nan)  # a memo of norm ** (1 - alpha) (kernels)
        self._popularity = np.zeros(64)
        self._mass = np.zeros(64)  # undecayed like mass: popularity / mass = mean g of the likes
        self._reviews = np.zeros((64, 2))  # review count, sum of P(positive)
        self._churn = np.zeros(64)
        self._budget = np.full(64, -1.0)  # churn a cached neighbour list allows; -1: none
        self._changed = np.zeros(64, dtype=np.bool_)  # rows changed since `take_changed`
        self._table = RowTable()  # the cached neighbour lists as arrays, for the kernel
        self._uindex: dict[str, int] = {}  # users of the similar-user index, interned
        self._uids: list[str] = []
        self._ukeys: list[int] = []
        self._ukey_array = np.zeros(0, dtype=np.int64)  # `_ukeys` as the kernel reads it
        # the similar-user index as arrays for the kernel: each item's latest likers (interned
        # users) and each user's liked items, rewritten for the items and users that changed
        self._likers_table = RowTable()
        self._items_table = RowTable()
        self._user_sizes = np.zeros(64, dtype=np.int64)  # len(_user_items[user])
        self._dirty_items: set[str] = set()
        self._dirty_users: set[str] = set()
        self._scratch_arrays: tuple[np.ndarray, ...] | None = None

    # --- learning -------------------------------------------------------------------------------
    def _intern(self, item_id: str) -> int:
        idx = self._index.get(item_id)
        if idx is None:
            idx = len(self._ids)
            self._index[item_id] = idx
            self._ids.append(item_id)
            if idx >= len(self._norm):
                grow = len(self._norm)
                self._key = np.concatenate([self._key, np.zeros(grow, dtype=np.int64)])
                self._norm = np.concatenate([self._norm, np.zeros(grow)])
                self._powers = np.concatenate([self._powers, np.full((grow, 3), np.nan)])
                self._popularity = np.concatenate([self._popularity, np.zeros(grow)])
                self._mass = np.concatenate([self._mass, np.zeros(grow)])
                self._reviews = np.concatenate([self._reviews, np.zeros((grow, 2))])
                self._churn = np.concatenate([self._churn, np.zeros(grow)])
                self._budget = np.concatenate([self._budget, np.full(grow, -1.0)])
                self._changed = np.concatenate([self._changed, np.zeros(grow, dtype=np.bool_)])
            self._key[idx] = item_key(item_id)
        return idx

    def apply(self, delta: Delta) -> None:
        """Add one event's delta. Sums commute: deltas of different users may come in any order."""
        self.apply_many((delta,))

    def apply_many(self, deltas: Iterable[Delta]) -> None:
        """Add many deltas, in order, in one pass over flat arrays (`models.kernels`): the same
        result as `apply` on each in turn."""
        self.apply_packed(self.pack(deltas))

    def pack(self, deltas: Iterable[Delta]) -> PackedDeltas:
        """`Delta` objects as `PackedDeltas` over this model's items (interning new ones)."""
        deltas = list(deltas)
        if not deltas:
            return PackedDeltas.empty()
        items = self.intern_all([d.item_id for d in deltas])
        others = self.intern_all([o for d in deltas for o in d.others])
        increments = np.array([x for d in deltas for x in d.increments], dtype=np.float64)
        end = np.cumsum([len(d.others) for d in deltas], dtype=np.int64)
        stat = np.array([(d.norm, d.popularity, d.mass) for d in deltas], dtype=np.float64)
        user_items = {d.user_id: d.user_items for d in deltas if d.user_items is not None}
        return PackedDeltas(items, end, stat, others, increments, user_items)

    def apply_packed(self, deltas: PackedDeltas) -> None:
        """Add packed deltas, in order, in one kernel pass (`models.kernels.apply_deltas`);
        then set the users' latest liked items they carry."""
        if len(deltas):
            ptr = np.zeros(len(deltas) + 1, dtype=np.int64)
            ptr[1:] = deltas.end
            m = len(self._ids)
            store = self._rows
            store.ensure_items(m)
            pruned = np.zeros(m, dtype=np.bool_)
            store.cols, store.vals = apply_deltas(
                store.cols, store.vals, store.start, store.cap, store.size, store.top,
                store.garbage, self._norm, self._powers, self._popularity, self._mass,
                self._churn, self._key, pruned, deltas.item.astype(np.int64, copy=False), ptr,
                deltas.other.astype(np.int64, copy=False), deltas.inc,
                np.ascontiguousarray(deltas.stat[:, 0]), np.ascontiguousarray(deltas.stat[:, 1]),
                np.ascontiguousarray(deltas.stat[:, 2]), self.row_cap, self.alpha)
            self._drop_neighbours(np.flatnonzero(pruned))
            self._changed[deltas.item] = True
            self._changed[deltas.other] = True
        for user_id, latest in deltas.user_items.items():
            self._set_user_items(user_id, dict(latest))
        self.evict_coldest()
        self.evict_inactive_users()

    def intern_all(self, item_ids: Sequence[str]) -> np.ndarray:
        """The interned indices of ``item_ids`` (new ones interned)."""
        intern = self._intern
        return np.fromiter((intern(i) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def indices(self, item_ids: Sequence[str]) -> np.ndarray:
        """The interned indices of ``item_ids``, -1 for an item not interned (none interned)."""
        index = self._index.get
        return np.fromiter((index(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def names(self, indices: np.ndarray) -> list[str]:
        """The item ids of interned indices."""
        ids = self._ids
        return [ids[i] for i in indices.tolist()]

    # --- forgetting (issue 19) -------------------------------------------------------------------
    def live_mask(self) -> np.ndarray:
        """Per interned item, whether anything is left of it (see the class doc)."""
        m = len(self._ids)
        return ((self._norm[:m] > 0.0) | (self._popularity[:m] > 0.0) | (self._mass[:m] > 0.0)
                | (self._reviews[:m, 0] != 0.0))

    @property
    def n_live(self) -> int:
        """Items with anything left of them (`n_items` counts the empty ones too)."""
        return int(np.count_nonzero(self.live_mask()))

    def live_ids(self) -> list[str]:
        return self.names(np.flatnonzero(self.live_mask()))

    def live_lookup(self) -> np.ndarray:
        """`live_mask` with a False appended: what `held` reads ids not interned at."""
        return np.append(self.live_mask(), False)

    def held(self, item_ids: Sequence[str], s: np.ndarray, lookup: np.ndarray | None = None
             ) -> np.ndarray:
        """Which entries of a history (items, feedback sums) to keep: all but the liked items
        the statistics no longer hold (evicted by the cap while the user held them).
        ``lookup``: `live_lookup`, when the caller checks many histories against it."""
        lookup = self.live_lookup() if lookup is None else lookup
        n = len(lookup) - 1  # ids not interned (or interned since) read the False at n
        index = self._index.get
        k = np.array([index(i, n) for i in item_ids], dtype=np.int64)
        return (s <= 0.0) | lookup[np.minimum(k, n)]

    def evict_coldest(self) -> list[str]:
        """When more than ``max_items`` items are live, evict the coldest down to 90% of the
        cap (see the class doc); returns the ids evicted."""
        if not self.max_items:
            return []
        live = np.flatnonzero(self.live_mask())
        if len(live) <= self.max_items:
            return []
        cut = len(live) - int(0.9 * self.max_items)
        order = np.lexsort((self._key[live], self._popularity[live]))
        gone = np.sort(live[order[:cut]])
        self.evict(gone)
        return self.names(gone)

    def evict_inactive_users(self) -> list[str]:
        """When more than ``max_users`` users are in the similar-user index, the ones whose
        latest like is oldest (ties: smaller `user_key`) leave it, down to 90% of the cap: they
        are no longer anyone's similar user, nor have similar users themselves, until their
        next like brings their latest liked items back. A function of the deltas applied, in
        their order, as `evict_coldest` is. Returns the users who left."""
        index = self._user_items
        if not self.max_users or len(index) <= self.max_users:
            return []
        keys, at = self._ukeys, self._uindex
        oldest = sorted(index, key=lambda u: (max(index[u].values()), keys[at[u]]))
        gone = oldest[:len(index) - int(0.9 * self.max_users)]
        for user_id in gone:
            self._set_user_items(user_id, {})
        return gone

    @property
    def n_users_indexed(self) -> int:
        return len(self._user_items)

    @property
    def n_unindexed_users(self) -> int:
        """Users interned for the index but no longer in it (`compact` forgets them)."""
        return len(self._uids) - len(self._user_items)

    def evict(self, indices: np.ndarray) -> None:
        """Forget everything about these items (interned indices) but their ids: their
        statistics, rows, entries in other rows, neighbour lists and likers."""
        m = len(self._ids)
        self._rows.ensure_items(m)
        gone = np.zeros(m, dtype=np.bool_)
        gone[indices] = True
        touched = np.zeros(m, dtype=np.bool_)
        rows = self._rows
        drop_items(rows.cols, rows.vals, rows.start, rows.cap, rows.size, gone, touched)
        for column in (self._norm, self._popularity, self._mass, self._churn):
            column[indices] = 0.0
        self._reviews[indices] = 0.0
        self._drop_neighbours(np.flatnonzero(gone | touched))
        self._changed[:m] |= gone | touched
        for item_id in self.names(np.asarray(indices)):
            for user_id in self._likers.pop(item_id, {}):
                items = self._user_items[user_id]
                items.pop(item_id, None)
                self._dirty_users.add(user_id)
                if not items:
                    del self._user_items[user_id]
            self._dirty_items.add(item_id)

    def compact(self, keep: np.ndarray | None = None) -> list[str]:
        """Renumber the items without the empty ones (those flagged in ``keep`` stay), and the
        users without those who left the similar-user index: scores do not change, memory is
        given back. Every interned index changes: no batch may hold
        one across this call. Returns the ids dropped.

        >>> items = ItemCooccurrence()
        >>> items.apply_many([Delta("a", (), (), 1.0, 1.0), Delta("a", (), (), -1.0, -1.0)])
        >>> items.n_items, items.compact(), items.n_items
        (1, ['a'], 0)
        """
        return self._renumber(keep)[1]

    def _renumber(self, keep: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
        """`compact`: the old index -> new index map (-1: dropped) and the ids dropped."""
        live = self.live_mask()
        if keep is not None:
            live |= keep[:len(live)]
        new_index = np.full(len(live), -1, dtype=np.int64)
        new_index[live] = np.arange(int(live.sum()))
        if live.all() and not self.n_unindexed_users:
            return new_index, []
        dropped = self.names(np.flatnonzero(~live))
        changed = self._changed[:len(live)][live]
        self._load_state(self._frozen(copy=False).arrays(new_index))
        self._changed[:len(changed)] = changed
        return new_index, dropped

    def take_changed(self) -> list[str]:
        """The items whose rows or statistics deltas changed since the last call (or that were
        evicted): whose neighbour lists a writer rewrites."""
        m = len(self._ids)
        changed = np.flatnonzero(self._changed[:m])
        self._changed[:m] = False
        return self.names(changed)

    def invalidate_lists(self) -> None:
        """Make every cached neighbour list stale: each is computed afresh when next read
        (what `refresh` does, for the lists actually read)."""
        self._budget[:] = -1.0

    def add_reviews(self, item_id: str, count: float, p_positive_sum: float) -> None:
        """Add ``count`` scored reviews of ``item_id`` whose P(positive) sum to the given sum."""
        i = self._intern(item_id)
        self._reviews[i, 0] += count
        self._reviews[i, 1] += p_positive_sum

    def item_stats(self, item_ids: Iterable[str]) -> np.ndarray:
        """Per item: decayed popularity, like mass, review count, review P(positive) sum (rows
        of zeros for unknown items)."""
        return self.item_stats_at(self.indices(list(item_ids)))

    def item_stats_at(self, index: np.ndarray) -> np.ndarray:
        """`item_stats` by interned index (-1: unknown)."""
        out = np.zeros((len(index), 4))
        known = index >= 0
        if known.any():
            k = index[known]
            out[known, 0] = self._popularity[k]
            out[known, 1] = self._mass[k]
            out[known, 2:] = self._reviews[k]
        return out

    def similarities_to(self, item_id: str, candidates: Sequence[str]) -> np.ndarray:
        """Each candidate's similarity to ``item_id`` in ``item_id``'s neighbour list (0 when
        not in it), from the same cached lists that scoring uses."""
        return self.similarity_matrix([item_id], candidates)[0]

    def similarity_matrix(self, item_ids: Sequence[str], candidates: Sequence[str]
                          ) -> np.ndarray:
        """`similarities_to` of several items at once: one row per item of ``item_ids``."""
        rows = self.indices(item_ids)
        return similarity_rows(rows, self.indices(candidates), *self._neighbour_table(rows))

    def _neighbour_table(self, items: np.ndarray) -> tuple[np.ndarray, ...]:
        """The neighbour lists as the kernels read them (start, length, ids, similarities per
        item, and the scratch ``position`` row), those of ``items`` refreshed first."""
        self._refresh_lists(items)
        m = len(self._ids)
        table = self._table
        table.ensure_items(m)
        position = self._scratch(m, len(self._uids))[4][0]
        return table.start[:m], table.length[:m], table.ids, table.sims, position

    def similarity_to_recent(self, recent: Sequence[Sequence[str]], ptr: np.ndarray,
                             candidates: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """For many lists at once (list ``g``: candidates ``candidates[ptr[g]:ptr[g + 1]]``,
        recent items ``recent[g]``): each candidate's similarity to the list's first recent
        item and its mean similarity to them all — row 0 and the column means (its rows added
        in order) of `similarity_matrix`, with the neighbour lists refreshed once for all."""
        rec_ptr = np.zeros(len(recent) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in recent], out=rec_ptr[1:])
        rows = self.indices([i for r in recent for i in r])
        return similarity_to_recent(np.asarray(ptr, dtype=np.int64), self.indices(candidates),
                                    rec_ptr, rows, *self._neighbour_table(rows))

    def diversify(self, pool: Sequence[str], rel: np.ndarray, n: int, lam: float
                  ) -> list[tuple[int, float]]:
        """Maximal marginal relevance over the candidates ``pool`` with relevance ``rel`` and
        the neighbour lists as similarity: `models.rerank._mmr` in one kernel call
        (`models.kernels.mmr`); (candidate, gain) in the order chosen."""
        index = self.indices(pool)
        picks, gains = mmr(np.asarray(rel, dtype=np.float64), index,
                           *self._neighbour_table(index), lam, n)
        return list(zip(picks.tolist(), gains.tolist(), strict=True))

    @property
    def max_popularity(self) -> float:
        return float(self._popularity[: len(self._ids)].max(initial=0.0))

    def _set_user_items(self, user_id: str, items: dict[str, float]) -> None:
        if user_id not in self._uindex:
            self._uindex[user_id] = len(self._uids)
            self._uids.append(user_id)
            self._ukeys.append(user_key(user_id))
        self._dirty_users.add(user_id)
        old = self._user_items.get(user_id, {})
        gone = old.keys() - items.keys()
        # only the items whose likers changed are touched and ranked again: this user came,
        # went or liked them at another time (the others' likers hold these times already)
        moved = [j for j, ts in items.items() if old.get(j) != ts]
        self._dirty_items.update(gone)
        self._dirty_items.update(moved)
        for item_id in gone:
            likers = self._likers[item_id]
            likers.pop(user_id, None)
            if not likers:
                del self._likers[item_id]
        for item_id in moved:
            self._likers.setdefault(item_id, {})[user_id] = items[item_id]
        if items:
            self._user_items[user_id] = items
        else:  # no liked item left (or erased): the user leaves the index
            self._user_items.pop(user_id, None)

    def _refresh_lists(self, items: np.ndarray, *, fresh: bool = False) -> None:
        """Recompute the neighbour lists of these items (-1: unknown, skipped) that are missing
        or changed past their budget (all of them when ``fresh``), in one kernel pass
        (`models.kernels.neighbour_lists`): the scoring kernels read them from ``_table``."""
        used = np.unique(items[items >= 0])
        if not fresh:
            used = used[self._churn[used] > self._budget[used]]
        if not len(used):
            return
        rows = self._rows
        rows.ensure_items(len(self._ids))  # items interned without a delta yet: empty rows
        ptr, ids, sims, budget = neighbour_lists(
            used, rows.cols, rows.vals, rows.start, rows.cap, rows.size, self._norm,
            self._powers, self._churn, self._key, self.alpha, self.neighbour_cap, MIN_SIMILARITY,
            self.staleness)
        self._budget[used] = budget
        self._table.put_many(used, ptr, ids, sims)

    def _drop_neighbours(self, items: np.ndarray) -> None:
        """Forget the cached lists of these items (their rows were pruned)."""
        self._budget[items] = -1.0

    # --- queries --------------------------------------------------------------------------------
    def neighbours(self, item_id: str, *, fresh: bool = False) -> list[tuple[str, float]]:
        """The item's most similar items, most similar first (ties by id)."""
        return self.neighbours_many([item_id], fresh=fresh)[0]

    def neighbours_many(self, item_ids: Sequence[str], *, fresh: bool = False
                        ) -> list[list[tuple[str, float]]]:
        """`neighbours` of many items, the stale lists refreshed in one kernel call."""
        lengths, ids, sims = self.neighbours_flat(item_ids, fresh=fresh)
        out, at = [], 0
        for n in lengths:
            out.append(list(zip(ids[at:at + n], sims[at:at + n], strict=True)))
            at += n
        return out

    def neighbours_flat(self, item_ids: Sequence[str], *, fresh: bool = False
                        ) -> tuple[list[int], list[str], list[float]]:
        """`neighbours_many` as flat lists, without a tuple per entry: each item's list length,
        then the lists' neighbour ids and similarities one list after another.

        >>> model = CooccurrenceRecommender()
        >>> model.learn_many([("ann", "x", 1.0, 1e9), ("ann", "y", 1.0, 1e9),
        ...                   ("bob", "x", 1.0, 1e9), ("bob", "z", 1.0, 1e9)])
        >>> lengths, ids, sims = model.items.neighbours_flat(["y", "unknown", "x"])
        >>> lengths, ids[0], sorted(ids[1:]), round(sims[0], 4)
        ([1, 0, 2], 'x', ['y', 'z'], 0.7071)
        """
        rows = self.indices(item_ids)
        self._refresh_lists(rows, fresh=fresh)
        table, known = self._table, np.maximum(rows, 0)
        lengths = np.where(rows >= 0, table.length[known], 0)
        # entry p of item k's list is table slot start[k] + p - (the entries before item k)
        slots = (np.repeat(table.start[known] - np.cumsum(lengths) + lengths, lengths)
                 + np.arange(int(lengths.sum())))
        return lengths.tolist(), self.names(table.ids[slots]), table.sims[slots].tolist()

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
        the items liked by the user's most similar users (overlap of liked items, cosine; ties:
        smaller `user_key`) add ``user_blend`` times their score, both parts scaled to a
        maximum of 1. Items in ``exclude`` are left out. Ties in score (rounded to 12 digits)
        go to the smaller `item_key`. Each item is explained by the ``explain_items`` recent
        items that added most to it. When fewer than ``n`` items score, trending items fill
        the list. One user of `score_many`.

        Parameters
        ----------
        recent
            The user's liked items, newest first, each with the user's affinity for it.
        n
            How many items to return.
        exclude
            Items never to return (those the user already has).
        recency_half_life
            Recency weight of ``recent``, in positions.
        explain_items
            Recent items named as each item's reason.
        fresh
            Compute every neighbour list needed now, however little its row changed.
        backfill
            Fill a short list with trending items.
        user_id
            The user, for the similar-user part (which needs it).
        similar_users
            Similar users whose items are blended in; 0: none.
        user_blend
            Weight of the similar-user part.
        """
        return self.score_many([ScoreRequest(recent, exclude, user_id)], n,
                               recency_half_life=recency_half_life, explain_items=explain_items,
                               fresh=fresh, backfill=backfill, similar_users=similar_users,
                               user_blend=user_blend)[0]

    def score_many(self, requests: Sequence[ScoreRequest], n: int, *,
                   recency_half_life: float = 50.0, explain_items: int = 3, fresh: bool = False,
                   backfill: bool = True, similar_users: int = 0, user_blend: float = 1.0
                   ) -> list[list[Recommendation]]:
        """`score` for many users in one pass of a kernel (`models.kernels.score_users`)."""
        index = self._index.get
        rec_items, rec_affinity, exc_items = [], [], []
        rec_ptr, exc_ptr, mine_n, own = [0], [0], [], []
        for request in requests:
            rec_items += [index(j, -1) for j, _ in request.recent]
            rec_affinity += [a for _, a in request.recent]
            rec_ptr.append(len(rec_items))
            exc_items += [index(j, -1) for j in request.exclude]
            exc_ptr.append(len(exc_items))
            mine_n.append(min(len(request.recent), self.user_items_cap))
            own.append(-1 if request.user_id is None else
                       self._uindex.get(request.user_id, -1))
        use_users = similar_users if all(r.user_id is not None for r in requests) else 0
        return self.recommendations(self.rank_arrays(
            np.array(rec_ptr, dtype=np.int64), np.array(rec_items, dtype=np.int64),
            np.array(rec_affinity, dtype=np.float64), np.array(exc_ptr, dtype=np.int64),
            np.array(exc_items, dtype=np.int64), np.array(own, dtype=np.int64),
            np.array(mine_n, dtype=np.int64), n, recency_half_life=recency_half_life,
            explain_items=explain_items, fresh=fresh, backfill=backfill,
            similar_users=use_users, user_blend=user_blend))

    def recommendations(self, lists: RankedLists) -> list[list[Recommendation] | None]:
        """`RankedLists` as lists of `Recommendation` (None: not listed): what `score_many`
        and `CooccurrenceRecommender.recommend_many` return."""
        name = self._ids.__getitem__
        explained = lists.because >= 0
        ends = np.cumsum(explained.sum(axis=1)).tolist()
        with gc_paused():  # built by C loops (map, zip, tuple.__new__) where it can
            names = list(map(name, lists.item.tolist()))
            why = list(map(name, lists.because[explained].tolist()))
            because = [tuple(why[a:b]) for a, b in itertools.pairwise([0, *ends])]
            source = list(map(SOURCES.__getitem__, lists.source.tolist()))
            recs = list(map(tuple.__new__, itertools.repeat(Recommendation),
                            zip(names, lists.score.tolist(), because, source,
                                lists.item_part.tolist(), lists.user_part.tolist(), strict=True)))
            bounds = lists.ptr.tolist()
            return [recs[bounds[r]:bounds[r + 1]] if listed else None
                    for r, listed in enumerate(lists.listed.tolist())]

    def rank_arrays(self, rec_ptr: np.ndarray, rec_items: np.ndarray, rec_affinity: np.ndarray,
                    exc_ptr: np.ndarray, exc_items: np.ndarray, own: np.ndarray,
                    mine_n: np.ndarray, n: int, *, recency_half_life: float,
                    explain_items: int, fresh: bool, backfill: bool, similar_users: int,
                    user_blend: float, wanted: np.ndarray | None = None) -> RankedLists:
        """`score_many` from arrays, as `RankedLists`. With ``wanted`` (an item per query, -1:
        none), a query whose wanted item is not among its co-occurrence candidates (and whose
        list needs no trending items) is not listed: nothing is kept of it."""
        self._refresh_lists(rec_items, fresh=fresh)
        lk_start, lk_len, lk_users, ui_start, ui_count, ui_items, ui_len = (
            self._user_index_arrays())
        q = len(rec_ptr) - 1
        out_items = np.full((q, n), -1, dtype=np.int64)
        out_score, out_item_part, out_user_part = np.zeros((3, q, n))
        out_users = np.zeros((q, n), dtype=np.bool_)
        out_count = np.zeros(q, dtype=np.int64)
        out_because = np.full((q, n, max(explain_items, 1)), -1, dtype=np.int64)
        m = len(self._ids)
        self._table.ensure_items(m)
        scratch = self._scratch(m, len(self._uids))
        score_users(rec_ptr, rec_items, rec_affinity, exc_ptr, exc_items, own, mine_n,
                    self._table.start[:m], self._table.length[:m], self._table.ids,
                    self._table.sims, lk_start, lk_len, lk_users, ui_start, ui_count, ui_items,
                    ui_len,
                    self._key[:m], self._user_keys(), n,
                    recency_half_life, explain_items,
                    np.full(q, -1, dtype=np.int64) if wanted is None else wanted,
                    similar_users, user_blend, out_items, out_score, out_item_part,
                    out_user_part, out_users, out_count, out_because, *scratch)
        listed = (np.ones(q, dtype=np.bool_) if wanted is None else
                  (out_items == wanted[:, None]).any(axis=1) | (out_count < n))
        kept = listed[:, None] & (np.arange(n)[None, :] < out_count[:, None])
        short = listed & (out_count < n) if backfill else np.zeros(q, dtype=np.bool_)
        source = out_users.astype(np.int8)  # SOURCES: 0 items, 1 users
        width = max(explain_items, 0)
        if not short.any():
            ptr = np.zeros(q + 1, dtype=np.int64)
            np.cumsum(kept.sum(axis=1), out=ptr[1:])
            return RankedLists(ptr, out_items[kept], out_score[kept], out_item_part[kept],
                               out_user_part[kept], source[kept],
                               out_because[kept][:, :width], listed)
        # trending items fill the short lists, scored below every co-occurrence candidate so
        # that a sorted set keeps their order
        trending = [self._index[i] for i, _ in self.trending(
            2 * n + int(np.diff(exc_ptr).max(initial=0)))]  # outside any user's exclusions
        columns: list[list[np.ndarray]] = [[], [], [], [], [], []]
        ptr = np.zeros(q + 1, dtype=np.int64)
        for r in range(q):
            row = kept[r]
            parts = [out_items[r, row], out_score[r, row], out_item_part[r, row],
                     out_user_part[r, row], source[r, row], out_because[r, row, :width]]
            if short[r]:
                count = int(out_count[r])
                taken = set(exc_items[exc_ptr[r]:exc_ptr[r + 1]].tolist())
                taken.update(out_items[r, :count].tolist())
                fill = list(itertools.islice((k for k in trending if k not in taken),
                                             n - count))
                floor = float(out_score[r, count - 1]) if count else 1.0
                parts = [np.concatenate([a, b]) for a, b in zip(parts, [
                    np.array(fill, dtype=np.int64),
                    np.array([floor * 0.5 ** (rank + 1) for rank in range(len(fill))]),
                    np.zeros(len(fill)), np.zeros(len(fill)),
                    np.full(len(fill), SOURCES.index("trending"), dtype=np.int8),
                    np.full((len(fill), width), -1, dtype=np.int64)], strict=True)]
            for column, part in zip(columns, parts, strict=True):
                column.append(part)
            ptr[r + 1] = ptr[r] + len(parts[0])
        item, score, item_part, user_part, sources, because = (
            np.concatenate(c) for c in columns)
        return RankedLists(ptr, item, score, item_part, user_part, sources,
                           because.reshape(len(item), width), listed)

    def _user_keys(self) -> np.ndarray:
        """`user_key` of each indexed user as an array, extended by the users indexed since
        the last call (users are only ever appended), not rebuilt per call."""
        have = len(self._ukey_array)
        if have < len(self._ukeys):
            self._ukey_array = np.concatenate(
                [self._ukey_array, np.array(self._ukeys[have:], dtype=np.int64)])
        return self._ukey_array

    def _scratch(self, m: int, n_users: int) -> tuple[np.ndarray, ...]:
        """The scoring kernel's scratch arrays, one row per numba thread, kept between calls
        (it leaves them clean) and grown when the items or indexed users outgrow them."""
        threads = numba.get_num_threads()
        arrays = self._scratch_arrays
        if arrays is None or arrays[0].shape[0] != threads or arrays[0].shape[1] < m or (
                arrays[8].shape[1] < max(n_users, 1)):
            items, users = (threads, max(2 * m, 64)), (threads, max(2 * n_users, 64))
            self._scratch_arrays = (
                np.zeros(items), np.zeros(items), np.zeros(items, dtype=np.bool_),
                np.zeros(items, dtype=np.bool_), np.full(items, -1, dtype=np.int64),
                np.zeros(items, dtype=np.int64), np.zeros(items),
                np.zeros(items, dtype=np.int64),
                np.zeros(users, dtype=np.int64), np.zeros(users, dtype=np.int64),
                np.zeros(users))
        return self._scratch_arrays

    def _user_index_arrays(self) -> tuple[np.ndarray, ...]:
        """The similar-user index as the kernel reads it: each item's latest likers (at most
        ``likers_cap``, ties: smaller `user_key`) and each user's items (-1: not interned),
        the rows of the items and users changed since the last call rewritten."""
        m, keys = len(self._ids), self._ukeys
        self._likers_table.ensure_items(m)
        self._items_table.ensure_items(len(self._uids))
        if len(self._user_sizes) < len(self._uids):
            self._user_sizes = np.concatenate([self._user_sizes, np.zeros(
                max(len(self._uids), 2 * len(self._user_sizes)), dtype=np.int64)])
        rows, likers = [], []
        for item_id in self._dirty_items:
            i = self._index.get(item_id)
            if i is None:
                continue
            who = self._likers.get(item_id, {})
            ranked = sorted(who.items(), key=lambda x: (-x[1], keys[self._uindex[x[0]]]))
            rows.append(i)
            likers.append([self._uindex[u] for u, _ in ranked[: self.likers_cap]])
        self._likers_table.put_lists(rows, likers)
        rows, liked = [], []
        for user_id in self._dirty_users:
            u = self._uindex[user_id]
            items = self._user_items.get(user_id, {})
            rows.append(u)
            liked.append([self._index.get(j, -1) for j in items])
            self._user_sizes[u] = len(items)
        self._items_table.put_lists(rows, liked)
        self._dirty_items.clear()
        self._dirty_users.clear()
        n_users = len(self._uids)
        lk, ui = self._likers_table, self._items_table
        return (lk.start[:m], lk.length[:m], lk.ids, ui.start[:n_users], ui.length[:n_users],
                ui.ids, self._user_sizes[:n_users])

    # --- state ----------------------------------------------------------------------------------
    def item_ids(self) -> list[str]:
        return list(self._ids)

    @property
    def n_items(self) -> int:
        return len(self._ids)

    def n_entries(self) -> int:
        return int(self._rows.size[: len(self._ids)].sum())

    def row_sizes(self) -> np.ndarray:
        """Stored co-occurrence entries per item, in `item_ids` order."""
        self._rows.ensure_items(len(self._ids))
        return self._rows.size[: len(self._ids)].copy()

    def row(self, item_id: str) -> dict[str, float]:
        """The item's stored co-occurrences ``C[item][other]`` by other item id."""
        i = self._index.get(item_id)
        if i is None or i >= self._rows.n_rows:
            return {}
        ids, counts = self._rows.row(i)
        return dict(zip([self._ids[j] for j in ids.tolist()], counts.tolist(), strict=True))

    def statistics(self, item_id: str) -> tuple[float, float, float]:
        """The item's norm, decayed popularity and like mass (zeros when unknown)."""
        i = self._index.get(item_id)
        if i is None:
            return (0.0, 0.0, 0.0)
        return (float(self._norm[i]), float(self._popularity[i]), float(self._mass[i]))

    def bytes_per_entry(self) -> float:
        """Bytes the rows take per stored co-occurrence entry (slabs, empty slots included)."""
        return self._rows.bytes_used() / max(1, self.n_entries())

    def to_bytes(self) -> bytes:
        """Snapshot of the statistics as an ``.npz`` archive: plain arrays, loadable without
        pickle (``np.load(..., allow_pickle=False)``). Rows as CSR (``sizes``, ``cols``,
        ``vals``), each row's entries by column."""
        return self.frozen().to_bytes()

    def load_bytes(self, data: bytes) -> None:
        """Replace these statistics with a snapshot made by `to_bytes`."""
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            self._load_state(dict(arrays))

    def frozen(self) -> FrozenStatistics:
        """A copy of the statistics as they are now, to serialise later, in any thread, while
        these go on changing (`FrozenStatistics.to_bytes`: the bytes `to_bytes` gives now).
        Copying is the cheap part: ~17 ms at ML-100K's size, where serialising takes ~100 ms."""
        return self._frozen(copy=True)

    def _frozen(self, *, copy: bool) -> FrozenStatistics:
        m = len(self._ids)
        self._rows.ensure_items(m)
        rows, top = self._rows, int(self._rows.top[0])

        def own(a: np.ndarray) -> np.ndarray:
            return a.copy() if copy else a

        return FrozenStatistics(
            list(self._ids), own(self._norm[:m]), own(self._popularity[:m]), own(self._mass[:m]),
            own(self._reviews[:m]), own(rows.cols[:top]), own(rows.vals[:top]),
            own(rows.start[:m]), own(rows.cap[:m]), own(rows.size[:m]),
            json.dumps(self._user_items).encode())

    def _load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        ids = [str(i) for i in arrays["ids"]]
        user_index = json.loads(arrays["user_index"].tobytes())
        self.clear()
        for user_id, items in user_index.items():
            self._set_user_items(user_id, items)
        self.intern_all(ids)
        m = len(ids)
        self._norm[:m] = arrays["norm"]
        self._popularity[:m] = arrays["popularity"]
        self._mass[:m] = arrays["mass"]
        self._reviews[:m] = arrays["reviews"]
        self._rows.load(arrays["sizes"], arrays["cols"], arrays["vals"])
        self._changed[:m] = True  # loaded: a writer has not written their lists yet

    def clear(self) -> None:
        """Forget every item and user: empty statistics with the same parameters."""
        self.__init__(neighbour_cap=self.neighbour_cap, row_cap=self.row_cap,  # type: ignore[misc]
                      alpha=self.alpha, staleness=self.staleness, likers_cap=self.likers_cap,
                      user_items_cap=self.user_items_cap, max_items=self.max_items,
                      max_users=self.max_users)

    def refresh(self) -> None:
        """Recompute every neighbour list from the current statistics, so that what is scored
        next is a function of the statistics alone (no staleness)."""
        self._refresh_lists(np.arange(len(self._ids)), fresh=True)


def _interned(index: dict[str, int], intern: Callable[[str], int], ids: Sequence[str],
              dtype: type) -> np.ndarray:
    """The interned indices of ``ids``, looked up in C (``map``); ids not known yet are
    interned first, in order of first appearance."""
    try:
        return np.fromiter(map(index.__getitem__, ids), dtype=dtype, count=len(ids))
    except KeyError:
        for new in ids:
            if new not in index:
                intern(new)
        return np.fromiter(map(index.__getitem__, ids), dtype=dtype, count=len(ids))


def _no_snapshots() -> Snapshots:
    empty = np.zeros(0, dtype=np.int64)
    return Snapshots(empty.astype(np.int32), np.zeros(0), np.zeros(0), empty, empty)


class Histories(Mapping[str, "UserHistory"]):
    """Read-only view of a `CooccurrenceRecommender`'s histories by user id: each one a
    `UserHistory` made from the arrays when asked for."""

    def __init__(self, model: CooccurrenceRecommender) -> None:
        self._model = model

    def __getitem__(self, user_id: str) -> UserHistory:
        u = self._model._users.get(user_id)
        if u is None or self._model._histories.size[u] == 0:
            raise KeyError(user_id)
        item, s, t, g = self._model._histories.entries(u)
        return UserHistory.from_arrays(self._model.items.names(item), s, t, g)

    def __iter__(self) -> Iterator[str]:
        size = self._model._histories.size
        return (user for u, user in enumerate(self._model._user_ids) if size[u] > 0)

    def __len__(self) -> int:
        return int(np.count_nonzero(self._model._histories.size))


@dataclass(slots=True)
class CooccurrenceRecommender:
    """Histories and item statistics in one process, learned in batches by the kernels of
    `models.kernels`: the model the benchmarks replay and the reference
    the stream workers must match. Equal to the scalar `models.cooccurrence_oracle` (property
    tests).

    ``learn_one``/``learn_many`` take each event's feedback weight (see `models.feedback`).

    Parameters
    ----------
    history_cap
        Items a user's history keeps; over it, the oldest leaves and its contribution is
        subtracted.
    neighbour_cap
        Nearest neighbours kept per item (its neighbour list).
    row_cap
        Co-occurrence entries an item row keeps; over it, the row is pruned to its most similar
        half.
    half_life_days
        Time decay of co-occurrence and popularity (forward decay from ``decay_epoch``).
    decay_epoch
        The epoch (seconds) forward decay counts from.
    alpha
        Similarity ``C[i][j] / (N[i]^alpha N[j]^(1 - alpha))``; 0.5 is cosine.
    recent_items
        A user's most recent liked items a score sums over.
    recency_half_life
        Recency weight of those items, in positions (newest first).
    similar_users
        Similar users whose items are blended in; 0 turns the user-based part off.
    user_blend
        Weight of the similar-user part (both parts scaled to a maximum of 1).
    explain_items
        The user's items named as the reason for each recommendation.
    exclude_seen
        Leave out items the user already has in their history.
    likers_cap
        Latest likers kept per item in the similar-user index.
    user_items_cap
        Latest liked items kept per user in the similar-user index.
    max_items
        Live items at most (the coldest are evicted; 0: no cap), see `ItemCooccurrence`.
    max_users
        Users in the similar-user index at most (0: no cap).
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
    max_items: int = 0  # live items at most (0: no cap), see `ItemCooccurrence`
    max_users: int = 0  # users in the similar-user index at most (0: no cap), the same
    items: ItemCooccurrence = field(init=False)
    _histories: HistoryStore = field(init=False)
    _users: dict[str, int] = field(init=False)
    _user_ids: list[str] = field(init=False)
    _latest: list[tuple[tuple[str, float], ...]] = field(init=False)  # as in the user index
    _pairs: np.ndarray = field(init=False)  # co-occurrence pairs updated so far

    def __post_init__(self) -> None:
        self.items = ItemCooccurrence(neighbour_cap=self.neighbour_cap, row_cap=self.row_cap,
                                      alpha=self.alpha, likers_cap=self.likers_cap,
                                      user_items_cap=self.user_items_cap,
                                      max_items=self.max_items, max_users=self.max_users)
        self._histories = HistoryStore()
        self._users = {}
        self._user_ids = []
        self._latest = []
        self._pairs = np.zeros(1, dtype=np.int64)

    @property
    def pair_updates(self) -> int:
        """Co-occurrence pairs updated by learning so far (each pair counted once, though both
        ``C[i][j]`` and ``C[j][i]`` change)."""
        return int(self._pairs[0])

    @property
    def histories(self) -> Histories:
        return Histories(self)

    def _user(self, user_id: str) -> int:
        u = self._users.get(user_id)
        if u is None:
            u = self._users[user_id] = len(self._user_ids)
            self._user_ids.append(user_id)
            self._latest.append(())
        return u

    def learn_one(self, user_id: str, item_id: str, *, weight: float, ts: float) -> None:
        self.learn_many(((user_id, item_id, weight, ts),))

    def learn_many(self, events: Iterable[tuple[str, str, float, float]]) -> None:
        """Learn ``(user_id, item_id, weight, ts)`` events in order: the same statistics as
        `learn_one` on each in turn (and as the scalar oracle), in one pass of a kernel.

        >>> a, b = CooccurrenceRecommender(), CooccurrenceRecommender()
        >>> events = [("ann", "x", 1.0, 1e9), ("ann", "y", 1.0, 1e9), ("bob", "x", 1.0, 1e9)]
        >>> a.learn_many(events)
        >>> for user, item, weight, ts in events:
        ...     b.learn_one(user, item, weight=weight, ts=ts)
        >>> a.recommend("bob", 1) == b.recommend("bob", 1)
        True
        """
        self._observe(events, apply=True)

    def observe_many(self, events: Iterable[tuple[str, str, float, float]],
                     snapshot: Sequence[bool] | None = None
                     ) -> tuple[PackedDeltas, Snapshots]:
        """Update the histories with the events, as `learn_many` does, but return the changes
        to the item statistics as `PackedDeltas` instead of applying them (the stream workers
        commit them first, then every worker applies them: `ItemCooccurrence.apply_packed`).
        With ``snapshot``, the histories as of just before the events flagged in it are
        returned too (`Snapshots`; a training example is drawn from the history before its
        event).

        >>> a, b = CooccurrenceRecommender(), CooccurrenceRecommender()
        >>> events = [("ann", "x", 1.0, 1e9), ("ann", "y", 1.0, 1e9), ("bob", "x", 1.0, 1e9)]
        >>> a.learn_many(events)
        >>> deltas, _ = b.observe_many(events)
        >>> b.items.apply_packed(deltas)
        >>> a.recommend("bob", 1) == b.recommend("bob", 1)
        True
        """
        return self._observe(events, apply=False, snapshot=snapshot)

    def _observe(self, events: Iterable[tuple[str, str, float, float]], *, apply: bool,
                 snapshot: Sequence[bool] | None = None) -> tuple[PackedDeltas, Snapshots]:
        columns = tuple(zip(*events, strict=True)) or ((), (), (), ())
        n_events = len(columns[0])
        users = _interned(self._users, self._user, columns[0], np.int64)
        item_ids = _interned(self.items._index, self.items._intern, columns[1], np.int32)
        weights = np.array(columns[2], dtype=np.float64)
        ts = np.array(columns[3], dtype=np.float64)
        snap = (np.zeros(n_events, dtype=np.bool_) if snapshot is None else
                np.asarray(snapshot, dtype=np.bool_))
        g = decay_factors(ts, half_life_s=self.half_life_days * DAY_S, epoch=self.decay_epoch)
        items, h = self.items, self._histories
        h.ensure_users(len(self._user_ids))
        store = items._rows
        store.ensure_items(len(items._ids))
        changed = np.zeros(len(self._user_ids), dtype=np.bool_)
        pruned = np.zeros(len(items._ids), dtype=np.bool_)
        # sized from the batch's users (not from `history_cap`, which may be huge): each event
        # makes at most one delta of its own and evicts at most one item (more only from a
        # history stored over the cap: each over it evicts one more); a delta or a snapshot
        # holds at most the rest of its user's history, which in this batch stays within
        # max(its size now, min(its size now + the user's events, the cap))
        batch_users, per_user, events_of = np.unique(users, return_inverse=True,
                                                     return_counts=True)
        size_now = h.size[batch_users]
        longest = np.maximum(size_now, np.minimum(size_now + events_of, self.history_cap))
        deltas_of = 2 * events_of + np.maximum(size_now - self.history_cap, 0)
        n_deltas = 0 if apply else int(deltas_of.sum())
        n_pairs = 0 if apply else int((deltas_of * longest).sum())
        n_snap = int(snap.sum())
        n_snapped = int(longest[per_user][snap].sum())
        out_n = np.zeros(3, dtype=np.int64)
        out_item = np.empty(n_deltas, dtype=np.int32)
        out_end = np.empty(n_deltas, dtype=np.int64)
        out_stat = np.empty((n_deltas, 3))
        out_other = np.empty(n_pairs, dtype=np.int32)
        out_inc = np.empty(n_pairs)
        snap_end = np.empty(n_snap, dtype=np.int64)
        snap_item = np.empty(n_snapped, dtype=np.int32)
        snap_s, snap_t = np.empty(n_snapped), np.empty(n_snapped)
        h.item, h.s, h.t, h.g, store.cols, store.vals = observe_events(
            h.item, h.s, h.t, h.g, h.start, h.cap, h.size, h.top, h.garbage,
            store.cols, store.vals, store.start, store.cap, store.size, store.top,
            store.garbage, items._norm, items._powers, items._popularity, items._mass,
            items._churn, items._key, pruned, changed, users, item_ids, weights, ts, g, snap,
            self.history_cap, int(longest.max(initial=0)), self.row_cap, self.alpha,
            self._pairs, apply, out_item, out_end,
            out_stat, out_other, out_inc, out_n, snap_end, snap_item, snap_s, snap_t)
        items._drop_neighbours(np.flatnonzero(pruned))
        user_items = {}
        changed_users = np.flatnonzero(changed)
        with gc_paused():
            for u, latest in zip(changed_users.tolist(),
                                 self._latest_liked_many(changed_users), strict=True):
                if latest != self._latest[u]:
                    self._latest[u] = latest
                    user_items[self._user_ids[u]] = latest
            if apply:
                for user_id, latest in user_items.items():
                    items._set_user_items(user_id, dict(latest))
        if apply:
            if items.evict_coldest():
                self._drop_evicted()
            items.evict_inactive_users()
            return PackedDeltas.empty(), _no_snapshots()
        d, z, k = out_n.tolist()
        deltas = PackedDeltas(out_item[:d].astype(np.int64), out_end[:d].copy(),
                              out_stat[:d].copy(), out_other[:z].astype(np.int64),
                              out_inc[:z].copy(), user_items)
        sizes = np.diff(snap_end[:k], prepend=0)
        snapshots = Snapshots(snap_item, snap_s, snap_t, snap_end[:k] - sizes, sizes)
        return deltas, snapshots

    def _latest_liked(self, u: int) -> tuple[tuple[str, float], ...]:
        """User ``u``'s `UserHistory.latest_liked`, from the arrays."""
        return self._latest_liked_many(np.array([u], dtype=np.int64))[0]

    def _latest_liked_many(self, users: np.ndarray) -> list[tuple[tuple[str, float], ...]]:
        """`_latest_liked` of many users: the kernel picks each one's latest by time (ties at
        the cut kept), the ids' order settles ties here."""
        h = self._histories
        ptr, item, t = latest_liked(h.item, h.s, h.t, h.start, h.size, users,
                                    self.user_items_cap)
        names, times, ends = self.items.names(item), t.tolist(), ptr.tolist()
        latest = []
        for a, b in itertools.pairwise(ends):
            newest = sorted(zip(times[a:b], names[a:b], strict=True), reverse=True)
            latest.append(tuple((j, ti) for ti, j in newest[:self.user_items_cap]))
        return latest

    @classmethod
    def sharing(cls, items: ItemCooccurrence, **params: object) -> CooccurrenceRecommender:
        """A model with no histories over existing item statistics: a stream worker's batch
        loads its users' histories into one (`load_history`) and learns with `observe_many`."""
        model = cls(**params)  # type: ignore[arg-type]
        model.items = items
        return model

    def set_history(self, user_id: str, history: UserHistory) -> None:
        """Replace the user's history (e.g. with one a worker stored), leaving the item
        statistics as they are: they must already hold its contribution (a snapshot)."""
        self.load_history(user_id, *history.to_arrays())

    def load_history(self, user_id: str, item_ids: Sequence[str], s: np.ndarray,
                     t: np.ndarray, g: np.ndarray) -> None:
        """`set_history` from arrays: the user's items, feedback sums, last times and their
        decay weights."""
        u = self._user(user_id)
        self._histories.ensure_users(len(self._user_ids))
        self._histories.set(u, self.items.intern_all(item_ids).astype(np.int32), s, t, g)
        self._latest[u] = self._latest_liked(u)

    def history_arrays(self, user_id: str
                       ) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """The user's history as `load_history` takes it (empty when unknown)."""
        u = self._users.get(user_id)
        item, s, t, g = self._histories.entries(len(self._user_ids) if u is None else u)
        return self.items.names(item), s, t, g

    def _drop_evicted(self) -> None:
        """Take the items the cap evicted out of the histories that held them (without
        deltas: the statistics hold nothing of them any more), as the stream workers do when
        they next load such a history."""
        h, names, lookup = self._histories, self.items.names, self.items.live_lookup()
        for u in np.flatnonzero(h.size).tolist():
            item, s, t, g = h.entries(u)
            keep = self.items.held(names(item), s, lookup)
            if not keep.all():
                h.set(u, item[keep], s[keep], t[keep], g[keep])
                self._latest[u] = self._latest_liked(u)

    def compact(self) -> list[str]:
        """`ItemCooccurrence.compact`, keeping the items the histories hold (renumbered in
        them too); returns the ids dropped."""
        h, m = self._histories, self.items.n_items
        held = np.zeros(m, dtype=np.bool_)
        for u in np.flatnonzero(h.size).tolist():
            a = int(h.start[u])
            held[h.item[a:a + int(h.size[u])]] = True
        new_index, dropped = self.items._renumber(keep=held)
        if dropped:
            for u in np.flatnonzero(h.size).tolist():
                a, n = int(h.start[u]), int(h.size[u])
                h.item[a:a + n] = new_index[h.item[a:a + n]]
        return dropped

    def forget(self, user_id: str) -> None:
        """Remove the user and their whole contribution (erasure), as `UserHistory.forget`
        does in the stream workers."""
        history = self.histories.get(user_id)
        if history is None:
            return
        self.items.apply_many(history.forget(user_id=user_id))
        u = self._users[user_id]
        self._histories.clear(u)
        self._latest[u] = ()

    def recommend(self, user_id: str, n: int = 10, *, fresh: bool = False,
                  explain: bool = True) -> list[Recommendation]:
        """The user's top ``n`` (see `ItemCooccurrence.score`); trending items for a user
        without history."""
        return self.recommend_many([user_id], n, fresh=fresh, explain=explain)[user_id]

    def recommend_many(self, user_ids: Iterable[str], n: int = 10, *, fresh: bool = False,
                       explain: bool = True) -> dict[str, list[Recommendation]]:
        """`recommend` for many users, scored in one pass of a kernel, by user id."""
        user_ids = list(user_ids)
        h, items = self._histories, self.items
        known = [u for u in user_ids if u in self._users and h.size[self._users[u]] > 0]
        cold = set(user_ids) - set(known)
        trending = self.cold_start(n) if cold else []  # the same for every cold user
        out = {u: list(trending) for u in user_ids if u in cold}
        if not known:
            return out
        users = np.array([self._users[u] for u in known], dtype=np.int64)
        rec_ptr, rec_items, rec_affinity, exc_ptr, exc_items = recent_items(
            h.item, h.s, h.t, h.start, h.size, users, items._key, self.recent_items,
            self.exclude_seen)
        own = np.array([items._uindex.get(u, -1) for u in known], dtype=np.int64)
        mine_n = np.minimum(np.diff(rec_ptr), items.user_items_cap)
        lists = items.recommendations(items.rank_arrays(
            rec_ptr, rec_items, rec_affinity, exc_ptr, exc_items, own, mine_n, n,
            recency_half_life=self.recency_half_life,
            explain_items=self.explain_items if explain else 0, fresh=fresh, backfill=True,
            similar_users=self.similar_users, user_blend=self.user_blend))
        out.update(zip(known, lists, strict=True))
        return out

    def rank_snapshots(self, snapshots: Snapshots, user_ids: Sequence[str],
                       chosen: Sequence[str], n: int
                       ) -> tuple[RankedLists, np.ndarray, np.ndarray, np.ndarray]:
        """`recommend` for histories as they were at some point (`observe_many`'s snapshots,
        snapshot ``k`` of user ``user_ids[k]``), in one pass of the kernel: the top ``n`` of
        each as `RankedLists`, listed only when it holds the item ``chosen[k]`` (a training
        example is drawn only from a list that holds the chosen item), and the liked items each
        was scored from, newest first, with affinity (``ptr``, item indices, affinities)."""
        items = self.items
        rec_ptr, rec_items, rec_affinity, exc_ptr, exc_items = recent_items(
            snapshots.item, snapshots.s, snapshots.t, snapshots.start, snapshots.size,
            np.arange(len(user_ids), dtype=np.int64), items._key, self.recent_items,
            self.exclude_seen)
        own = np.array([items._uindex.get(u, -1) for u in user_ids], dtype=np.int64)
        mine_n = np.minimum(np.diff(rec_ptr), items.user_items_cap)
        wanted = np.array([items._index.get(i, -1) for i in chosen], dtype=np.int64)
        lists = items.rank_arrays(
            rec_ptr, rec_items, rec_affinity, exc_ptr, exc_items, own, mine_n, n,
            recency_half_life=self.recency_half_life, explain_items=self.explain_items,
            fresh=False, backfill=True, similar_users=self.similar_users,
            user_blend=self.user_blend, wanted=wanted)
        holds = np.zeros(len(user_ids), dtype=np.bool_)
        list_of = np.repeat(np.arange(len(user_ids)), np.diff(lists.ptr))
        holds[list_of[lists.item == wanted[list_of]]] = True
        return (dataclasses.replace(lists, listed=lists.listed & holds), rec_ptr, rec_items,
                rec_affinity)

    def cold_start(self, n: int) -> list[Recommendation]:
        return self.items.score([], n)


def warm_up() -> None:
    """Compile every kernel once (numba caches the machine code next to `models.kernels`), so
    that the first batch of a worker does not wait ~30 s for it. Run by ``scripts/bootstrap.sh``
    and the Docker build.

    >>> warm_up()
    """
    model = CooccurrenceRecommender(history_cap=2, row_cap=2, neighbour_cap=2)
    model.learn_many([("a", "x", 1.0, 1e9), ("a", "y", 1.0, 1e9), ("a", "z", -1.0, 1e9),
                      ("b", "x", 1.0, 1e9), ("b", "y", 1.0, 1e9), ("b", "w", 1.0, 1e9)])
    model.recommend_many(["a", "b"], 3)
    model.items.score([("x", 1.0)], 3, exclude=["x"], user_id="b", similar_users=2)
    model.items.similarity_matrix(["x", "q"], ["y", "z"])
    deltas, snapshots = model.observe_many([("b", "z", 1.0, 1e9)], [True])
    model.items.apply_packed(deltas)
    model.rank_snapshots(snapshots, ["b"], ["z"], 3)
    copy = ItemCooccurrence(row_cap=2, neighbour_cap=2, max_items=1)
    copy.load_bytes(model.items.to_bytes())
    copy.apply_many([Delta("v", ("x",), (1.0,), 1.0, 1.0)])  # over the cap: evicts
    copy.compact()
    model.forget("a")
