"""Ranking metrics, with the definitions of Microsoft Recommenders' python_evaluation module.

>>> recall_at_k(["a", "b", "c"], {"b", "z"}, k=2), round(ndcg_at_k(["a", "b"], {"b"}, k=2), 4)
(0.5, 0.6309)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence, Set

import numpy as np


def precision_at_k(ranked: Sequence[str], relevant: Set[str], k: int) -> float:
    """Hits in the top k over k (MS Recommenders divides by k even when fewer were ranked)."""
    return sum(1 for item in ranked[:k] if item in relevant) / k


def recall_at_k(ranked: Sequence[str], relevant: Set[str], k: int) -> float:
    if not relevant:
        return 0.0
    return sum(1 for item in ranked[:k] if item in relevant) / len(relevant)


def ndcg_at_k(ranked: Sequence[str], relevant: Set[str], k: int) -> float:
    """Binary-relevance nDCG@k; the ideal ranking puts min(k, |relevant|) hits first."""
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return dcg / ideal


def average_precision_at_k(ranked: Sequence[str], relevant: Set[str], k: int) -> float:
    """MS Recommenders' MAP term: sum of precision at each hit in the top k, over |relevant|."""
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for rank, item in enumerate(ranked[:k]):
        if item in relevant:
            hits += 1
            total += hits / (rank + 1)
    return total / len(relevant)


# --- beyond accuracy ------------------------------------------------------------------------------
# Measures of what a recommender shows rather than of how often it hits: how much of the catalogue
# it exposes and how evenly, how popular and how alike the items of a list are. ``lists`` are
# top-k lists (one per user or per request); ``counts`` are interactions per item in the data the
# model learned from (the popularity yardstick).


def catalogue_coverage(lists: Iterable[Sequence[str]], catalogue_size: int, k: int) -> float:
    """Share of the catalogue that appears in at least one top-k list.

    >>> catalogue_coverage([["a", "b"], ["b", "c"]], catalogue_size=5, k=2)
    0.6
    """
    shown = {item for ranked in lists for item in ranked[:k]}
    return len(shown) / catalogue_size if catalogue_size else 0.0


def gini(values: Iterable[float]) -> float:
    """Gini index of non-negative values: 0 when all are equal, (n - 1) / n when one holds all.

    >>> gini([1, 1, 1, 1]), gini([0, 0, 0, 1]), round(gini([1, 2, 3]), 4)
    (0.0, 0.75, 0.2222)
    """
    x = sorted(float(v) for v in values)
    n, total = len(x), sum(x)
    if n == 0 or total <= 0:
        return 0.0
    return sum((2 * (rank + 1) - n - 1) * v for rank, v in enumerate(x)) / (n * total)


def exposure_gini(lists: Iterable[Sequence[str]], catalogue: Iterable[str], k: int) -> float:
    """Gini index of how often each catalogue item is shown in the top-k lists (items never shown
    count as zeros: a recommender that shows a few items to everyone is near 1)."""
    shown: Counter[str] = Counter(item for ranked in lists for item in ranked[:k])
    return gini(shown.get(item, 0) for item in catalogue)


def novelty(lists: Iterable[Sequence[str]], counts: Mapping[str, float], k: int) -> float:
    """Mean self-information ``-log2(count(i) / total)`` of the recommended items, in bits: higher
    for less popular items. Items without interactions count as one.

    >>> novelty([["a"], ["b"]], {"a": 2, "b": 2}, k=1)  # each is half the interactions
    1.0
    """
    total = sum(counts.values())
    bits = [-math.log2(max(counts.get(item, 0), 1) / total)
            for ranked in lists for item in ranked[:k]]
    return sum(bits) / len(bits) if bits else 0.0


def intra_list_diversity(lists: Iterable[Sequence[str]], similarity: Callable[[str, str], float],
                         k: int) -> float:
    """Mean over lists (of two items or more) of the mean pairwise dissimilarity
    ``1 - similarity(i, j)`` of their top k.

    >>> same = {frozenset("ab"): 1.0}
    >>> sim = lambda i, j: same.get(frozenset((i, j)), 0.0)
    >>> intra_list_diversity([["a", "b", "c"], ["a", "b"]], sim, k=3)  # (2/3 + 0) / 2
    0.3333333333333333
    """
    per_list = []
    for ranked in lists:
        top = list(ranked[:k])
        pairs = [(a, b) for n, a in enumerate(top) for b in top[n + 1:]]
        if pairs:
            per_list.append(sum(1.0 - similarity(a, b) for a, b in pairs) / len(pairs))
    return sum(per_list) / len(per_list) if per_list else 0.0


