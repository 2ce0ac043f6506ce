"""Lift of the MLP ranker over the raw co-occurrence order: prequential on the ML-100K replay.

One pass over the replay's events (plays, ratings, reviews with real texts) through
`streams.tools.reference.StreamReplica` — the workers' computation — with the worker's `Ranking`:

- at a seeded ``eval_share`` of the plays, before the play is learned, the user's top-10 is asked
  twice, from the same candidates: in co-occurrence order and re-ordered by the ranker currently
  "published" (none at first: then both lists are equal). A hit is the played item in the top-10;
- at ``ranker_example_rate`` of the positive events the training example is logged, as workers
  do;
- every ``--train-every`` events the trainer's step runs (`streams.runtime.trainer.train_step`): it
  fits item factors and fine-tunes the current model on the latest ``trainer_window`` examples
  less the newest ``trainer_holdout`` share, and publishes only if its held-out nDCG@10 is not
  worse than the current version's (the co-occurrence order when none); the published model
  is then served (its item factors too).

Both orders are scored on the same events in the same run; the lift is their ratio. Also reported:
trainer throughput (examples/s, on the device used), guard decisions.

    python -m bench.ranker --example-rate 0.5    # full ML-100K, bench/out/ranker.json
    python -m bench.ranker --limit 30000         # a slice
    python -m bench.ranker --dump-groups bench/out/ranker_groups.npz  # for bench.trainer_device
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch

from bench.quality import K, Score
from models.ranker import Groups, RankerMLP, rerank
from streams.runtime.ranking import choice_id, sampled
from streams.runtime.trainer import Example, train_step
from streams.settings import get_settings
from streams.tools.reference import StreamReplica
from streams.tools.replay import load_dataset, movielens_events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N ratings only")
    parser.add_argument("--eval-share", type=float, default=0.1)
    parser.add_argument("--train-every", type=int, default=10_000, help="events between fits")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the fits (1: no fight with the replay's core)")
    parser.add_argument("--example-rate", type=float, default=None,
                        help="share of positive events logged (default: the setting)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/ranker.json"))
    parser.add_argument("--dump-groups", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    update: dict[str, object] = {"trainer_device": args.device}
    if args.example_rate is not None:
        update["ranker_example_rate"] = args.example_rate
    settings = get_settings().model_copy(update=update)
    ratings, reviews, movies = load_dataset(settings, "movielens-100k")
    events = list(movielens_events(ratings[: args.limit], reviews, seed=args.seed))
    replica = StreamReplica(settings)
    ranking = replica.ranking
    ranking.learn_catalogue({m.item_id: m.genres for m in movies.values()})
    rng = random.Random(args.seed)
    window: deque[tuple] = deque(maxlen=settings.trainer_window)
    everything: list[tuple] = []
    baseline, ranked = Score(), Score()
    fits: list[dict] = []
    model: RankerMLP | None = None
    since_fit = 0
    checkpoints: list[list[float]] = []  # [events, evaluated, hits/nDCG sums of both orders]
    every = max(len(events) // 20, 1)
    started = time.perf_counter()
    for n, (kind, value) in enumerate(events):
        if kind == "play":
            user, item, ts = str(value["user_id"]), str(value["item_id"]), float(value["ts"])
            history = replica.model.histories.get(user)
            asked = rng.random() < args.eval_share
            if history is not None and asked:
                items = replica.model.items
                candidates = ranking.candidates(items, user, history, settings.ranker_candidates)
                features = ranking.features(items, history, candidates)
                ids = [c.item_id for c in candidates]
                baseline.add(ids[:K], item)
                ranked.add([r.item_id for r in rerank(model, candidates, features, K)]
                           if model is not None else ids[:K], item)
            logged = (history is not None
                      and sampled(choice_id(user, item, ts), settings.ranker_example_rate)
                      and ranking.example(replica.model.items, user, history, item_id=item,
                                          ts=ts))
            if logged:  # the example a worker logs (`Ranking.example`)
                example = Example(user, np.asarray(logged["features"], dtype=np.float32),
                                  int(logged["positive"]), ts, tuple(logged["items"]),
                                  tuple(logged["liked"]))
                window.append(example)
                if args.dump_groups:
                    everything.append((example.features, example.positive, ts))
        replica.learn(kind, value)
        if (n + 1) % every == 0:
            checkpoints.append([n + 1, baseline.evaluated, baseline.hits,
                                round(baseline.ndcg, 4), ranked.hits, round(ranked.ndcg, 4)])
        since_fit += 1
        if since_fit >= args.train_every and len(window) >= 500:
            since_fit = 0
            result = train_step(model, list(window), settings)
            model = result.model if result.published else model
            ranking.model = model  # served: its item factors give factor_score
            fits.append(result.as_dict() | {"at_event": n + 1})
            print(f"event {n + 1:>7}: fit on {result.train_groups} groups in "
                  f"{result.fit.seconds:.1f} s ({result.fit.examples_per_s:,.0f} examples/s); "
                  f"held-out nDCG@10 {result.candidate['ndcg@10']:.4f} vs current "
                  f"{result.current['ndcg@10']:.4f}: "
                  f"{'published' if result.published else 'refused'}", flush=True)
    seconds = time.perf_counter() - started
    base, ours = baseline.as_dict(), ranked.as_dict()
    after_first = [f for f in fits if f["published"]]
    summary = {
        "events": len(events), "eval_share": args.eval_share, "seed": args.seed,
        "train_every": args.train_every, "seconds": round(seconds, 1),
        "settings": {k: getattr(settings, k) for k in (
            "ranker_candidates", "ranker_example_rate", "trainer_window", "trainer_holdout",
            "trainer_epochs", "trainer_lr", "trainer_device")},
        "cooccurrence_order": base, "mlp_reranked": ours,
        "lift": {"recall@10": round(ours["recall@10"] / base["recall@10"] - 1, 4)
                 if base["recall@10"] else None,
                 "ndcg@10": round(ours["ndcg@10"] / base["ndcg@10"] - 1, 4)
                 if base["ndcg@10"] else None},
        "first_published_at_event": after_first[0]["at_event"] if after_first else None,
        "trainer_examples_per_s": round(sum(f["examples"] for f in fits)
                                        / max(sum(f["fit_seconds"] for f in fits), 1e-9))
        if fits else None,
        "fits": fits,
        "checkpoints": checkpoints,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    if args.dump_groups:
        args.dump_groups.write_bytes(Groups.of(everything).to_npz())
    print(f"\n{'order':22} {'recall@10':>10} {'ndcg@10':>8} {'evaluated':>9}")
    print(f"{'co-occurrence':22} {base['recall@10']:>10} {base['ndcg@10']:>8} "
          f"{base['evaluated']:>9}")
    print(f"{'MLP re-ranked':22} {ours['recall@10']:>10} {ours['ndcg@10']:>8} "
          f"{ours['evaluated']:>9}")
    lift = {k: "n/a" if v is None else f"{v:+.1%}" for k, v in summary["lift"].items()}
    print(f"lift: recall@10 {lift['recall@10']}, nDCG@10 {lift['ndcg@10']}; trainer "
          f"{summary['trainer_examples_per_s']} examples/s ({settings.trainer_device}); "
          f"{seconds:.0f} s")


if __name__ == "__main__":
    main()
