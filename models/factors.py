"""Item factors of implicit feedback: a user model beyond item neighbourhoods, for the ranker.

Implicit-feedback matrix factorisation (Hu, Koren & Volinsky, ICDM 2008): every item a user liked
is a preference of 1 with confidence ``1 + ALPHA``, every other item a preference of 0 with
confidence 1; alternating least squares fits user and item vectors. The trainer fits it on the
users' liked items it sees in its examples and publishes the item vectors with the MLP; a worker
never stores user vectors: it *folds a user in* from their liked items (one ``k x k`` solve, the
same solve ALS makes for a user), so a user's vector always reflects their history of the moment.

The ranker's feature ``factor_score`` is a candidate's predicted preference over the largest in
absolute value among the list's candidates (0 for an item the factors do not know, and for a
user none of whose items they know).

>>> baskets = {"ann": ["a", "b"], "bob": ["a", "b"], "cy": ["c", "d"], "dee": ["c", "d"]}
>>> factors = ItemFactors.fit(baskets, factors=2, seed=0)
>>> column = factor_scores(factors, np.array([0, 2]), ["b", "d"], [["a"]])
>>> bool(column[0] > column[1])  # a user who liked "a" prefers "b", liked with it, to "d"
True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

REG = 0.1  # L2 regularisation of every solve
ALPHA = 10.0  # confidence of a liked item: 1 + ALPHA
ITERATIONS = 12
# (set once on the bench.offline_ranker protocol, not tuned: that is where 0.4566 comes from)


@dataclass(frozen=True, slots=True, eq=False)
class ItemFactors:
    """Item vectors ``vectors[k]`` of items ``ids[k]`` (float32: what an artefact carries, so
    trainer and workers compute from the same numbers)."""

    ids: tuple[str, ...]
    vectors: np.ndarray
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    gram: np.ndarray = field(init=False, repr=False, compare=False)  # vectorsᵀ vectors, float64

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.ids):
            raise ValueError(f"{len(self.ids)} ids for vectors of shape {self.vectors.shape}")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("item ids repeat")
        object.__setattr__(self, "index", {item: k for k, item in enumerate(self.ids)})
        wide = self.vectors.astype(np.float64)
        object.__setattr__(self, "gram", wide.T @ wide)

    @property
    def rank(self) -> int:
        return self.vectors.shape[1]

    @classmethod
    def fit(cls, baskets: Mapping[str, Sequence[str]], *, factors: int, seed: int,
            max_items: int | None = None, iterations: int = ITERATIONS) -> ItemFactors:
        """ALS on users' liked items (``baskets``: user -> item ids). With ``max_items``, only
        the items liked by the most users (ties: smaller id) get a vector."""
        counts = Counter(item for items in baskets.values() for item in set(items))
        ranked = sorted(counts, key=lambda item: (-counts[item], item))
        ids = tuple(sorted(ranked[:max_items] if max_items is not None else ranked))
        index = {item: k for k, item in enumerate(ids)}
        users = [sorted({index[i] for i in items if i in index})
                 for _, items in sorted(baskets.items())]
        users = [row for row in users if row]
        by_item: list[list[int]] = [[] for _ in ids]
        for u, row in enumerate(users):
            for i in row:
                by_item[i].append(u)
        rng = np.random.default_rng(seed)
        x = rng.normal(0.0, 0.1, (len(users), factors))
        y = rng.normal(0.0, 0.1, (len(ids), factors))
        for _ in range(iterations):
            x = _solve_rows(y, y.T @ y, users)
            y = _solve_rows(x, x.T @ x, by_item)
        return cls(ids, y.astype(np.float32))

    def fold_in(self, baskets: Sequence[Sequence[str]]) -> np.ndarray:
        """The vectors [len(baskets), rank] of users who liked these items (a zero vector for a
        user none of whose items has a vector): ALS's user step against these item vectors. A
        row depends only on its own basket, as a set."""
        rows = [sorted({self.index[i] for i in items if i in self.index}) for items in baskets]
        return _solve_rows(self.vectors.astype(np.float64), self.gram, rows)


def _solve_rows(other: np.ndarray, gram: np.ndarray, rows: Sequence[Sequence[int]]
                ) -> np.ndarray:
    """For each row (the indices of its liked columns), the least-squares vector against
    ``other``: ``(G + ALPHA Σ y yᵀ + REG I) x = (1 + ALPHA) Σ y`` over its liked ``y``
    (``G = otherᵀ other``); zero for an empty row."""
    k = other.shape[1]
    out = np.zeros((len(rows), k))
    full = [r for r, liked in enumerate(rows) if liked]
    if not full:
        return out
    a = np.empty((len(full), k, k))
    b = np.empty((len(full), k))
    for n, r in enumerate(full):
        liked = other[rows[r]]
        a[n] = liked.T @ liked
        b[n] = liked.sum(axis=0)
    a *= ALPHA
    a += gram + REG * np.eye(k)
    out[full] = np.linalg.solve(a, (1.0 + ALPHA) * b[:, :, None])[:, :, 0]
    return out


def factor_scores(factors: ItemFactors | None, ptr: np.ndarray, item_ids: Sequence[str],
                  baskets: Sequence[Sequence[str]]) -> np.ndarray:
    """The ``factor_score`` column of candidate lists: list ``g`` (rows ``ptr[g]:ptr[g + 1]``
    of ``item_ids``) for the user who liked ``baskets[g]``; each candidate's predicted
    preference over the list's largest in absolute value. All zeros without factors."""
    n = int(ptr[-1])
    if factors is None or n == 0:
        return np.zeros(n)
    users = factors.fold_in(baskets)
    sizes = np.diff(ptr)
    group = np.repeat(np.arange(len(sizes)), sizes)
    index = np.array([factors.index.get(i, -1) for i in item_ids], dtype=np.int64)
    vectors = factors.vectors[np.maximum(index, 0)].astype(np.float64)
    raw = np.where(index >= 0, (vectors * users[group]).sum(axis=1), 0.0)
    top = np.zeros(len(sizes))
    starts = ptr[:-1][sizes > 0]
    top[sizes > 0] = np.maximum.reduceat(np.abs(raw), starts)
    top = top[group]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(top > 0, raw / top, 0.0)
