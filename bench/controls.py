"""The price of the popularity-bias and diversity controls: accuracy against coverage and novelty.

One point per setting of ``popularity_penalty`` and ``diversity`` (`models.rerank`, applied by
`streams.runtime.ranking.Ranking` as the workers apply it), each measured on both protocols with the
current defaults otherwise:

- offline: `bench.offline` (MS Recommenders' stratified 75/25 split of ML-100K);
- prequential: `bench.quality.run` on the first ``--limit`` ratings.

Every point has Recall@10, nDCG@10 and the beyond-accuracy measures of `models.metrics`. Also
the offline table of every model row (tastemaker in both encodings, batch kNN, popularity) with
the same measures. Writes JSON and the trade-off plot (nDCG@10 against coverage@10 and against
novelty): the fairness section of the results report.

    python -m bench.controls                 # bench/out/controls.json + controls.png
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.offline import Split, offline_table, offline_tastemaker
from bench.quality import beyond, tastemaker
from bench.quality import run as prequential
from streams.settings import get_settings, load_settings
from streams.tools.datasets import movielens_100k

POINTS: dict[str, dict[str, float]] = {
    "off": {},
    "penalty 0.1": {"popularity_penalty": 0.1},
    "penalty 0.25": {"popularity_penalty": 0.25},
    "penalty 0.5": {"popularity_penalty": 0.5},
    "penalty 1": {"popularity_penalty": 1.0},
    "diversity 0.1": {"diversity": 0.1},
    "diversity 0.2": {"diversity": 0.2},
    "diversity 0.4": {"diversity": 0.4},
    "penalty 0.25 + diversity 0.1": {"popularity_penalty": 0.25, "diversity": 0.1},
}
SHOWN = ("recall@10", "ndcg@10", "coverage@10", "gini@10", "novelty", "ild@10",
         "popularity_lift", "long_tail_share")


def measure(overrides: Mapping[str, float], *, limit: int, eval_share: float, seed: int,
            offline_seed: int, split: Split) -> dict[str, dict[str, float]]:
    settings = load_settings(**overrides)
    offline = offline_tastemaker(split, settings, yardstick=split.yardstick())
    ratings, _ = movielens_100k(settings.cache_dir)
    ratings = ratings[:limit]
    scores = prequential(ratings, eval_share=eval_share, seed=seed,
                         models={"t": lambda: tastemaker(settings)},
                         feedback=settings.feedback_weights())
    preq = scores["t"].as_dict() | beyond(scores, ratings)["t"]
    return {"offline": {k: offline[k] for k in SHOWN},
            "prequential": {k: preq[k] for k in SHOWN}}


def plot(points: Mapping[str, Any], path: Path, chosen: str | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for row, protocol in enumerate(("offline", "prequential")):
        for col, x_name in enumerate(("coverage@10", "novelty")):
            ax = axes[row, col]
            for number, (name, p) in enumerate(points.items(), start=1):
                m = p[protocol]
                colour = ("C3" if name == "off" else "C2" if name == chosen else
                          "C4" if "penalty" in name and "diversity" in name else
                          "C0" if "penalty" in name else "C1")
                ax.scatter(m[x_name], m["ndcg@10"], color=colour,
                           label=f"{number}: {name}" if row == col == 0 else None)
                ax.annotate(str(number), (m[x_name], m["ndcg@10"]), fontsize=8,
                            xytext=(4, 3), textcoords="offset points")
            ax.set_xlabel(x_name)
            ax.set_ylabel("nDCG@10")
            ax.set_title(f"{protocol}: nDCG@10 against {x_name}", fontsize=10)
            ax.grid(alpha=0.3)
    fig.legend(loc="lower center", ncol=5, fontsize=8)
    fig.suptitle("Popularity penalty (blue), MMR diversity (orange), both (purple); red: off, "
                 "green: the default chosen", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20_000)
    parser.add_argument("--eval-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--offline-seed", type=int, default=42)
    parser.add_argument("--chosen", default=None, help="the point to mark as the default")
    parser.add_argument("--out", type=Path, default=Path("bench/out/controls.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    split = Split.of(get_settings().cache_dir, args.offline_seed)
    points = {}
    for name, overrides in POINTS.items():
        points[name] = measure(overrides, limit=args.limit, eval_share=args.eval_share,
                               seed=args.seed, offline_seed=args.offline_seed, split=split)
        print(f"{name:30} " + " | ".join(
            f"{p}: " + " ".join(f"{k} {v}" for k, v in points[name][p].items())
            for p in ("offline", "prequential")), flush=True)
    settings = get_settings()
    table = offline_table(split, settings)  # every model row, with the settings' controls
    controls = (f"popularity_penalty {settings.popularity_penalty:g}, diversity "
                f"{settings.diversity:g}")
    models = {(f"{name}, {controls}" if name.startswith("tastemaker") else name):
              {k: row[k] for k in SHOWN} for name, row in table.items()}
    result = {"points": points, "overrides": POINTS, "chosen": args.chosen, "models": models,
              "protocols": {"offline": f"stratified 75/25, seed {args.offline_seed}",
                            "prequential": f"first {args.limit:,} ratings, eval_share "
                                           f"{args.eval_share}, seed {args.seed}"},
              "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(points, args.out.with_suffix(".png"), args.chosen)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
