"""Ranking metrics, with the definitions of Microsoft Recommenders' python_evaluation module.

>>> recall_at_k(["a", "b", "c"], {"b", "z"}, k=2), round(ndcg_at_k(["a", "b"], {"b"}, k=2), 4)
(0.5, 0.6309)
"""

from __future__ import annotations

import math
from collections.abc import Sequence, Set


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
