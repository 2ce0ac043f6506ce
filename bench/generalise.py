"""Do the defaults generalise? Each setting on every protocol, encoding and time scale.

A default chosen on ML-100K alone can fail elsewhere (docs: /work/shared/DATA.md). Each
configuration (settings overrides) is measured on the 2 x 2 x 2 setups:

- protocol: prequential (`bench.quality.run` on the first ``--limit`` ratings in time order) and
  offline (`bench.offline`: MS Recommenders' per-user 75/25 split, full ML-100K);
- encoding: plays whose completion follows the stars, and plays without completion plus ratings
  (`streams.tools.replay.ENCODINGS`);
- time: ML-100K's timestamps, and the same stretched x30 (about 17 years).

The tastemaker rows are compared with a popularity baseline in the same setup (decayed popularity
prequentially with the configuration's half-life, plain popularity offline) and with today's
defaults. Writes JSON and a PNG (a heat map: configurations x setups, nDCG@10 over today's).

    python -m bench.generalise                       # bench/out/generalise.json + .png
    python -m bench.generalise --only defaults --only "hl 3650d, rating 1"
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.offline import Split, evaluate, offline_tastemaker, popularity_ranker
from bench.quality import run as prequential
from bench.quality import stretch_time
from models.popularity import DecayedPopularity
from streams.runtime.learning import reference_recommender
from streams.settings import get_settings, load_settings
from streams.tools.datasets import movielens_100k
from streams.tools.replay import ENCODINGS

STRETCHES = (1.0, 30.0)
# today's defaults first; then the half-life (which also sets trending's decay today: see the
# report) and the weight of ratings, one at a time and together
CONFIGS: dict[str, dict[str, Any]] = {
    "today (hl 180d, rating 0)": {"half_life_days": 180.0, "feedback_rating": 0.0},
    "hl 180d, rating 1": {"half_life_days": 180.0, "feedback_rating": 1.0},
    "hl 3650d, rating 0": {"half_life_days": 3650.0, "feedback_rating": 0.0},
    "hl 3650d, rating 0.5": {"half_life_days": 3650.0, "feedback_rating": 0.5},
    "hl 3650d, rating 1": {"half_life_days": 3650.0, "feedback_rating": 1.0},
    "hl 36500d, rating 1": {"half_life_days": 36500.0, "feedback_rating": 1.0},
}


def setups() -> list[tuple[str, str, float]]:
    return [(protocol, encoding, stretch) for protocol in ("prequential", "offline")
            for stretch in STRETCHES for encoding in ENCODINGS]


def setup_name(protocol: str, encoding: str, stretch: float) -> str:
    return f"{protocol}, {encoding}, time x{stretch:g}"


def measure(overrides: Mapping[str, Any], *, limit: int, eval_share: float, seed: int,
            offline_seed: int) -> dict[str, dict[str, float]]:
    """One configuration on every setup: tastemaker's metrics per setup name."""
    settings = load_settings(**overrides)
    ratings, _ = movielens_100k(settings.cache_dir)
    out: dict[str, dict[str, float]] = {}
    for protocol, encoding, stretch in setups():
        started = time.perf_counter()
        if protocol == "prequential":
            scores = prequential(stretch_time(ratings[:limit], stretch), eval_share=eval_share,
                                 seed=seed, encoding=encoding,  # type: ignore[arg-type]
                                 models={"t": lambda: reference_recommender(settings)},
                                 feedback=settings.feedback_weights())
            row = {k: v for k, v in scores["t"].as_dict().items() if k in ("recall@10",
                                                                            "ndcg@10")}
        else:
            split = Split.of(settings.cache_dir, offline_seed, stretch=stretch)
            row = {k: v for k, v in offline_tastemaker(split, settings,
                                                       encoding=encoding).items()  # type: ignore[arg-type]
                   if k in ("recall@10", "ndcg@10")}
        out[setup_name(protocol, encoding, stretch)] = row | {
            "seconds": round(time.perf_counter() - started, 1)}
        print(f"  {setup_name(protocol, encoding, stretch):40} {row}", flush=True)
    return out


