"""Do similar-user candidates help? Prequential Recall@10 on ML-100K, same run.

User-based CF on top of the co-occurrence model: each item remembers its last 100 likers; a user's
neighbours are the users who liked the same recent items (overlap / sqrt(|H_u| |H_v|)), top 30;
their recent liked items score by neighbour similarity. The two scores, each scaled to a maximum
of 1, are blended: item score + beta * user score. beta = 0 is the co-occurrence model alone.

    python -m bench.user_cf [--limit N]     # writes bench/out/user_cf.json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections import defaultdict, deque
from pathlib import Path

from bench.quality import K, Score
from streams.datasets import movielens_100k
from streams.replay import completion_of
from streams.settings import get_settings
from streams.worker import reference_recommender

LIKERS_CAP = 100
NEIGHBOUR_USERS = 30
RECENT = 50


def blended(model, likers, user: str, n: int, beta: float) -> list[str]:  # noqa: ANN001
    history = model.histories.get(user)
    item_recs = model.recommend(user, 100, explain=False)
    if history is None or beta == 0.0:
        return [r.item_id for r in item_recs[:n]]
    recent = history.recent(RECENT)
    overlap: dict[str, int] = defaultdict(int)
    for item, _ in recent:
        for other in likers.get(item, ()):
            if other != user:
                overlap[other] += 1
    sims = sorted(((c / math.sqrt(len(recent) * len(model.histories[v].items)), v)
                   for v, c in overlap.items()), reverse=True)[:NEIGHBOUR_USERS]
    user_scores: dict[str, float] = defaultdict(float)
    seen = history.items
    for sim, other in sims:
        for item, _ in model.histories[other].recent(RECENT):
            if item not in seen:
                user_scores[item] += sim
    top_item = max((r.score for r in item_recs if r.source == "items"), default=1.0) or 1.0
    top_user = max(user_scores.values(), default=1.0) or 1.0
    combined: dict[str, float] = defaultdict(float)
    for r in item_recs:
        combined[r.item_id] += (r.score / top_item) if r.source == "items" else 0.0
    for item, score in user_scores.items():
        combined[item] += beta * score / top_user
    ranked = sorted(combined.items(), key=lambda kv: (-kv[1], kv[0]))
    return [item for item, _ in ranked[:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--eval-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    settings = get_settings()
    ratings, _ = movielens_100k(settings.cache_dir)
    ratings = ratings[: args.limit]
    rng = random.Random(args.seed)
    asked = [rng.random() < args.eval_share for _ in ratings]
    betas = (0.0, 0.25, 0.5, 1.0)
    scores = {beta: Score() for beta in betas}
    model = reference_recommender(settings)
    weights = settings.feedback_weights()
    likers: dict[str, deque] = {}
    started = time.perf_counter()
    for r, ask in zip(ratings, asked, strict=True):
        if ask:
            for beta in betas:
                scores[beta].add(blended(model, likers, r.user_id, K, beta), r.item_id)
        model.learn_one(r.user_id, r.item_id, weight=weights.for_play(
            completion=completion_of(r.rating)), ts=r.ts)
        model.learn_one(r.user_id, r.item_id, weight=weights.for_rating(r.rating), ts=r.ts)
        if model.histories[r.user_id].items[r.item_id][0] > 0:
            likers.setdefault(r.item_id, deque(maxlen=LIKERS_CAP)).append(r.user_id)
    result = {f"beta={beta}": s.as_dict() for beta, s in scores.items()}
    out = Path("bench/out/user_cf.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"ratings": len(ratings), "eval_share": args.eval_share,
                               "seconds": round(time.perf_counter() - started, 1),
                               "blends": result}, indent=2))
    for name, v in result.items():
        print(f"{name:10} recall@10 {v['recall@10']:.4f}  ndcg@10 {v['ndcg@10']:.4f}  "
              f"(n={v['evaluated']})")


if __name__ == "__main__":
    main()