def popularity_lift(lists: Sequence[Sequence[str]], histories: Sequence[Sequence[str]],
                    counts: Mapping[str, float], k: int) -> float:
    """How much more popular the recommended items are than the items the users chose
    themselves: the mean over lists of their items' mean popularity, over the mean over the
    matching histories of theirs, minus 1 (0: as popular as the users' own taste; the
    popularity lift of Abdollahpouri et al., UMAP 2020). ``lists[n]`` was shown to the user whose
    history was ``histories[n]``; empty lists or histories are left out.

    >>> popularity_lift([["a"], ["a"]], [["b"], ["b", "a"]], {"a": 4, "b": 1}, k=1)  # 4 / 1.75 - 1
    1.2857142857142856
    """
    recommended, chosen = [], []
    for ranked, history in zip(lists, histories, strict=True):
        top = ranked[:k]
        if top and history:
            recommended.append(sum(counts.get(i, 0) for i in top) / len(top))
            chosen.append(sum(counts.get(i, 0) for i in history) / len(history))
    if not chosen or sum(chosen) == 0:
        return 0.0
    return (sum(recommended) / len(recommended)) / (sum(chosen) / len(chosen)) - 1.0


def long_tail(counts: Mapping[str, float], *, head_share: float = 0.2) -> frozenset[str]:
    """The long tail: every item outside the head, the most popular items that together hold
    ``head_share`` of the interactions (the smallest such set; ties by id).

    >>> sorted(long_tail({"a": 8, "b": 1, "c": 1}, head_share=0.5))
    ['b', 'c']
    """
    total = sum(counts.values())
    head: set[str] = set()
    held = 0.0
    for item, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if held >= head_share * total:
            break
        head.add(item)
        held += count
    return frozenset(counts.keys() - head)


def long_tail_share(lists: Iterable[Sequence[str]], tail: Set[str], k: int) -> float:
    """Share of the recommended slots that hold long-tail items.

    >>> long_tail_share([["a", "b"], ["b", "c"]], {"b", "c"}, k=2)
    0.75
    """
    slots = [item in tail for ranked in lists for item in ranked[:k]]
    return sum(slots) / len(slots) if slots else 0.0


def cosine_similarity(interactions: Iterable[tuple[str, str]]) -> Callable[[str, str], float]:
    """Item-item cosine of the items' binary user vectors, from (user, item) pairs: the
    similarity `intra_list_diversity` uses in the benchmarks (unknown items: 0).

    >>> sim = cosine_similarity([("u", "a"), ("u", "b"), ("v", "a")])
    >>> round(sim("a", "b"), 4), sim("a", "a"), sim("a", "zz")
    (0.7071, 1.0, 0.0)
    """
    pairs = set(interactions)
    users = {u: n for n, u in enumerate(sorted({u for u, _ in pairs}))}
    items = {i: n for n, i in enumerate(sorted({i for _, i in pairs}))}
    x = np.zeros((len(items), len(users)), dtype=np.float32)
    for u, i in pairs:
        x[items[i], users[u]] = 1.0
    norms = np.sqrt((x * x).sum(axis=1))
    norms[norms == 0] = 1.0
    x /= norms[:, None]
    sims = x @ x.T

    def similarity(a: str, b: str) -> float:
        i, j = items.get(a), items.get(b)
        return 0.0 if i is None or j is None else round(float(sims[i, j]), 6)

    return similarity


BEYOND = ("coverage@10", "gini@10", "novelty", "ild@10", "popularity_lift", "long_tail_share")


def beyond_accuracy(lists: Sequence[Sequence[str]], histories: Sequence[Sequence[str]], *,
                    counts: Mapping[str, float], catalogue: Sequence[str],
                    similarity: Callable[[str, str], float], k: int = 10,
                    head_share: float = 0.2) -> dict[str, float]:
    """The six measures of `BEYOND` over the same lists (``histories[n]``: the history of the
    user ``lists[n]`` was made for), rounded to 4 digits."""
    tail = long_tail(counts, head_share=head_share)
    values = {
        "coverage@10": catalogue_coverage(lists, len(catalogue), k),
        "gini@10": exposure_gini(lists, catalogue, k),
        "novelty": novelty(lists, counts, k),
        "ild@10": intra_list_diversity(lists, similarity, k),
        "popularity_lift": popularity_lift(lists, histories, counts, k),
        "long_tail_share": long_tail_share(lists, tail, k),
    }
    return {name: round(v, 4) for name, v in values.items()}