def baselines(*, limit: int, eval_share: float, seed: int, offline_seed: int
              ) -> dict[str, dict[str, float]]:
    """Popularity per setup (decayed with today's half-life prequentially; plain offline)."""
    settings = get_settings()
    ratings, _ = movielens_100k(settings.cache_dir)
    out = {}
    for protocol, encoding, stretch in setups():
        if protocol == "prequential":
            scores = prequential(stretch_time(ratings[:limit], stretch), eval_share=eval_share,
                                 seed=seed, encoding=encoding,  # type: ignore[arg-type]
                                 models={"p": lambda: DecayedPopularity(
                                     half_life_days=settings.half_life_days)},
                                 feedback=settings.feedback_weights())
            row = scores["p"].as_dict()
        else:
            split = Split.of(settings.cache_dir, offline_seed, stretch=stretch)
            row = evaluate(popularity_ranker(split.train), split.train_seen, split.relevant)
        out[setup_name(protocol, encoding, stretch)] = {k: row[k] for k in ("recall@10",
                                                                            "ndcg@10")}
    return out


def plot(result: Mapping[str, Any], path: Path) -> None:
    """A heat map: nDCG@10 of each configuration (rows) in each setup (columns), over today's
    defaults' in the same setup, the value written in each cell; the chosen row marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(result["configs"])
    panels = [setup_name(*s) for s in setups()]
    today = result["configs"][names[0]]["setups"]
    ratio = np.array([[result["configs"][n]["setups"][p]["ndcg@10"] / today[p]["ndcg@10"]
                       for p in panels] for n in names])
    fig, ax = plt.subplots(figsize=(14, 1.2 + 0.6 * len(names)))
    image = ax.imshow(ratio, cmap="RdYlGn", vmin=0.7, vmax=1.3, aspect="auto")
    for r in range(len(names)):
        for c in range(len(panels)):
            value = result["configs"][names[r]]["setups"][panels[c]]["ndcg@10"]
            ax.text(c, r, f"{ratio[r, c]:.3f}\n({value:.4f})", ha="center", va="center",
                    fontsize=7.5)
    ax.set_xticks(range(len(panels)), [p.replace(", ", "\n") for p in panels], fontsize=8)
    ax.set_yticks(range(len(names)), [f"{n}  <- chosen" if n == result.get("chosen") else n
                                      for n in names], fontsize=8)
    fig.colorbar(image, ax=ax, label="nDCG@10 / today's defaults'")
    ax.set_title("tastemaker nDCG@10 over today's defaults' (value in brackets), per setup",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20_000, help="prequential: first N ratings")
    parser.add_argument("--eval-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--offline-seed", type=int, default=42)
    parser.add_argument("--only", action="append", default=None, help="configuration names")
    parser.add_argument("--chosen", default=None, help="the configuration to mark as chosen")
    parser.add_argument("--merge", action="store_true",
                        help="keep the configurations already in --out (measure only the others)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/generalise.json"))
    args = parser.parse_args()
    common = {"limit": args.limit, "eval_share": args.eval_share, "seed": args.seed,
              "offline_seed": args.offline_seed}
    started = time.perf_counter()
    previous = json.loads(args.out.read_text()) if args.merge and args.out.exists() else {}
    known = previous.get("configs", {})
    configs = {}
    for name, overrides in CONFIGS.items():
        if name in known and (not args.only or name not in args.only):
            configs[name] = known[name]
            continue
        if args.only and name not in args.only:
            continue
        print(name, flush=True)
        configs[name] = {"overrides": overrides, "setups": measure(overrides, **common)}
    today = next(iter(configs.values()))["setups"] if configs else {}
    for entry in configs.values():
        entry["vs_today"] = {s: round(v["ndcg@10"] / today[s]["ndcg@10"], 3)
                             for s, v in entry["setups"].items() if today.get(s)}
    result = {"protocols": {"prequential": f"first {args.limit:,} ratings, eval_share "
                                           f"{args.eval_share}, seed {args.seed}",
                            "offline": f"MS Recommenders stratified 75/25, seed "
                                       f"{args.offline_seed}"},
              "chosen": args.chosen, "configs": configs,
              "popularity": previous["popularity"] if known else baselines(**common),
              # with --merge: the time of every run that measured what the file holds
              "seconds": round(time.perf_counter() - started + previous.get("seconds", 0.0), 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
