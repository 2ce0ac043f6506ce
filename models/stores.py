"""Item rows and user histories as arrays (see `models.kernels` for the layout and the kernels
that update them).

>>> rows = RowStore()
>>> rows.ensure_items(3)
>>> rows.row(0)
(array([], dtype=int32), array([], dtype=float64))
>>> histories = HistoryStore()
>>> histories.ensure_users(2)
>>> [len(a) for a in histories.entries(1)]
[0, 0, 0, 0]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from models.kernels import (
    EMPTY,
    MIN_HISTORY_SLAB,
    MIN_SLAB,
    compact_histories,
    compact_rows,
    history_room,
    load_rows,
    row_entries,
)


class RowStore:
    """The rows of ``C``, as arrays the kernels above take: ``cols``/``vals`` (the arena),
    ``start``/``cap``/``size`` per row, ``top`` (arena slots in use) and ``garbage`` (slots
    of slabs that rows have left)."""

    def __init__(self) -> None:
        self.cols = np.full(1 << 16, EMPTY, dtype=np.int32)
        self.vals = np.zeros(1 << 16)
        self.start = np.zeros(0, dtype=np.int64)
        self.cap = np.zeros(0, dtype=np.int64)
        self.size = np.zeros(0, dtype=np.int64)
        self.top = np.zeros(1, dtype=np.int64)
        self.garbage = np.zeros(1, dtype=np.int64)

    @property
    def n_rows(self) -> int:
        return len(self.start)

    def ensure_items(self, n: int) -> None:
        """Rows up to ``n`` items, the new ones empty (slabs of `MIN_SLAB` slots). Compacts the
        arena first when more than half of it is garbage, and keeps at least half as many slots
        free at its end as are in use (`reserve`)."""
        if self.garbage[0] > max(1 << 16, int(self.top[0]) // 2):
            self.compact()
        added = max(0, n - len(self.start))
        self.reserve(max(1 << 16, int(self.top[0]) // 2) + added * MIN_SLAB)
        if not added:
            return
        first = int(self.top[0])
        self.cols[first:first + added * MIN_SLAB] = EMPTY
        self.vals[first:first + added * MIN_SLAB] = 0.0
        self.top[0] = first + added * MIN_SLAB
        starts = first + MIN_SLAB * np.arange(added, dtype=np.int64)
        self.start = np.concatenate([self.start, starts])
        self.cap = np.concatenate([self.cap, np.full(added, MIN_SLAB, dtype=np.int64)])
        self.size = np.concatenate([self.size, np.zeros(added, dtype=np.int64)])

    def reserve(self, slots: int) -> None:
        """At least ``slots`` free at the arena's end, grown here (doubling) rather than in a
        kernel: numpy asks Linux to back large arrays with huge pages (``madvise``), numba's
        allocator does not, and the pair loop updates random rows of an arena of tens of MB,
        where 4 KiB pages make most of those updates miss the TLB too (learning the ML-100K
        replay with huge pages for every allocation, ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``,
        took 0.78x the time: best of five alternating processes each). A kernel still grows
        the arena when a batch needs more."""
        used = int(self.top[0])
        if used + slots <= len(self.cols):
            return
        size = max(2 * len(self.cols), used + slots)
        cols = np.full(size, EMPTY, dtype=np.int32)
        vals = np.zeros(size)
        cols[:used] = self.cols[:used]
        vals[:used] = self.vals[:used]
        self.cols, self.vals = cols, vals

    def compact(self) -> None:
        """Copy the live slabs to the front of a fresh arena (with as much room again)."""
        live = int(self.cap.sum())
        size = max(1 << 16, 2 * live)
        cols = np.full(size, EMPTY, dtype=np.int32)
        vals = np.zeros(size)
        start = np.zeros_like(self.start)
        self.top[0] = compact_rows(self.cols, self.vals, self.start, self.cap, cols, vals, start)
        self.cols, self.vals, self.start = cols, vals, start
        self.garbage[0] = 0

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``i``'s columns and counts (slab order)."""
        return row_entries(self.cols, self.vals, int(self.start[i]), int(self.cap[i]),
                           int(self.size[i]))

    def load(self, sizes: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        """Replace every row with a snapshot's rows (CSR: ``sizes`` entries per row)."""
        n = len(sizes)
        self.__init__()
        self.start = np.zeros(n, dtype=np.int64)
        self.cap = np.zeros(n, dtype=np.int64)
        self.size = np.zeros(n, dtype=np.int64)
        self.cols, self.vals = load_rows(
            self.cols, self.vals, self.start, self.cap, self.size, self.top, self.garbage,
            sizes.astype(np.int64), cols.astype(np.int32), vals.astype(np.float64))
        self.garbage[0] = 0

    def bytes_used(self) -> int:
        """Bytes of the live slabs and the row arrays (garbage and spare room not counted)."""
        return int(self.cap.sum()) * (4 + 8) + len(self.start) * 3 * 8


class HistoryStore:
    """Every user's history as arrays the kernel above takes."""

    def __init__(self) -> None:
        self.item = np.zeros(1 << 14, dtype=np.int32)
        self.s = np.zeros(1 << 14)
        self.t = np.zeros(1 << 14)
        self.g = np.zeros(1 << 14)
        self.start = np.zeros(0, dtype=np.int64)
        self.cap = np.zeros(0, dtype=np.int64)
        self.size = np.zeros(0, dtype=np.int64)
        self.top = np.zeros(1, dtype=np.int64)
        self.garbage = np.zeros(1, dtype=np.int64)

    def ensure_users(self, n: int) -> None:
        """Room for users up to ``n`` (new ones empty); compacts when half is garbage."""
        if self.garbage[0] > max(1 << 14, int(self.top[0]) // 2):
            self.compact()
        old = len(self.start)
        if n <= old:
            return
        self.start = np.concatenate([self.start, np.zeros(n - old, dtype=np.int64)])
        self.cap = np.concatenate([self.cap, np.zeros(n - old, dtype=np.int64)])
        self.size = np.concatenate([self.size, np.zeros(n - old, dtype=np.int64)])

    def compact(self) -> None:
        live = int(np.maximum(self.size, MIN_HISTORY_SLAB).sum())
        n = max(1 << 14, 2 * live)
        item, s, t, g = np.zeros(n, np.int32), np.zeros(n), np.zeros(n), np.zeros(n)
        start = np.zeros_like(self.start)
        self.top[0] = compact_histories(self.item, self.s, self.t, self.g, self.start, self.cap,
                               self.size, item, s, t, g, start)
        self.item, self.s, self.t, self.g, self.start = item, s, t, g, start
        self.garbage[0] = 0

    def entries(self, u: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """User ``u``'s items, feedback sums, times and decay weights (copies)."""
        if u >= len(self.start):
            empty = np.zeros(0)
            return np.zeros(0, dtype=np.int32), empty, empty.copy(), empty.copy()
        a, n = int(self.start[u]), int(self.size[u])
        return (self.item[a:a + n].copy(), self.s[a:a + n].copy(), self.t[a:a + n].copy(),
                self.g[a:a + n].copy())

    def clear(self, u: int) -> None:
        """Empty user ``u``'s history (its slab becomes garbage)."""
        self.garbage[0] += int(self.cap[u])
        self.start[u] = self.cap[u] = self.size[u] = 0

    def set(self, u: int, item: np.ndarray, s: np.ndarray, t: np.ndarray, g: np.ndarray
            ) -> None:
        """Replace user ``u``'s history with these entries."""
        self.clear(u)
        n = len(item)
        if n == 0:
            return
        cap = max(4, 1 << (n - 1).bit_length())
        self.item, self.s, self.t, self.g = history_room(self.item, self.s, self.t, self.g,
                                                         self.top, cap)
        a = int(self.top[0])
        self.item[a:a + n], self.s[a:a + n], self.t[a:a + n], self.g[a:a + n] = item, s, t, g
        self.top[0] = a + cap
        self.start[u], self.cap[u], self.size[u] = a, cap, n

    def bytes_used(self) -> int:
        return int(self.cap.sum()) * (4 + 3 * 8) + len(self.start) * 3 * 8


class RowTable:
    """Short rows of (id, value) in two arena arrays — the cached neighbour lists, an item's
    latest likers, a user's liked items — for the scoring kernel: row ``i`` is ``length[i]``
    entries from ``start[i]``. A new row is appended and the old one left as garbage,
    compacted away when it outweighs the live rows: only the rows that changed are written."""

    def __init__(self) -> None:
        self.ids = np.zeros(1 << 14, dtype=np.int64)
        self.sims = np.zeros(1 << 14)
        self.start = np.zeros(64, dtype=np.int64)
        self.length = np.zeros(64, dtype=np.int64)
        self.top = 0

    def put_lists(self, rows: Sequence[int], lists: Sequence[Sequence[int]]) -> None:
        """Rows ``rows[k]`` are now ``lists[k]`` (values zero), in one `put_many`."""
        if not rows:
            return
        ptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in lists], out=ptr[1:])
        ids = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64,
                          count=int(ptr[-1]))
        self.put_many(np.array(rows, dtype=np.int64), ptr, ids, np.zeros(len(ids)))

    def put_many(self, rows: np.ndarray, ptr: np.ndarray, ids: np.ndarray,
                  sims: np.ndarray) -> None:
        """Rows ``rows[k]`` are now ``ids[ptr[k]:ptr[k + 1]]`` (with those ``sims``)."""
        if not len(rows):
            return
        self.ensure_items(int(rows.max()) + 1)
        self.length[rows] = 0
        n = len(ids)
        if self.top + n > len(self.ids):
            live = int(self.length.sum())
            if self.top > 2 * live:
                self._compact(live + n)
            if self.top + n > len(self.ids):
                size = max(2 * len(self.ids), self.top + n)
                self.ids = np.concatenate([self.ids, np.zeros(size - len(self.ids), np.int64)])
                self.sims = np.concatenate([self.sims, np.zeros(size - len(self.sims))])
        self.ids[self.top:self.top + n] = ids
        self.sims[self.top:self.top + n] = sims
        self.start[rows] = self.top + ptr[:-1]
        self.length[rows] = np.diff(ptr)
        self.top += n

    def _compact(self, room: int) -> None:
        keep = np.flatnonzero(self.length)
        size = max(1 << 14, 2 * room)
        ids, sims = np.zeros(size, dtype=np.int64), np.zeros(size)
        top = 0
        for i in keep.tolist():
            a, n = int(self.start[i]), int(self.length[i])
            ids[top:top + n], sims[top:top + n] = self.ids[a:a + n], self.sims[a:a + n]
            self.start[i] = top
            top += n
        self.ids, self.sims, self.top = ids, sims, top

    def ensure_items(self, n: int) -> None:
        """Rows up to ``n`` (new ones empty), the row arrays grown by doubling."""
        if n > len(self.start):
            grow = max(n, 2 * len(self.start)) - len(self.start)
            self.start = np.concatenate([self.start, np.zeros(grow, dtype=np.int64)])
            self.length = np.concatenate([self.length, np.zeros(grow, dtype=np.int64)])
