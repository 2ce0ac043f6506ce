"""The numba kernels of the co-occurrence core: item rows and user histories in flat arrays.

All in one module on purpose: numba's on-disk cache (``cache=True``) is invalidated when the
file of a function changes, not when a function it calls in another file does; kernels that
call each other must live in one file.

Item rows (`models.stores.RowStore`): row ``i`` of ``C`` is a slab of ``cap[i]`` slots at
``start[i]`` in two arena arrays, ``cols`` (int32, -1 when empty) and ``vals`` (float64): 12
bytes a slot, filled to at most 90% (linear probing), where a Python dict entry cost ~88 bytes.
A row that fills its slab moves to one half as large again at the arena's end (so rows are
60–90% full: about 16 bytes an entry); the old slab is garbage until the store compacts.

User histories (`models.stores.HistoryStore`): user ``u``'s items are the first ``size[u]`` of a
slab of ``cap[u]`` slots at ``start[u]`` in four arena arrays: interned item, feedback sum, last
time and its decay weight.

The deltas are applied with the scalar model's semantics (`models.cooccurrence_oracle`): per
delta, add ``inc`` to ``C[i][j]`` and ``C[j][i]`` for each pair, prune every touched row that
went over ``row_cap`` to its ``row_cap // 2`` most similar entries (ties: smaller
`models.cooccurrence.item_key`), then add the delta's norm, popularity and like mass (a removal
that leaves only rounding residue leaves exactly 0). `observe_events` is
`models.cooccurrence.UserHistory.observe` (followed by `apply_delta`, or with the deltas written
out as flat arrays), per event and in order, with no Python object per event or pair. A kernel
that needs more arena returns new, larger arrays: callers rebind them.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import get_thread_id, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

EMPTY = -1
MIN_SLAB = 8  # slots of a new item row
MIN_HISTORY_SLAB = 4
MAX_LOAD = 0.9
CANCELLED = 1e-12  # see models.cooccurrence._cancel
PREFETCH_AHEAD = 8  # pairs (`_add_pairs`): 4 to 16 measured alike

@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to bring ``array[index]`` into cache for writing (LLVM's ``prefetch``; a
    hint, no effect on any result): the pair loop touches a random row per pair, and issuing
    those loads ahead overlaps their cache misses."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        # (address, 1 = for a write, 3 = keep in all cache levels, 1 = data)
        builder.call(fn, [builder.bitcast(builder.gep(data, [args[1]]), byte_ptr),
                          ir.Constant(i32, 1), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.none(array, index), codegen


@njit(cache=True, inline="always")
def _home(j, cap):
    """The first slot to probe for ``j`` in a slab of ``cap`` slots: a multiplicative hash
    mapped onto the slab by multiplication (no division: slabs are any size)."""
    return (((j * 2654435761) & 0xFFFFFFFF) * cap) >> 32


@njit(cache=True, inline="always")
def _find(cols, start, cap, j):
    """The slot of ``j`` in the slab, or the empty slot where it would go."""
    h = _home(j, cap)
    while True:
        k = cols[start + h]
        if k == j or k == EMPTY:
            return start + h
        h += 1
        if h == cap:
            h = 0


@njit(cache=True)
def slab_for(n):
    """Slots of a snug slab for ``n`` entries (at most `MAX_LOAD` full)."""
    return max(MIN_SLAB, int(np.ceil(n / MAX_LOAD)))


@njit(cache=True)
def _grown(cap):
    """The next slab size of a row that filled ``cap`` slots: half as large again, so that a
    growing row is 60–90% full (about 16 bytes an entry)."""
    return cap + max(MIN_SLAB, cap // 2)


@njit(cache=True)
def room(cols, vals, top, need):
    """The arena, grown (doubling) when fewer than ``need`` slots are free at its end."""
    if top[0] + need <= len(cols):
        return cols, vals
    n = len(cols) * 2
    while top[0] + need > n:
        n *= 2
    new_cols = np.full(n, EMPTY, np.int32)
    new_vals = np.zeros(n)
    new_cols[:top[0]] = cols[:top[0]]
    new_vals[:top[0]] = vals[:top[0]]
    return new_cols, new_vals


@njit(cache=True)
def _place(cols, vals, start, cap, size, top, garbage, i, ids, counts, n, new_cap):
    """Row ``i`` := the ``n`` entries (``ids``, ``counts``), in a new slab at the arena's end
    (the caller made room for ``new_cap`` slots)."""
    s = top[0]
    cols[s:s + new_cap] = EMPTY
    vals[s:s + new_cap] = 0.0
    for e in range(n):
        slot = _find(cols, s, new_cap, ids[e])
        cols[slot] = ids[e]
        vals[slot] = counts[e]
    top[0] = s + new_cap
    garbage[0] += cap[i]
    start[i] = s
    cap[i] = new_cap
    size[i] = n


@njit(cache=True)
def row_entries(cols, vals, s, c, n):
    """The ``n`` entries of the slab at ``s`` of ``c`` slots: columns and counts."""
    ids = np.empty(n, np.int32)
    counts = np.empty(n, np.float64)
    m = 0
    for t in range(s, s + c):
        if cols[t] != EMPTY:
            ids[m] = cols[t]
            counts[m] = vals[t]
            m += 1
    return ids, counts


@njit(cache=True, error_model="numpy")  # x / 0 gives inf or nan (then 0), as numpy does
def _prune(cols, vals, start, cap, size, top, garbage, norm, powers, key, i, keep, alpha,
           slab):
    """Keep row ``i``'s ``keep`` most similar entries (ties: smaller item key), in a new slab
    of ``slab`` slots."""
    n = size[i]
    ids, counts = row_entries(cols, vals, start[i], cap[i], n)
    sims = np.empty(n)
    ties = np.empty(n, np.int64)
    scale = norm[i] ** alpha
    for e in range(n):  # C[i][j] / (N[i]^alpha * N[j]^(1 - alpha)); 0 where not finite
        sim = counts[e] / (scale * _power(norm, powers, ids[e], 1.0 - alpha))
        sims[e] = sim if np.isfinite(sim) else 0.0
        ties[e] = key[ids[e]]
    kept = _kept(sims, ties, keep)
    _place(cols, vals, start, cap, size, top, garbage, i, ids[kept], counts[kept], len(kept),
           slab)


@njit(cache=True)
def _kept(values, keys, n):
    """The places of the first ``n`` of ``values`` (none NaN) descending, ties by ``keys``
    ascending (all distinct), in no order: what `_top` picks, without sorting them (a prune
    keeps a set; the row is a hash table)."""
    m = len(values)
    if m <= n:
        return np.arange(m)
    nth = -np.partition(-values, n - 1)[n - 1]  # the n-th largest value
    out = np.empty(n, np.int64)
    at = np.empty(m, np.int64)  # those at the n-th value
    k = t = 0
    for e in range(m):
        if values[e] > nth:
            out[k] = e
            k += 1
        elif values[e] == nth:
            at[t] = e
            t += 1
    at = at[:t]
    if k + t > n:  # only some of those at the n-th value: the smaller keys
        at = at[np.argsort(keys[at])]
    out[k:] = at[:n - k]
    return out


@njit(cache=True, inline="always")
def _power(norm, powers, j, exponent):
    """``norm[j] ** exponent``, remembered in ``powers[j]`` (the norm and exponent it was
    computed for, then the result): a function of those values alone, so right whatever
    changed since; pruning and neighbour lists would otherwise call ``pow`` per row entry,
    for norms that seldom change between two calls. Callers run one at a time."""
    x = norm[j]
    if powers[j, 0] != x or powers[j, 1] != exponent:
        powers[j, 0] = x
        powers[j, 1] = exponent
        powers[j, 2] = x ** exponent
    return powers[j, 2]


@njit(cache=True)
def cancel(total, change):
    """``total + change``, or 0 when a removal leaves only rounding residue."""
    new = total + change
    if change < 0.0 and abs(new) <= CANCELLED * -change:
        return 0.0
    return new


@njit(cache=True)
def _add_pairs(cols, vals, start, cap, size, top, garbage, churn, i, others, incs, n,
               full_cap):
    """``C[i][j] += inc`` and ``C[j][i] += inc`` for each pair: the hot loop, written out (the
    caller made room for every row to move to a larger slab). A row grows by half, but not
    past ``full_cap`` slots while those hold one entry more than the row cap: a row is pruned
    there, so more room would stay empty."""
    for ahead in range(n + PREFETCH_AHEAD):
        if ahead < n:  # the slot of C[j][i], PREFETCH_AHEAD pairs before it is updated
            j = others[ahead]
            slot = start[j] + _home(i, cap[j])
            _prefetch(cols, slot)
            _prefetch(vals, slot)
        p = ahead - PREFETCH_AHEAD
        if p < 0:
            continue
        j = others[p]
        inc = incs[p]
        for side in range(2):
            if side == 0:
                r, c = i, j
            else:
                r, c = j, i
            base, width = start[r], cap[r]
            h = _home(c, width)
            k = cols[base + h]
            while k != c and k != EMPTY:
                h += 1
                if h == width:
                    h = 0
                k = cols[base + h]
            if k == EMPTY:
                if size[r] + 1 > width * MAX_LOAD:  # move to a larger slab
                    ids, counts = row_entries(cols, vals, start[r], width, size[r])
                    grown = _grown(width)
                    if grown > full_cap and width < full_cap:
                        grown = full_cap
                    _place(cols, vals, start, cap, size, top, garbage, r, ids, counts,
                           size[r], grown)
                    base = start[r]
                    h = _find(cols, base, cap[r], c) - base
                cols[base + h] = c
                size[r] += 1
            vals[base + h] += inc
        a = abs(inc)
        churn[j] += a
        churn[i] += a


@njit(cache=True)
def apply_delta(cols, vals, start, cap, size, top, garbage, norm, powers, popularity, mass,
                churn, key, pruned, i, others, incs, n, d_norm, d_pop, d_mass, row_cap, alpha):
    """Apply one delta of item ``i`` with pairs ``others[:n]``, ``incs[:n]``."""
    if n > 0:
        keep = row_cap // 2
        full = slab_for(row_cap + 1)
        # a pruned row goes to the slab it would grow into at its next new entry: a snug one
        # (`slab_for`) is already over `MAX_LOAD` with one more
        pruned_slab = min(_grown(slab_for(keep)), full)
        # room for every touched row to move to a larger slab (row i perhaps several times);
        # a prune makes its own room (reserving it for every row up front made a large
        # ROW_CAP grow the arena by the delta's length times a pruned slab)
        need = 5 * slab_for(size[i] + n)
        for p in range(n):
            need += _grown(cap[others[p]])
        if top[0] + need > len(cols):
            cols, vals = room(cols, vals, top, need)
        _add_pairs(cols, vals, start, cap, size, top, garbage, churn, i, others, incs, n, full)
        # the rows over the cap: the delta's own row first, then the others in order
        for p in range(-1, n):
            j = i if p < 0 else others[p]
            if size[j] > row_cap:
                if top[0] + pruned_slab > len(cols):
                    cols, vals = room(cols, vals, top, pruned_slab)
                _prune(cols, vals, start, cap, size, top, garbage, norm, powers, key, j, keep,
                       alpha, pruned_slab)
                pruned[j] = True
    churn[i] += abs(d_norm)
    # floored at 0: only an item evicted while users still held it (`drop_items`) would go
    # below, when those users' contributions leave
    norm[i] = max(0.0, cancel(norm[i], d_norm))
    popularity[i] = max(0.0, cancel(popularity[i], d_pop))
    mass[i] = max(0.0, cancel(mass[i], d_mass))
    return cols, vals


@njit(cache=True)
def apply_deltas(cols, vals, start, cap, size, top, garbage, norm, powers, popularity, mass,
                 churn, key, pruned, d_item, d_ptr, p_other, p_inc, d_norm, d_pop, d_mass, row_cap,
                 alpha):
    """Apply deltas in order; delta ``d`` has the pairs ``d_ptr[d]..d_ptr[d + 1]``."""
    for d in range(len(d_item)):
        a, b = d_ptr[d], d_ptr[d + 1]
        cols, vals = apply_delta(cols, vals, start, cap, size, top, garbage, norm, powers,
                                 popularity, mass, churn, key, pruned, d_item[d], p_other[a:b],
                                 p_inc[a:b], b - a, d_norm[d], d_pop[d], d_mass[d], row_cap,
                                 alpha)
    return cols, vals


@njit(cache=True)
def drop_items(cols, vals, start, cap, size, gone, touched):
    """Empty the rows of the items flagged in ``gone`` and take their entries out of every
    other row (rewritten in place, in their slab); flag in ``touched`` the rows that lost an
    entry. One pass over the arena."""
    for r in range(len(start)):
        s, c, n = start[r], cap[r], size[r]
        if n == 0:
            continue
        if gone[r]:
            cols[s:s + c] = EMPTY
            vals[s:s + c] = 0.0
            size[r] = 0
            continue
        hit = False
        for t in range(s, s + c):
            if cols[t] != EMPTY and gone[cols[t]]:
                hit = True
                break
        if not hit:
            continue
        ids, counts = row_entries(cols, vals, s, c, n)
        cols[s:s + c] = EMPTY
        vals[s:s + c] = 0.0
        kept = 0
        for e in range(n):
            if not gone[ids[e]]:
                slot = _find(cols, s, c, ids[e])
                cols[slot] = ids[e]
                vals[slot] = counts[e]
                kept += 1
        size[r] = kept
        touched[r] = True


@njit(cache=True, nogil=True)  # snapshots are serialised in a thread beside the batches
def renumbered_rows(cols, vals, start, cap, size, new_index, n_new):
    """The rows as CSR (sizes, columns, counts) under a new numbering: row ``i`` becomes
    row ``new_index[i]`` (-1: dropped, and so are its entries in other rows), each row's
    entries by new column."""
    sizes = np.zeros(n_new, np.int64)
    for i in range(len(start)):
        k = new_index[i]
        if k < 0:
            continue
        for t in range(start[i], start[i] + cap[i]):
            if cols[t] != EMPTY and new_index[cols[t]] >= 0:
                sizes[k] += 1
    ptr = np.zeros(n_new + 1, np.int64)
    for k in range(n_new):
        ptr[k + 1] = ptr[k] + sizes[k]
    out_cols = np.empty(ptr[n_new], np.int64)
    out_vals = np.empty(ptr[n_new])
    for i in range(len(start)):
        k = new_index[i]
        if k < 0:
            continue
        at = ptr[k]
        for t in range(start[i], start[i] + cap[i]):
            if cols[t] != EMPTY and new_index[cols[t]] >= 0:
                out_cols[at] = new_index[cols[t]]
                out_vals[at] = vals[t]
                at += 1
        order = np.argsort(out_cols[ptr[k]:at], kind="mergesort")
        out_cols[ptr[k]:at] = out_cols[ptr[k]:at][order]
        out_vals[ptr[k]:at] = out_vals[ptr[k]:at][order]
    return sizes, out_cols, out_vals


@njit(cache=True)
def compact_rows(cols, vals, start, cap, new_cols, new_vals, new_start):
    top = 0
    for i in range(len(start)):
        c = cap[i]
        s = start[i]
        new_cols[top:top + c] = cols[s:s + c]
        new_vals[top:top + c] = vals[s:s + c]
        new_start[i] = top
        top += c
    return top


@njit(cache=True)
def load_rows(cols, vals, start, cap, size, top, garbage, sizes, row_cols, row_vals):
    at = 0
    for i in range(len(sizes)):
        n = sizes[i]
        need = slab_for(n)
        if top[0] + need > len(cols):
            cols, vals = room(cols, vals, top, need)
        _place(cols, vals, start, cap, size, top, garbage, i, row_cols[at:at + n],
               row_vals[at:at + n], n, need)
        at += n
    return cols, vals




@njit(cache=True)
def history_room(item, s, t, g, top, need):
    """The arena, grown (doubling) when fewer than ``need`` slots are free at its end."""
    if top[0] + need <= len(item):
        return item, s, t, g
    n = len(item) * 2
    while top[0] + need > n:
        n *= 2
    used = top[0]
    new_item = np.zeros(n, np.int32)
    new_s, new_t, new_g = np.zeros(n), np.zeros(n), np.zeros(n)
    new_item[:used] = item[:used]
    new_s[:used] = s[:used]
    new_t[:used] = t[:used]
    new_g[:used] = g[:used]
    return new_item, new_s, new_t, new_g


@njit(cache=True)
def observe_events(h_item, h_s, h_t, h_g, h_start, h_cap, h_size, h_top, h_garbage,
                   cols, vals, start, cap, size, top, garbage, norm, powers, popularity, mass,
                   churn, key, pruned, changed, ev_user, ev_item, ev_weight, ev_ts, ev_g, ev_snap,
                   history_cap, longest, row_cap, alpha, pairs, apply, out_item, out_end,
                   out_stat, out_other, out_inc, out_n, snap_end, snap_item, snap_s, snap_t):
    """Learn the events in order: each updates its user's history (``changed[u]`` set) and
    makes deltas — the event's own, then one per item evicted over ``history_cap`` (the
    oldest, ties: smaller item key). With ``apply`` the deltas are applied to the item
    statistics at once (`apply_delta`); without, they are appended to the ``out_*`` arrays
    (delta ``d``: item ``out_item[d]``, pairs up to ``out_end[d]`` in ``out_other``/``out_inc``,
    norm, popularity and like mass in ``out_stat[d]``; counts in ``out_n[0]``, ``out_n[1]``)
    and the statistics are left as they were. Before an event with ``ev_snap[e]`` set, the
    entries of its user's history (item, feedback sum, time) last touched before the event's
    time are copied to the ``snap_*`` arrays (snapshot ``k`` ends at ``snap_end[k]``; count in
    ``out_n[2]``). Counts the co-occurrence pairs in ``pairs[0]``. Returns the history and row
    arenas (new arrays when they had to grow)."""
    others = np.empty(longest, np.int32)
    incs = np.empty(longest)
    for e in range(len(ev_user)):
        u, item, w, ts, g = ev_user[e], ev_item[e], ev_weight[e], ev_ts[e], ev_g[e]
        hs, n = h_start[u], h_size[u]
        if ev_snap[e]:
            k, z = out_n[2], (snap_end[out_n[2] - 1] if out_n[2] > 0 else 0)
            for q in range(hs, hs + n):
                if h_t[q] < ts:  # as of just before the event's time (see `Snapshots`)
                    snap_item[z] = h_item[q]
                    snap_s[z] = h_s[q]
                    snap_t[z] = h_t[q]
                    z += 1
            snap_end[k] = z
            out_n[2] = k + 1
        p = -1
        for q in range(hs, hs + n):
            if h_item[q] == item:
                p = q
                break
        if p < 0:
            if n + 1 > h_cap[u]:  # move to a slab twice the size
                new_cap = max(MIN_HISTORY_SLAB, 2 * h_cap[u])
                h_item, h_s, h_t, h_g = history_room(h_item, h_s, h_t, h_g, h_top, new_cap)
                ns = h_top[0]
                h_item[ns:ns + n] = h_item[hs:hs + n]
                h_s[ns:ns + n] = h_s[hs:hs + n]
                h_t[ns:ns + n] = h_t[hs:hs + n]
                h_g[ns:ns + n] = h_g[hs:hs + n]
                h_top[0] = ns + new_cap
                h_garbage[0] += h_cap[u]
                h_start[u], h_cap[u] = ns, new_cap
                hs = ns
            p = hs + n
            h_item[p] = item
            n += 1
            h_size[u] = n
            s0, a0, t0, g0 = 0.0, 0.0, ts, g
        else:
            s0, t0, g0 = h_s[p], h_t[p], h_g[p]
            a0 = max(0.0, s0)
        s1 = s0 + w
        a1 = max(0.0, s1)
        if ts >= t0:
            t1, g1 = ts, g
        else:
            t1, g1 = t0, g0
        h_s[p], h_t[p], h_g[p] = s1, t1, g1
        changed[u] = True
        if a1 != a0 or (g1 != g0 and a1 > 0.0):
            k = 0
            for q in range(hs, hs + n):
                if q != p and h_s[q] > 0.0:
                    gq = h_g[q]
                    others[k] = h_item[q]
                    if a0 == 0.0:  # the common case: a new like
                        incs[k] = h_s[q] * a1 * (g1 if g1 > gq else gq)
                    else:
                        incs[k] = h_s[q] * (a1 * (g1 if g1 > gq else gq)
                                            - a0 * (g0 if g0 > gq else gq))
                    k += 1
            d_norm = a1 * a1 * g1 - a0 * a0 * g0
            d_pop = a1 * g1 - a0 * g0
            pairs[0] += k
            if k > 0 or d_norm != 0.0 or d_pop != 0.0:
                if apply:
                    cols, vals = apply_delta(cols, vals, start, cap, size, top, garbage, norm,
                                             powers, popularity, mass, churn, key, pruned, item,
                                             others, incs, k, d_norm, d_pop, a1 - a0,
                                             row_cap, alpha)
                else:
                    _emit(out_item, out_end, out_stat, out_other, out_inc, out_n, item,
                          others, incs, k, d_norm, d_pop, a1 - a0)
        while n > history_cap:
            o = hs
            for q in range(hs + 1, hs + n):
                if h_t[q] < h_t[o] or (h_t[q] == h_t[o] and key[h_item[q]] < key[h_item[o]]):
                    o = q
            gone, a, ge = h_item[o], max(0.0, h_s[o]), h_g[o]
            last = hs + n - 1
            h_item[o], h_s[o], h_t[o], h_g[o] = h_item[last], h_s[last], h_t[last], h_g[last]
            n -= 1
            h_size[u] = n
            if a == 0.0:
                continue
            k = 0
            for q in range(hs, hs + n):
                if h_s[q] > 0.0:
                    others[k] = h_item[q]
                    incs[k] = -a * h_s[q] * max(ge, h_g[q])
                    k += 1
            pairs[0] += k
            if apply:
                cols, vals = apply_delta(cols, vals, start, cap, size, top, garbage, norm,
                                         powers, popularity, mass, churn, key, pruned, gone,
                                         others, incs, k, -a * a * ge, -a * ge, -a, row_cap,
                                         alpha)
            else:
                _emit(out_item, out_end, out_stat, out_other, out_inc, out_n, gone, others,
                      incs, k, -a * a * ge, -a * ge, -a)
    return h_item, h_s, h_t, h_g, cols, vals


@njit(cache=True)
def _emit(out_item, out_end, out_stat, out_other, out_inc, out_n, item, others, incs, k,
          d_norm, d_pop, d_mass):
    """Append one delta to the ``out_*`` arrays of `observe_events` (sized by the caller)."""
    d, z = out_n[0], out_n[1]
    out_item[d] = item
    out_other[z:z + k] = others[:k]
    out_inc[z:z + k] = incs[:k]
    out_end[d] = z + k
    out_stat[d, 0] = d_norm
    out_stat[d, 1] = d_pop
    out_stat[d, 2] = d_mass
    out_n[0] = d + 1
    out_n[1] = z + k


@njit(cache=True)
def compact_histories(item, s, t, g, start, cap, size, new_item, new_s, new_t, new_g,
                      new_start):
    top = 0
    for u in range(len(start)):
        a, n = start[u], size[u]
        new_item[top:top + n] = item[a:a + n]
        new_s[top:top + n] = s[a:a + n]
        new_t[top:top + n] = t[a:a + n]
        new_g[top:top + n] = g[a:a + n]
        new_start[u] = top
        cap[u] = max(n, MIN_HISTORY_SLAB)
        top += cap[u]
    return top




# --- scoring ------------------------------------------------------------------------------------

@njit(cache=True)
def round12(x):
    """``x`` rounded to 12 significant digits of its binary mantissa, as
    `models.cooccurrence.round12` (numpy's ``round``: multiply, ``rint``, divide)."""
    m, e = math.frexp(x)
    return math.ldexp(np.rint(m * 1e12) / 1e12, e)


@njit(cache=True)
def _top(values, keys, idx, n):
    """The first ``n`` of ``idx`` by ``values`` (none NaN) descending, ties by ``keys``
    ascending, then by place in ``idx``."""
    if len(idx) > n:  # only those at or above the n-th value (ties included) are sorted
        v = values[idx]
        nth = -np.partition(-v, n - 1)[n - 1]
        idx = idx[v >= nth]
    # by value in one (unstable) sort, then each run of equal values in the order that two
    # stable sorts (by key, then by value) give: by key, then by place in idx
    order = np.argsort(-values[idx])
    m = len(order)
    a = 0
    while a < m:
        v = values[idx[order[a]]]
        b = a + 1
        while b < m and values[idx[order[b]]] == v:
            b += 1
        if b - a > 1:
            run = np.sort(order[a:b])
            order[a:b] = run[np.argsort(keys[idx[run]], kind="mergesort")]
        a = b
    return idx[order[:n]]


@njit(cache=True, parallel=True)
def score_users(rec_ptr, rec_items, rec_affinity, exc_ptr, exc_items, own_user, mine_n,
                nb_start, nb_len, nb_ids, nb_sims, lk_start, lk_len, lk_users, ui_start,
                ui_count, ui_items, ui_len,
                item_key, user_key, n, recency_half_life, explain_items, wanted, similar_users,
                user_blend, out_items, out_score, out_item_part, out_user_part, out_users,
                out_count, out_because, scores, from_users, seen, excluded, position, touched,
                values, hits, overlap, overlapping, sims):
    """Score every request (a user's liked items newest first, with their affinity, and the
    items to exclude) as `models.cooccurrence.ItemCooccurrence.score` describes: the top ``n``
    items with their scores, parts and source, and the ``explain_items`` recent items that
    added most to each (ties: smaller item key). Item ``j``'s neighbour list is
    ``nb_ids``/``nb_sims`` from ``nb_start[j]``, ``nb_len[j]`` long; the similar-user index
    alike (``lk_*``: an item's latest likers; ``ui_*``: a user's items, ``ui_len`` how many
    items the user has, interned or not). A request with a ``wanted`` item (>= 0) whose full
    top ``n`` does not hold it gets no explanations (its caller drops it). Writes the outputs
    row by row."""
    # the scratch arrays (per thread, per item: scores, from_users, seen, excluded,
    # position = -1, touched, values, hits; per indexed user: overlap, overlapping, sims) are the
    # caller's, one row a thread, at least as long as the items and users, zero (position -1)
    # where read before written, and left so: every request resets what it touched. Requests
    # are independent: they are scored on all of numba's threads.
    for q in prange(len(rec_ptr) - 1):
        k = get_thread_id()
        _score_user(q, rec_ptr, rec_items, rec_affinity, exc_ptr, exc_items, own_user, mine_n,
                    nb_start, nb_len, nb_ids, nb_sims, lk_start, lk_len, lk_users, ui_start,
                    ui_count, ui_items, ui_len, item_key, user_key, n, recency_half_life,
                    explain_items, wanted, similar_users, user_blend, out_items, out_score,
                    out_item_part, out_user_part, out_users, out_count, out_because,
                    scores[k], from_users[k], seen[k], excluded[k], position[k], touched[k],
                    values[k], hits[k], overlap[k], overlapping[k], sims[k])


@njit(cache=True)
def _score_user(q, rec_ptr, rec_items, rec_affinity, exc_ptr, exc_items, own_user, mine_n,
                nb_start, nb_len, nb_ids, nb_sims, lk_start, lk_len, lk_users, ui_start,
                ui_count, ui_items, ui_len, item_key, user_key, n, recency_half_life,
                explain_items, wanted, similar_users, user_blend, out_items, out_score,
                out_item_part, out_user_part, out_users, out_count, out_because, scores,
                from_users, seen, excluded, position, touched, values, hits, overlap, overlapping,
                sims):
    """Request ``q`` of `score_users`. Explanations are found once the top items are known
    (`_explain_top`, told how many additions each item had), and not for a request that is
    dropped."""
    a, b = rec_ptr[q], rec_ptr[q + 1]
    t = 0
    contributors = np.empty(b - a, np.int64)
    weights = np.empty(b - a)
    c = 0
    for r in range(a, b):
        j = rec_items[r]
        if j < 0:
            continue
        w = rec_affinity[r] * 0.5 ** ((r - a) / recency_half_life)
        lo, hi = nb_start[j], nb_start[j] + nb_len[j]
        if hi == lo:
            continue
        for e in range(lo, hi):
            k = nb_ids[e]
            if not seen[k]:
                seen[k] = True
                touched[t] = k
                t += 1
            scores[k] += w * nb_sims[e]
            hits[k] += 1
        contributors[c] = j
        weights[c] = w
        c += 1
    for e in range(exc_ptr[q], exc_ptr[q + 1]):
        k = exc_items[e]
        if k >= 0:
            excluded[k] = True
            scores[k] = 0.0
    blended = False
    if similar_users > 0:
        u_count = 0
        for r in range(a, a + mine_n[q]):
            j = rec_items[r]
            if j < 0:
                continue
            for e in range(lk_start[j], lk_start[j] + lk_len[j]):
                v = lk_users[e]
                if v != own_user[q]:
                    if overlap[v] == 0:
                        overlapping[u_count] = v
                        u_count += 1
                    overlap[v] += 1
        if u_count > 0:
            users = overlapping[:u_count].copy()
            for v in users:
                sims[v] = overlap[v] / np.sqrt(mine_n[q] * ui_len[v])
                overlap[v] = 0
            chosen = _top(sims, user_key, users, similar_users)
            for v in chosen:
                for e in range(ui_start[v], ui_start[v] + ui_count[v]):
                    k = ui_items[e]
                    if k >= 0 and not excluded[k]:
                        if not seen[k]:
                            seen[k] = True
                            touched[t] = k
                            t += 1
                        from_users[k] += sims[v]
            for v in users:
                sims[v] = 0.0
        top_items, top_users = 0.0, 0.0
        for x in range(t):
            k = touched[x]
            top_items = max(top_items, scores[k])
            top_users = max(top_users, from_users[k])
        if top_users > 0.0:
            blended = True
            for x in range(t):
                k = touched[x]
                part = scores[k] / top_items if top_items > 0.0 else scores[k]
                from_users[k] = user_blend * from_users[k] / top_users
                scores[k] = part  # the item part; the total is part + from_users
    candidates = np.empty(t, np.int64)
    n_cand = 0
    for x in range(t):
        k = touched[x]
        total = scores[k] + from_users[k] if blended else scores[k]
        if total > 0.0:
            candidates[n_cand] = k
            values[k] = round12(total)
            n_cand += 1
    top = _top(values, item_key, candidates[:n_cand], n)
    out_count[q] = len(top)
    for p in range(len(top)):
        k = top[p]
        total = scores[k] + from_users[k] if blended else scores[k]
        out_items[q, p] = k
        out_score[q, p] = total
        out_item_part[q, p] = scores[k]
        out_user_part[q, p] = from_users[k]
        out_users[q, p] = blended and from_users[k] * 2 > total
        position[k] = p
    dropped = wanted[q] >= 0 and len(top) == n and position[wanted[q]] < 0
    if explain_items > 0 and c > 0 and len(top) > 0 and not dropped:
        out_because[q, :len(top), :] = _explain_top(top, position, contributors[:c],
                                                    weights[:c], nb_start, nb_len, nb_ids,
                                                    nb_sims, item_key, explain_items, hits)
    for p in range(len(top)):
        position[top[p]] = -1
    for x in range(t):
        k = touched[x]
        scores[k] = 0.0
        from_users[k] = 0.0
        seen[k] = False
        hits[k] = 0
    for e in range(exc_ptr[q], exc_ptr[q + 1]):
        k = exc_items[e]
        if k >= 0:
            excluded[k] = False


@njit(cache=True, inline="always")
def _explain(best, best_value, j, added, item_key):
    """Offer contributor ``j``'s addition to an item's explanation: its slots hold the
    contributors of the largest rounded additions, ties to the smaller item key (-1: empty),
    whatever the order they are offered in. Returns whether it took the offer."""
    last = len(best) - 1
    # most offers lose to a full explanation: below its last value by more than rounding
    # can move an addition (`round12` moves it by at most 1e-12 of itself), skip the rounding
    if added <= 0.0 or (best[last] >= 0 and added < best_value[last] * (1.0 - 1e-11)):
        return False
    value = round12(added)
    for slot in range(last + 1):
        held = best[slot]
        if held < 0 or value > best_value[slot] or (
                value == best_value[slot] and item_key[j] < item_key[held]):
            for z in range(last, slot, -1):
                best[z] = best[z - 1]
                best_value[z] = best_value[z - 1]
            best[slot] = j
            best_value[slot] = value
            return True
    return False


@njit(cache=True)
def _explain_top(top, position, contributors, weights, nb_start, nb_len, nb_ids, nb_sims,
                 item_key, explain_items, hits):
    """The explanations of the ``top`` items only (``position``: an item's place in it, -1
    when not there; ``hits``: how many contributors' lists hold each item): each contributor's
    neighbour list walked again, most similar first, until its additions fall below what any
    top item's explanation could still take (`_explain_floor`)."""
    best = np.full((len(top), explain_items), -1, np.int64)
    best_value = np.zeros((len(top), explain_items))
    left = np.empty(len(top), np.int64)  # additions to an item not offered yet
    for p in range(len(top)):
        left[p] = hits[top[p]]
    floor = _explain_floor(best, best_value, left)
    for ci in range(len(contributors)):
        if floor == np.inf:  # every explanation is final
            break
        j, w = contributors[ci], weights[ci]
        for e in range(nb_start[j], nb_start[j] + nb_len[j]):
            added = w * nb_sims[e]
            if added < floor:  # and so is every later one: the list is most similar first
                break
            p = position[nb_ids[e]]
            if p >= 0:
                left[p] -= 1
                if _explain(best[p], best_value[p], j, added, item_key) or left[p] == 0:
                    floor = _explain_floor(best, best_value, left)
    return best


@njit(cache=True, inline="always")
def _explain_floor(best, best_value, left):
    """An addition below which no top item's explanation can change: none while an item
    with additions still to come has an empty slot (0), else just under the smallest last
    value of those items (`round12` moves an addition by at most 1e-12 of itself; the
    similarities of a list go down but for such rounding), infinite when all are final."""
    last = best.shape[1] - 1
    floor = np.inf
    for p in range(len(left)):
        if left[p] > 0:
            if best[p, last] < 0:
                return 0.0
            floor = min(floor, best_value[p, last])
    return floor * (1.0 - 1e-10)


@njit(cache=True, inline="always")
def _liked(h_s, a, n):
    """The places ``a..a + n`` of a history slab whose feedback sum is positive."""
    liked = np.empty(n, np.int64)
    c = 0
    for p in range(a, a + n):
        if h_s[p] > 0.0:
            liked[c] = p
            c += 1
    return liked[:c]


@njit(cache=True)
def latest_liked(h_item, h_s, h_t, h_start, h_size, users, limit):
    """Per user, the liked entries (feedback sum > 0) at or after the time of their
    ``limit``-th latest — ties at that time all kept — newest first: the candidates of
    `models.cooccurrence.UserHistory.latest_liked`, whose ties go by item id (a string, so
    the caller orders them). CSR arrays: user ``k``'s are ``ptr[k]..ptr[k + 1]`` of the
    interned items and their times."""
    total = 0
    for u in users:
        total += h_size[u]
    ptr = np.zeros(len(users) + 1, np.int64)
    out_item = np.empty(total, np.int32)
    out_t = np.empty(total)
    z = 0
    for k in range(len(users)):
        u = users[k]
        liked = _liked(h_s, h_start[u], h_size[u])
        if len(liked) > limit:  # only those at or after the limit-th latest time
            nth = -np.partition(-h_t[liked], limit - 1)[limit - 1]
            liked = liked[h_t[liked] >= nth]
        for p in liked[np.argsort(-h_t[liked], kind="mergesort")]:
            out_item[z] = h_item[p]
            out_t[z] = h_t[p]
            z += 1
        ptr[k + 1] = z
    return ptr, out_item[:z], out_t[:z]


@njit(cache=True)
def recent_items(h_item, h_s, h_t, h_start, h_size, users, item_key, limit, exclude_seen):
    """Per user, the liked items newest first (ties: smaller item key; at most ``limit``)
    with their affinity, and the items to exclude (all of the history, or none): CSR arrays
    for `score_users`."""
    total_rec, total_exc = 0, 0
    for u in users:
        total_rec += min(limit, h_size[u])
        if exclude_seen:
            total_exc += h_size[u]
    rec_ptr = np.zeros(len(users) + 1, np.int64)
    rec_items = np.empty(total_rec, np.int64)
    rec_affinity = np.empty(total_rec)
    exc_ptr = np.zeros(len(users) + 1, np.int64)
    exc_items = np.empty(total_exc, np.int64)
    r, x = 0, 0
    for q in range(len(users)):
        u = users[q]
        a, n = h_start[u], h_size[u]
        liked = _liked(h_s, a, n)
        c = len(liked)
        if exclude_seen:
            exc_items[x:x + n] = h_item[a:a + n]
            x += n
        keys = np.empty(c, np.int64)
        for e in range(c):
            keys[e] = item_key[h_item[liked[e]]]
        order = liked[np.argsort(keys, kind="mergesort")]
        order = order[np.argsort(-h_t[order], kind="mergesort")][:limit]
        for p in order:
            rec_items[r] = h_item[p]
            rec_affinity[r] = h_s[p]
            r += 1
        rec_ptr[q + 1] = r
        exc_ptr[q + 1] = x
    return rec_ptr, rec_items[:r], rec_affinity[:r], exc_ptr, exc_items[:x]


@njit(cache=True)
def mmr(rel, pool, nb_start, nb_len, nb_ids, nb_sims, position, lam, n):
    """Greedy maximal marginal relevance over the candidates ``pool`` (item indices, -1:
    unknown) with relevance ``rel``, as `models.rerank._mmr` does it with the model's neighbour
    lists as the similarity: the chosen candidates and their gains (rounded to 12 digits),
    ties to the earlier candidate. ``position`` is scratch (-1 per item), left as found."""
    p = len(rel)
    for r in range(p):
        if pool[r] >= 0:
            position[pool[r]] = r
    base = (1.0 - lam) * rel
    closest = np.zeros(p)
    available = np.ones(p, np.bool_)
    count = min(n, p)
    picks = np.empty(count, np.int64)
    gains = np.empty(count)
    for c in range(count):
        best, pick = -np.inf, -1
        for r in range(p):
            if available[r]:
                gain = base[r] - lam * closest[r]
                if gain > best:
                    best, pick = gain, r
        picks[c] = pick
        gains[c] = round12(best)
        available[pick] = False
        j = pool[pick]
        if c + 1 < count and j >= 0:
            for e in range(nb_start[j], nb_start[j] + nb_len[j]):
                at = position[nb_ids[e]]
                if at >= 0:
                    sim = min(max(round12(nb_sims[e]), 0.0), 1.0)
                    if sim > closest[at]:
                        closest[at] = sim
    for r in range(p):
        if pool[r] >= 0:
            position[pool[r]] = -1
    return picks, gains


@njit(cache=True)
def similarity_rows(rows, cands, nb_start, nb_len, nb_ids, nb_sims, position):
    """``out[r, c]``: the similarity of candidate ``cands[c]`` in the neighbour list of item
    ``rows[r]`` (0 when not in it; -1: an unknown item). ``position`` is scratch (-1 per
    item), left as found."""
    out = np.zeros((len(rows), len(cands)))
    for c in range(len(cands)):
        if cands[c] >= 0:
            position[cands[c]] = c
    for r in range(len(rows)):
        j = rows[r]
        if j >= 0:
            for e in range(nb_start[j], nb_start[j] + nb_len[j]):
                at = position[nb_ids[e]]
                if at >= 0:
                    out[r, at] = nb_sims[e]
    for c in range(len(cands)):
        if cands[c] >= 0:
            position[cands[c]] = -1
    return out


@njit(cache=True)
def similarity_to_recent(ptr, cands, rec_ptr, rec_rows, nb_start, nb_len, nb_ids, nb_sims,
                         position):
    """`similarity_rows` of many lists at once, summarised: list ``g`` is candidates
    ``cands[ptr[g]:ptr[g + 1]]`` and recent items ``rec_rows[rec_ptr[g]:rec_ptr[g + 1]]``;
    ``first[c]`` is candidate ``c``'s similarity to the list's first recent item, ``mean[c]``
    the mean over its recent items (of the `similarity_rows` matrix: its rows added in order,
    then divided by their number). 0 for lists without recent items."""
    first = np.zeros(len(cands))
    mean = np.zeros(len(cands))
    for g in range(len(ptr) - 1):
        a, b = ptr[g], ptr[g + 1]
        r0, r1 = rec_ptr[g], rec_ptr[g + 1]
        if r1 == r0 or b == a:
            continue
        for c in range(a, b):
            if cands[c] >= 0:
                position[cands[c]] = c
        for r in range(r0, r1):
            j = rec_rows[r]
            if j >= 0:
                for e in range(nb_start[j], nb_start[j] + nb_len[j]):
                    at = position[nb_ids[e]]
                    if at >= 0:
                        mean[at] += nb_sims[e]
                        if r == r0:
                            first[at] = nb_sims[e]
        for c in range(a, b):
            if cands[c] >= 0:
                position[cands[c]] = -1
            mean[c] /= r1 - r0
    return first, mean


@njit(cache=True, error_model="numpy")  # x / 0 gives inf or nan (then 0), as numpy does
def neighbour_lists(items, cols, vals, start, cap, size, norm, powers, churn, key, alpha,
                    n_cap, min_sim, staleness):
    """The neighbour lists of ``items``: per item, the entries of its row with similarity
    ``C[i][j] / (N[i]^alpha * N[j]^(1 - alpha))`` above ``min_sim``, most similar first
    (rounded to 12 digits; ties: smaller key), at most ``n_cap``; as CSR (``ptr``, ids,
    similarities), with the churn each list allows before it is refreshed
    (``staleness`` times the row's absolute mass and norm). Resets the items' churn."""
    ptr = np.zeros(len(items) + 1, np.int64)
    out_ids = np.empty(len(items) * n_cap, np.int64)
    out_sims = np.empty(len(items) * n_cap)
    budget = np.empty(len(items))
    for q in range(len(items)):
        i = items[q]
        ids, counts = row_entries(cols, vals, start[i], cap[i], size[i])
        n = len(ids)
        scale = norm[i] ** alpha
        cand = np.empty(n, np.int64)
        sims = np.empty(n)
        c = 0
        mass = 0.0
        for e in range(n):
            mass += abs(counts[e])
            s = counts[e] / (scale * _power(norm, powers, ids[e], 1.0 - alpha))
            if np.isfinite(s) and s > min_sim:
                cand[c] = ids[e]
                sims[c] = s
                c += 1
        rounded = np.empty(c)
        keys = np.empty(c, np.int64)
        for e in range(c):
            rounded[e] = round12(sims[e])
            keys[e] = key[cand[e]]
        order = _top(rounded, keys, np.arange(c), n_cap)  # only the kept ones are sorted
        take = len(order)
        at = ptr[q]
        for e in range(take):
            out_ids[at + e] = cand[order[e]]
            out_sims[at + e] = sims[order[e]]
        ptr[q + 1] = at + take
        churn[i] = 0.0
        budget[q] = staleness * (mass + abs(norm[i]))
    return ptr, out_ids[:ptr[-1]], out_sims[:ptr[-1]], budget
