"""Popularity-bias and diversity controls: re-rank a candidate list before it is served.

A co-occurrence recommender inherits the popularity of what it counts: items liked by many users
co-occur with everything, so lists converge on the same few hits. Two controls, applied to the
top ``pool`` candidates (in their served order: co-occurrence, or the ranker's) and keeping the
top ``n``:

- **popularity penalty** ``beta`` (>= 0): relevance is multiplied by ``q ** -beta``, where ``q``
  is the candidate's decayed popularity over the most popular candidate's (in (0, 1]). 0 leaves the
  order alone; 0.5 divides by the square root of relative popularity; 1 ranks by relevance per
  unit of popularity. (The inverse-propensity idea; cheap, monotone, scale free.)
- **diversity** ``lam`` in [0, 1]: maximal marginal relevance (Carbonell & Goldstein, 1998). The
  list is built greedily; each next item maximises ``(1 - lam) * rel - lam * max sim`` to the
  items already chosen, ``sim`` the model's item-item similarity (its neighbour lists), ``rel``
  the (penalised) relevance scaled to a maximum of 1. 0 leaves the order alone.

Relevance is the candidate's score over the best candidate's when all scores are positive (the
co-occurrence scores), else the scores min-max scaled to [0, 1] (the ranker's logits). Values are
rounded to 12 significant digits and ties keep the incoming order, so every worker and replay
serves the same list. Each served item's ``score`` becomes the control's: its penalised relevance,
or with diversity its marginal gain when it was chosen (never increasing down a greedy list), so
a sorted set keyed by score (``recs:{user}``) keeps the re-ranked order, as with the ranker.

>>> from models.cooccurrence import Recommendation
>>> recs = [Recommendation(i, s, (), "items") for i, s in [("hit", 1.0), ("niche", 0.8),
...                                                        ("hit2", 0.7)]]
>>> pop = {"hit": 100.0, "niche": 1.0, "hit2": 90.0}.get
>>> sim = lambda item, others: np.array([1.0 if {item, o} == {"hit", "hit2"} else 0.0
...                                      for o in others])
>>> [r.item_id for r in rerank(recs, 3, popularity=pop, similarity=sim)]
['hit', 'niche', 'hit2']
>>> [r.item_id for r in rerank(recs, 3, popularity=pop, similarity=sim, beta=0.5)]
['niche', 'hit', 'hit2']
>>> [r.item_id for r in rerank(recs[:1] + recs[2:], 2, popularity=pop, similarity=sim, lam=0.6)]
['hit', 'hit2']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from models.cooccurrence import Recommendation, round12

Popularity = Callable[[str], float | None]  # an item's (decayed) popularity
Similarity = Callable[[str, Sequence[str]], np.ndarray]  # item, others -> similarity to each
Diversify = Callable[[Sequence[str], np.ndarray, int, float], list[tuple[int, float]]]


def relevance(scores: np.ndarray) -> np.ndarray:
    """Scores as relevance in [0, 1]: over the maximum when all are positive, else min-max.

    >>> relevance(np.array([4.0, 2.0])).tolist(), relevance(np.array([1.0, -1.0, 0.0])).tolist()
    ([1.0, 0.5], [1.0, 0.0, 0.5])
    """
    if len(scores) == 0:
        return scores
    if scores.min() > 0.0:
        return scores / scores.max()
    span = scores.max() - scores.min()
    return (scores - scores.min()) / span if span > 0.0 else np.ones_like(scores)


def popularity_penalised(rel: np.ndarray, popularity: np.ndarray, beta: float) -> np.ndarray:
    """``rel * q ** -beta`` with ``q`` = popularity over the maximum (items without popularity
    take the smallest positive one, so an unknown item is not infinitely favoured)."""
    if beta == 0.0 or len(rel) == 0:
        return rel
    positive = popularity[popularity > 0.0]
    if len(positive) == 0:
        return rel
    q = np.maximum(popularity, positive.min()) / positive.max()
    return rel * q ** -beta


def rerank(candidates: Sequence[Recommendation], n: int, *, popularity: Popularity | np.ndarray,
           similarity: Similarity, beta: float = 0.0, lam: float = 0.0,
           diversify: Diversify | None = None) -> list[Recommendation]:
    """The top ``n`` of ``candidates`` after the popularity penalty ``beta`` and the diversity
    ``lam`` (see the module docstring). Both 0: ``candidates[:n]`` unchanged.

    ``popularity`` is a function of an item (or an array aligned with ``candidates``);
    ``similarity(item, others)`` the similarity of ``item`` to each of ``others``;
    ``diversify(ids, rel, n, lam)``, when given, is `_mmr` with that similarity in one call
    (`models.cooccurrence.ItemCooccurrence.diversify`: the same picks and gains). Served items
    keep ``because`` and ``source``; ``score`` becomes the control's (decreasing down the list).
    """
    if beta < 0.0 or not 0.0 <= lam <= 1.0:
        raise ValueError(f"need beta >= 0 and 0 <= lam <= 1, got beta={beta}, lam={lam}")
    if (beta == 0.0 and lam == 0.0) or len(candidates) <= 1:
        return list(candidates[:n])
    ids = [c.item_id for c in candidates]
    pop = (np.asarray(popularity, dtype=float) if isinstance(popularity, np.ndarray)
           else np.array([popularity(i) or 0.0 for i in ids], dtype=float))
    rel = popularity_penalised(relevance(np.array([c.score for c in candidates])),
                               round12(pop), beta)
    rel = round12(relevance(rel))
    if lam == 0.0:
        order = sorted(range(len(ids)), key=lambda k: (-rel[k], k))[:n]
        return [candidates[k]._replace(score=float(rel[k])) for k in order]
    chosen = (diversify(ids, rel, n, lam) if diversify is not None
              else _mmr(ids, rel, n, similarity, lam))
    return [candidates[k]._replace(score=gain) for k, gain in chosen]


def _mmr(ids: Sequence[str], rel: np.ndarray, n: int, similarity: Similarity, lam: float
         ) -> list[tuple[int, float]]:
    """Greedy maximal marginal relevance: (candidate, gain when chosen) in order; ties go to the
    earlier candidate. Similarities are rounded to 12 significant digits as they arrive, so the
    gains are computed from the same numbers on every worker."""
    base = (1.0 - lam) * rel
    closest = np.zeros(len(ids))  # max similarity of each candidate to the chosen ones
    available = np.ones(len(ids), dtype=bool)
    chosen: list[tuple[int, float]] = []
    while len(chosen) < min(n, len(ids)):
        gain = np.where(available, base - lam * closest, -np.inf)
        pick = int(np.argmax(gain))  # the first of equal maxima
        chosen.append((pick, float(round12(gain[pick:pick + 1])[0])))
        available[pick] = False
        if len(chosen) < n and available.any():
            sims = round12(np.asarray(similarity(ids[pick], ids), dtype=float))
            np.maximum(closest, np.clip(sims, 0.0, 1.0), out=closest)
    return chosen
