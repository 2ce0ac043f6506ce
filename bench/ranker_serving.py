"""What serving item factors costs a worker: the ranker's re-rank of one batch of users with and
without ``factor_score``.

The replay's first ``--ratings`` ratings are learned by `streams.tools.reference.StreamReplica` (the
workers' computation); then `streams.runtime.ranking.Ranking.top_model` — what a worker runs for a
batch's users with a ranker served — ranks ``--users`` users in one batch with the same MLP, once
without item factors and once with factors fitted on the users' liked items (each user then folded
in), alternating ``--rounds`` times. CPU time per user; medians printed and written as JSON.

    python -m bench.ranker_serving                   # bench/out/ranker_serving.json
    python -m bench.ranker_serving --users 500 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from models.factors import ItemFactors
from models.ranker import RankerMLP, toy_groups
from streams.settings import get_settings
from streams.tools.reference import StreamReplica
from streams.tools.replay import load_dataset, movielens_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=30_000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/out/ranker_serving.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a worker scores: one thread
    settings = get_settings()
    ratings, reviews, movies = load_dataset(settings, "movielens-100k")
    replica = StreamReplica(settings)
    replica.ranking.learn_catalogue({m.item_id: m.genres for m in movies.values()})
    for kind, value in movielens_events(ratings[:args.ratings], reviews, seed=7):
        replica.learn(kind, value)
    model = replica.model
    model.items.refresh()
    users = sorted(model.histories)[:args.users]
    baskets = {u: [i for i, (s, _, _) in h.items.items() if s > 0]
               for u, h in model.histories.items()}
    mlp = RankerMLP()
    mlp.fit_scaler(toy_groups(n_groups=50, seed=0))  # its weights do not change the work done
    factors = ItemFactors.fit(baskets, factors=settings.ranker_factors, seed=0)
    runs: dict[str, list[float]] = {"without factors": [], "with factors": []}
    for _ in range(args.rounds):
        for name, served in (("without factors", None), ("with factors", factors)):
            mlp.factors = served
            replica.ranking.model = mlp
            started = time.process_time()
            replica.ranking.top_model(model, users)
            runs[name].append((time.process_time() - started) / len(users) * 1e3)
    medians = {name: round(statistics.median(v), 3) for name, v in runs.items()}
    for name, values in runs.items():
        print(f"{name:16s} {medians[name]:.2f} ms CPU per user (runs: "
              + ", ".join(f"{v:.2f}" for v in values) + ")")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"ratings": args.ratings, "users": len(users),
                                    "factors": settings.ranker_factors,
                                    "ms_per_user": runs, "medians": medians}, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
