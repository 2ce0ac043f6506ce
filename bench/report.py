"""The results report: run the benchmarks, plot them, write docs/results/ (``tastemaker bench``).

Each benchmark is a `Step`: the command line of its own ``bench/`` script (run as a child process,
exactly as a person would run it, so the report and the scripts cannot disagree), and functions
that turn the JSON it writes into a small committed summary, headline rows and plots. ``STEPS``
is the list the report runs, in order; adding a benchmark is one more entry.

Outputs: the scripts' full JSON under ``bench/out/`` (not committed); per step
``docs/results/<step>.json`` (the summary) and its PNGs; ``docs/results/results.md`` (headline
table, images, the machine and code measured), rebuilt from every step's summary so that
``--only`` refreshes one step and keeps the others; the same table and images in
``docs/results.md`` (the results page the README links to) between the
``results:start``/``results:end`` markers.

    python -m bench.report                    # everything (about an hour on 2 shared cores)
    python -m bench.report --quick            # small versions of every step (minutes)
    python -m bench.report --only read_latency --only speed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
RESULTS = ROOT / "docs" / "results"
RESULTS_PAGE = ROOT / "docs" / "results.md"
MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"

Row = tuple[str, str, str]  # what, measured, target


@dataclass(frozen=True)
class Step:
    """One benchmark of the report.

    ``args``/``quick_args``: the arguments of ``python -m <module>`` (full and ``--quick``);
    ``output``: the JSON file the script writes (relative to the repository root);
    ``summarise``: that JSON -> the committed summary (small: no per-sample arrays);
    ``rows``: summary -> headline rows; ``plots``: (summary, figure context) -> PNGs written.
    """

    name: str
    title: str
    module: str
    args: Sequence[str]
    quick_args: Sequence[str]
    output: str
    summarise: Callable[[dict[str, Any]], dict[str, Any]]
    rows: Callable[[dict[str, Any]], list[Row]]
    plots: Callable[[dict[str, Any], Figures], list[Path]] = lambda summary, figures: []
    files: Sequence[str] = field(default_factory=tuple)  # extra outputs copied to docs/results
    table: Callable[[dict[str, Any]], str] | None = None  # summary -> a markdown table shown

    def command(self, quick: bool) -> list[str]:
        return [sys.executable, "-m", self.module, *(self.quick_args if quick else self.args)]

    def shell(self, quick: bool) -> str:
        return shlex.join(["python", "-m", self.module,
                           *(self.quick_args if quick else self.args)])


# --- the machine and the code measured ---------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM (from /proc), Python, Kafka and Redis versions, commit, date."""
    cpu = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 2**20, 1)
    from streams.settings import get_settings

    settings = get_settings()
    redis_version = None
    try:
        import redis

        with redis.Redis.from_url(settings.redis_url, socket_timeout=5) as r:
            redis_version = r.info("server")["redis_version"]
    except Exception as exc:  # the report still says what it could not learn
        redis_version = f"unknown ({type(exc).__name__})"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram_gib,
        "python": platform.python_version(), "kafka": settings.kafka_version,
        "redis": redis_version, "os": f"{platform.system()} {platform.release()}",
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **_git(),
    }


def _git() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "models", "streams",
                                "bench"], cwd=ROOT, check=True, capture_output=True,
                               text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, load {m['loadavg_1_5_15']};"
            f" Python {m['python']}, Kafka {m['kafka']}, Redis {m['redis']}; {m['date']}, commit"
            f" {m['commit']}{' (uncommitted changes)' if m.get('dirty') else ''}")


# --- plots ----------------------------------------------------------------------------------------
@dataclass
class Figures:
    """Where plots go and the caption every plot carries (the machine it was measured on)."""

    directory: Path
    caption: str

    def save(self, fig, name: str) -> Path:  # a matplotlib Figure
        fig.text(0.01, 0.01, self.caption, fontsize=6.5, color="#555555", ha="left",
                 va="bottom", wrap=True)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        path = self.directory / name
        fig.savefig(path, dpi=110)
        import matplotlib.pyplot as plt

        plt.close(fig)
        return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- quality --------------------------------------------------------------------------------------
QUALITY_NAMES = {"tastemaker-cooccurrence": "tastemaker", "popularity-decayed":
                 "popularity (decayed)", "river-BiasedMF": "river BiasedMF"}


def quality_summary(raw: dict[str, Any]) -> dict[str, Any]:
    return raw  # already small: per model its scores and 20 checkpoints


def quality_rows(s: dict[str, Any]) -> list[Row]:
    rows = [(f"prequential Recall@10, {QUALITY_NAMES.get(name, name)}",
             f"{m['recall@10']:.4f} (nDCG@10 {m['ndcg@10']:.4f})", "")
            for name, m in s["models"].items()]
    ratio = s["recall_ratio_vs_best_baseline"]
    rows.append(("Recall@10, tastemaker / best baseline", f"{ratio}x",
                 f"> 1: {_met(ratio is not None and ratio > 1)}"))
    for encoding, table in s.get("encodings", {}).items():
        if encoding == s.get("encoding"):
            continue  # the rows above
        ratio = table["recall_ratio_vs_best_baseline"]
        ours = table["models"]["tastemaker-cooccurrence"]
        rows.append((f"Recall@10, tastemaker / best baseline, {encoding} encoding",
                     f"{ratio}x ({ours['recall@10']:.4f})",
                     f"> 1: {_met(ratio is not None and ratio > 1)}"))
    return rows


def quality_plots(s: dict[str, Any], figures: Figures) -> list[Path]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, m in s["models"].items():
        points = m.get("checkpoints") or []
        if not points:
            continue
        xs, window = [], []
        last_n = last_eval = last_hits = 0
        for n, evaluated, hits in points:
            if evaluated > last_eval:
                xs.append((last_n + n) / 2)
                window.append((hits - last_hits) / (evaluated - last_eval))
            last_n, last_eval, last_hits = n, evaluated, hits
        line, = ax.plot(xs, window, marker="o", markersize=3,
                        label=f"{QUALITY_NAMES.get(name, name)} (overall {m['recall@10']:.3f})")
        ax.plot([p[0] for p in points], m["curve"], color=line.get_color(), linestyle=":",
                linewidth=1)
    ax.set_xlabel("ratings replayed (ML-100K, time order)")
    ax.set_ylabel("Recall@10 per 5% of the stream (dotted: cumulative)")
    ax.set_title(f"Prequential Recall@10 over the stream ({s['events']:,} ratings, "
                 f"{s['eval_share']:.0%} asked)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [figures.save(fig, "quality_recall.png")]


# --- freshness ------------------------------------------------------------------------------------
def freshness_summary(raw: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    fresh = sorted(raw.get("fresh_ms", []))
    small = {k: v for k, v in raw.items() if not isinstance(v, list) or len(v) <= 50}
    small.pop("p50_ms_by_second", None)
    # the CDF at 200 points is enough to plot it again
    if fresh:
        qs = np.linspace(0, 100, 201)
        small["cdf_ms"] = [round(float(x), 2) for x in np.percentile(fresh, qs)]
    return small


def freshness_rows(s: dict[str, Any]) -> list[Row]:
    return [(f"freshness (send -> recs written), 1 worker at {s['achieved_rate']:.0f} events/s",
             f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms ({s['resolved']} tracked, "
             f"{s['unresolved']} unresolved)",
             f"p99 <= {s['p99_target_ms']} ms: {_met(s['meets_target'])}")]


def freshness_plots(s: dict[str, Any], figures: Figures) -> list[Path]:
    import numpy as np

    plt = _pyplot()
    cdf = s.get("cdf_ms") or []
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    if cdf:
        qs = np.linspace(0, 1, len(cdf))
        left.plot(np.maximum(cdf, 0.1), qs, color="#4878a8")
        left.set_xscale("log")
        # histogram from the CDF: samples per log-spaced bin
        lo, hi = max(min(cdf), 1.0), max(cdf)
        bins = np.geomspace(lo, hi * 1.0001, 30) if hi > lo else np.array([lo, lo * 2])
        frac = np.diff(np.interp(bins, np.maximum(cdf, 0.1), qs))
        right.bar(bins[:-1], frac * 100, width=np.diff(bins), align="edge", color="#4878a8",
                  edgecolor="white")
        right.set_xscale("log")
    for ax in (left, right):
        for key, colour in (("p50_ms", "green"), ("p99_ms", "red")):
            if isinstance(s.get(key), (int, float)):
                ax.axvline(s[key], color=colour, label=f"{key[:3]} {s[key]:.0f} ms")
        ax.axvline(s["p99_target_ms"], color="black", linestyle="--",
                   label=f"p99 target {s['p99_target_ms']} ms")
        ax.set_xlabel("send -> recommendations rewritten (ms, log scale)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("share of tracked events (CDF)")
    left.set_title("Freshness CDF")
    right.set_ylabel("% of tracked events")
    right.set_title("Freshness distribution")
    fig.suptitle(f"1 worker, {s['partitions']} partitions, batch {s['batch_size']}, "
                 f"{s['achieved_rate']:.0f} events/s for {s['seconds_target']:g} s",
                 fontsize=10)
    return [figures.save(fig, "freshness.png")]


# --- throughput against partitions and workers ----------------------------------------------------
def speed_summary(raw: dict[str, Any]) -> dict[str, Any]:
    return {"scaling": raw["scaling"]}


def speed_rows(s: dict[str, Any]) -> list[Row]:
    return [(f"throughput, Kafka -> Redis, {r['partitions']} partitions x {r['workers']} "
             f"worker{'s' if r['workers'] > 1 else ''}",
             f"{r['events_per_s']:,.0f} events/s ({r['cpu_us_per_event']:,.0f} us CPU/event)",
             "") for r in s["scaling"]]


def speed_plots(s: dict[str, Any], figures: Figures) -> list[Path]:
    plt = _pyplot()
    runs = s["scaling"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    partitions = max(r["partitions"] for r in runs)
    by_workers = sorted((r for r in runs if r["partitions"] == partitions),
                        key=lambda r: r["workers"])
    by_partitions = sorted((r for r in runs if r["workers"] == 1), key=lambda r: r["partitions"])
    for ax, group, key, label in ((left, by_workers, "workers", "worker processes"),
                                  (right, by_partitions, "partitions", "partitions per topic")):
        xs = range(len(group))
        bars = ax.bar(xs, [r["events_per_s"] for r in group], color="#4878a8")
        ax.set_xticks(xs, [str(r[key]) for r in group])
        ax.bar_label(bars, labels=[f"{r['events_per_s']:,.0f}" for r in group], fontsize=8)
        ax.set_xlabel(label)
        ax.grid(axis="y", alpha=0.3)
    left.set_ylabel("events/s, first commit to last")
    left.set_title(f"vs workers ({partitions} partitions)")
    right.set_title("vs partitions (1 worker)")
    events = runs[0]["events"]
    fig.suptitle(f"Throughput, Kafka -> worker(s) -> Redis, first {events:,} ML-100K replay "
                 "events", fontsize=10)
    return [figures.save(fig, "throughput.png")]


# --- read latency -------------------------------------------------------------------------------
def read_latency_summary(raw: dict[str, Any]) -> dict[str, Any]:
    return raw


def read_latency_rows(s: dict[str, Any]) -> list[Row]:
    names = {"plain": "read top-100 + explanations, plain redis-py (1 round trip)",
             "python": "read top-100 + explanations + titles, sentiment, summaries, Python API "
                       "(1 round trip)",
             "ping": "redis-py PING on loopback (floor)",
             "plain_resp3": "the plain read over RESP3 (redis-py 8's default wire protocol)"}
    ratio = s["plain_p50_over_ping_p50"]
    target = s["target_plain_p50_over_ping_p50"]
    return [(names.get(name, name),
             f"p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, p99.9 {r['p999_ms']:.3f} ms"
             + (f" (p50 {r['p50_ms'] / s['readers']['ping']['p50_ms']:.1f}x PING)"
                if name != "ping" else ""),
             f"p50 <= {target:g}x PING p50 ({ratio:.1f}x): {_met(s['plain_meets_target'])}"
             if name == "plain" else "")
            for name, r in s["readers"].items()]


def read_latency_plots(s: dict[str, Any], figures: Figures) -> list[Path]:
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    readers = list(s["readers"])
    marks = [("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]
    width = 0.8 / len(marks)
    x = np.arange(len(readers))
    for k, (key, label) in enumerate(marks):
        values = [s["readers"][r][key] for r in readers]
        ax.bar(x + k * width - 0.4 + width / 2, values, width, label=label)
    target = s["target_plain_p50_over_ping_p50"]
    ax.axhline(target * s["readers"]["ping"]["p50_ms"], color="black", linestyle="--",
               label=f"target: plain p50 <= {target:g}x PING p50")
    ax.set_yscale("log")
    ax.set_xticks(x, [{"plain": "plain redis-py", "python": "Python API", "ping": "PING",
                       "plain_resp3": "plain, RESP3"}.get(r, r) for r in readers])
    ax.set_ylabel("latency per read (ms, log scale)")
    ax.set_title(f"Reading one user's top-{s['top']} with explanations ({s['users']:,} users, "
                 f"{s['readers']['plain']['reads']:,} reads each, loopback, "
                 f"{s['redis_py_parser']})", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return [figures.save(fig, "read_latency.png")]


# --- review sentiment -----------------------------------------------------------------------------
def sentiment_summary(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k != "variants"}


def sentiment_rows(s: dict[str, Any]) -> list[Row]:
    names = {"tastemaker": "tastemaker (NB lexicon prior + NB-LR + n-gram LR stack, hashed)",
             "vader": "VADER", "majority": "majority so far"}
    rows = [(f"review sentiment, {names.get(name, name)}",
             f"accuracy {r['accuracy']:.3f}, ROC AUC {r['roc_auc']:.3f}", "")
            for name, r in s["results"].items()]
    model = s["results"]["tastemaker"]
    rows.append(("review sentiment throughput, learn + predict (CPU clock)",
                 f"{model['reviews_per_s_cpu']:,.0f} reviews/s",
                 f">= 5,000/s: {_met(model['reviews_per_s_cpu'] >= 5000)}"))
    return rows


def whole_summary(raw: dict[str, Any]) -> dict[str, Any]:
    """The script's JSON as it is (already small: no per-sample arrays)."""
    return raw


def sentiment_curve_rows(s: dict[str, Any]) -> list[Row]:
    rows = []
    for part in ("short", "long"):
        curves = s["curves"][part]
        points = {p["n"]: p for p in curves["tastemaker"]}
        shown = [n for n in (250, 1_000, 5_000) if n in points]
        value = ", ".join(f"N={n:,}: {points[n]['accuracy']:.3f} / {points[n]['roc_auc']:.3f}"
                          for n in shown)
        ok = s["checks"][part]["best_at_every_n"]
        rows.append((f"review sentiment learning curve, {part} texts (accuracy / AUC)", value,
                     f">= the better of NB and TF-IDF+LR at every N: {_met(ok)}"))
    short_5k = next(p for p in s["curves"]["short"]["tastemaker"] if p["n"] == 5_000)
    rows.append(("review sentiment, short texts, AUC after 5,000 labels",
                 f"{short_5k['roc_auc']:.3f}", f">= 0.88: {_met(short_5k['roc_auc'] >= 0.88)}"))
    t, snap = s["throughput"], s["snapshot"]
    rows.append(("review sentiment throughput, learn + predict, one core (CPU clock)",
                 f"{t['reviews_per_s_cpu']:,} reviews/s",
                 f">= 5,000/s: {_met(t['reviews_per_s_cpu'] >= 5000)}"))
    rows.append(("review sentiment snapshot (npz) after 33,530 texts",
                 f"{snap['bytes']:,} bytes (worst case {snap['bound_bytes']:,} + header)",
                 f"<= 2 MB: {_met(snap['bound_bytes'] < 2_000_000)}; same bytes in two "
                 f"processes: {_met(s['determinism']['same_snapshot_in_two_processes'])}"))
    return rows


def summaries_rows(s: dict[str, Any]) -> list[Row]:
    return [("review summaries: Spearman(summary sentiment, mean review sentiment)",
             f"{s['spearman_summary_vs_mean_review_sentiment']:.3f} over "
             f"{s['items_with_10_reviews']} items with >= 10 reviews", "")]


# --- ranker ---------------------------------------------------------------------------------------
def ranker_summary(raw: dict[str, Any]) -> dict[str, Any]:
    return raw  # per fit a few figures, 20 checkpoints


def ranker_rows(s: dict[str, Any]) -> list[Row]:
    base, ours, lift = s["cooccurrence_order"], s["mlp_reranked"], s["lift"]
    published = sum(f["published"] for f in s["fits"])
    return [
        ("prequential, co-occurrence order (same run)",
         f"Recall@10 {base['recall@10']:.4f}, nDCG@10 {base['ndcg@10']:.4f}", ""),
        ("prequential, MLP re-ranked (same run)",
         f"Recall@10 {ours['recall@10']:.4f}, nDCG@10 {ours['ndcg@10']:.4f}", ""),
        ("ranker lift over co-occurrence order",
         f"nDCG@10 {lift['ndcg@10']:+.1%}, Recall@10 {lift['recall@10']:+.1%} "
         f"({published}/{len(s['fits'])} fits published)",
         f"nDCG@10 >= +10%: {_met(lift['ndcg@10'] is not None and lift['ndcg@10'] >= 0.10)}"),
        ("trainer throughput, CPU (fine-tunes of the run)",
         f"{s['trainer_examples_per_s']:,} examples/s", ""),
    ]


def ranker_plots(s: dict[str, Any], figures: Figures) -> list[Path]:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    points = s.get("checkpoints") or []
    xs = [p[0] for p in points]
    for column, label in ((3, "co-occurrence order"), (5, "MLP re-ranked")):
        left.plot(xs, [p[column] / p[1] if p[1] else 0.0 for p in points], marker="o",
                  markersize=3, label=label)
    for fit in s["fits"]:
        left.axvline(fit["at_event"], color="#2a2" if fit["published"] else "#c33",
                     alpha=0.25, linewidth=1)
    left.set_xlabel("replay events (ML-100K, time order)")
    left.set_ylabel("cumulative nDCG@10")
    left.set_title("Prequential nDCG@10, same events\n(lines: fits, green published, red "
                   "refused)", fontsize=9)
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    at = [f["at_event"] for f in s["fits"]]
    right.plot(at, [f["candidate"]["ndcg@10"] for f in s["fits"]], marker="o",
               label="fine-tuned candidate")
    right.plot(at, [f["current"]["ndcg@10"] for f in s["fits"]], marker="s",
               label="current version (co-occurrence order before the first)")
    right.set_xlabel("replay events at the fit")
    right.set_ylabel("held-out nDCG@10 within candidate groups")
    right.set_title("The publishing guard: candidate vs current", fontsize=9)
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    return [figures.save(fig, "ranker.png")]


def swap_summary(raw: dict[str, Any]) -> dict[str, Any]:
    return raw


def swap_rows(s: dict[str, Any]) -> list[Row]:
    return [(f"ranker publish -> all {s['workers']} workers serving it",
             f"p50 {s['p50_s'] * 1000:.0f} ms, max {s['max_s'] * 1000:.0f} ms "
             f"({s['publishes']} publishes)", f"<= 1 s: {_met(s['max_s'] <= 1.0)}")]


# --- the soak ------------------------------------------------------------------------------------
def soak_summary(raw: dict[str, Any]) -> dict[str, Any]:
    """The run without its per-second samples but every fifth (enough to plot it again)."""
    return {**raw, "timeline": raw["timeline"][::5]}


def soak_rows(s: dict[str, Any]) -> list[Row]:
    c = s["compare"]
    return [(f"soak: {s['minutes']:g} min at {s['load']:.0%} of capacity ({s['capacity']:.0f}/s), "
             f"{s['kills']} kill -9, a Redis restart, {s['phases'][1]['seconds'] / 60:g} min at "
             f"{s['phases'][1]['rate']:.0f}/s", f"{s['sent']:,} events, equal to the reference: "
             f"{c['equal_to_reference']}, lost {c['events_lost']}, twice "
             f"{c['events_counted_twice']}", _met(bool(c["equal_to_reference"])
                                                  and c["events_lost"] == 0
                                                  and c["events_counted_twice"] == 0)),
            ("soak: lag after the overload, freshness over the run",
             f"recovered {s['lag_recovered_s_after_overload']} s after it (peak "
             f"{s['lag_peak_after_overload']:,}); p50 {s['freshness_p50_ms']:.0f} ms, p99 "
             f"{s['freshness_p99_ms']} ms", _met(s["lag_recovered_s_after_overload"] is not None))]


def soak_plots(s: dict[str, Any], figures: Figures) -> list[Path]:
    from bench.soak import plot

    path = figures.directory / "soak.png"
    plot(s, path)
    return [path]


# --- fairness: popularity bias and diversity ------------------------------------------------------
CHOSEN_CONTROLS = "diversity 0.2"  # the bench.controls point that the settings' defaults are
FAIRNESS_COLUMNS = ("recall@10", "ndcg@10", "coverage@10", "gini@10", "novelty", "ild@10",
                    "popularity_lift", "long_tail_share")


def fairness_summary(raw: dict[str, Any]) -> dict[str, Any]:
    return raw  # small: per setting and model row, eight numbers per protocol


def fairness_rows(s: dict[str, Any]) -> list[Row]:
    off = s["points"]["off"]["offline"]
    chosen = s["points"].get(s.get("chosen") or "", {}).get("offline")
    rows = [("offline coverage@10 / Gini of exposure / popularity lift, controls off",
             f"{off['coverage@10']:.3f} / {off['gini@10']:.3f} / {off['popularity_lift']:+.2f}",
             "")]
    if chosen is not None and s["chosen"] != "off":
        rows.append((f"the same with the default controls ({s['chosen']})",
                     f"{chosen['coverage@10']:.3f} / {chosen['gini@10']:.3f} / "
                     f"{chosen['popularity_lift']:+.2f}; nDCG@10 {chosen['ndcg@10']:.4f} vs "
                     f"{off['ndcg@10']:.4f}", ""))
    return rows


def fairness_table(s: dict[str, Any]) -> str:
    head = ("| | " + " | ".join(FAIRNESS_COLUMNS) + " |\n|---|"
            + "---|" * len(FAIRNESS_COLUMNS))
    lines = ["Every model row, offline protocol (ML-100K, stratified 75/25; popularity = train "
             "ratings, long tail = items outside the most rated ones holding 20% of them, ILD = "
             "1 - cosine of the items' binary train-rater vectors):", "", head]
    lines += [f"| {name} | " + " | ".join(str(row[c]) for c in FAIRNESS_COLUMNS) + " |"
              for name, row in s.get("models", {}).items()]
    for protocol in ("offline", "prequential"):
        lines += ["", f"Control settings, {protocol} ({s['protocols'][protocol]}):", "", head]
        lines += [f"| {name}{' (default)' if name == s.get('chosen') else ''} | "
                  + " | ".join(str(p[protocol][c]) for c in FAIRNESS_COLUMNS) + " |"
                  for name, p in s["points"].items()]
    return "\n".join(lines)


# --- defaults that generalise, and the ranker on the offline protocol -----------------------------
def generalise_rows(s: dict[str, Any]) -> list[Row]:
    chosen = s.get("chosen")
    entry = s["configs"].get(chosen or "")
    if entry is None:
        return []
    worst = min(entry["vs_today"].values())
    best_setup = max(entry["vs_today"], key=entry["vs_today"].get)
    return [(f"nDCG@10 of the defaults ({chosen}) over the old ones (180 d, rating 0), worst of "
             f"{len(entry['vs_today'])} setups", f"{worst:.3f}x", f">= ~1: {_met(worst >= 0.99)}"),
            (f"... best ({best_setup})", f"{entry['vs_today'][best_setup]:.3f}x", "")]


def generalise_plots(s: dict[str, Any], figures: Figures) -> list[Path]:
    from bench.generalise import plot

    path = figures.directory / "generalise.png"
    plot(s, path)
    return [path]


def offline_ranker_rows(s: dict[str, Any]) -> list[Row]:
    return [(f"offline nDCG@10 (MS Recommenders protocol), {name}", f"{m['ndcg@10']:.4f}",
             "BPR 0.442: " + _met(m["ndcg@10"] >= 0.442) if "MLP" in name else "")
            for name, m in s["models"].items()]


# --- the report -----------------------------------------------------------------------------------
STEPS: list[Step] = [
    Step("quality", "Quality: prequential Recall@10 on MovieLens-100K", "bench.quality",
         args=["--out", "bench/out/quality.json"],
         quick_args=["--limit", "20000", "--out", "bench/out/quality.json"],
         output="bench/out/quality.json", summarise=quality_summary, rows=quality_rows,
         plots=quality_plots),
    Step("freshness", "Freshness: event sent to recommendations rewritten", "bench.freshness",
         args=["--rate", "500", "--seconds", "45", "--out", "bench/out/freshness_report.json"],
         quick_args=["--rate", "500", "--seconds", "10", "--drain", "60",
                     "--out", "bench/out/freshness_report.json"],
         output="bench/out/freshness_report.json", summarise=freshness_summary,
         rows=freshness_rows, plots=freshness_plots),
    Step("speed", "Throughput against partitions and workers", "bench.speed",
         args=["--part", "scaling", "--limit", "30000", "--configs", "6x1", "6x2", "6x3", "1x1",
               "3x1", "--out", "bench/out/speed_scaling.json"],
         quick_args=["--part", "scaling", "--limit", "5000", "--configs", "6x1", "6x2", "1x1",
                     "--out", "bench/out/speed_scaling.json"],
         output="bench/out/speed_scaling.json", summarise=speed_summary, rows=speed_rows,
         plots=speed_plots),
    Step("read_latency", "Read latency: a user's top-100 with explanations", "bench.read_latency",
         args=["--out", "bench/out/read_latency.json"],
         quick_args=["--learn", "10000", "--reads", "2000", "--warmup", "200",
                     "--out", "bench/out/read_latency.json"],
         output="bench/out/read_latency.json", summarise=read_latency_summary,
         rows=read_latency_rows, plots=read_latency_plots),
    Step("sentiment", "Review sentiment, prequential", "bench.sentiment",
         args=["--out", "bench/out"], quick_args=["--limit", "5000", "--repeats", "1",
                                                  "--out", "bench/out"],
         output="bench/out/sentiment.json", summarise=sentiment_summary, rows=sentiment_rows,
         files=["bench/out/sentiment.png"]),
    Step("sentiment_curve", "Review sentiment learning curves, short and long texts",
         "bench.sentiment", args=["--curve", "--out", "bench/out"],
         quick_args=["--curve", "--repeats", "1", "--out", "bench/out"],
         output="bench/out/sentiment_curve.json", summarise=whole_summary,
         rows=sentiment_curve_rows, files=["bench/out/sentiment_curve.png"]),
    Step("summaries", "Per-item review summaries on the MovieLens-100K replay",
         "bench.sentiment", args=["--summaries", "--out", "bench/out"],
         quick_args=["--summaries", "--out", "bench/out"],
         output="bench/out/summaries.json", summarise=whole_summary, rows=summaries_rows),
    Step("ranker", "Ranker: MLP re-ranking vs the co-occurrence order, prequential",
         "bench.ranker", args=["--example-rate", "0.5", "--out", "bench/out/ranker.json"],
         quick_args=["--limit", "20000", "--train-every", "5000",
                     "--out", "bench/out/ranker.json"],
         output="bench/out/ranker.json", summarise=ranker_summary, rows=ranker_rows,
         plots=ranker_plots),
    Step("generalise", "Defaults on both protocols, both encodings, time x1 and x30",
         "bench.generalise", args=["--chosen", "hl 3650d, rating 0",
                                   "--out", "bench/out/generalise.json"],
         quick_args=["--limit", "5000", "--only", "today (hl 180d, rating 0)", "--only",
                     "hl 3650d, rating 0", "--chosen", "hl 3650d, rating 0",
                     "--out", "bench/out/generalise.json"],
         output="bench/out/generalise.json", summarise=lambda raw: raw, rows=generalise_rows,
         plots=generalise_plots),
    Step("offline_ranker", "The ranker on the offline protocol (ML-100K, stratified 75/25)",
         "bench.offline_ranker", args=["--out", "bench/out/offline_ranker.json"],
         quick_args=["--example-rate", "0.05", "--epochs", "4", "--folds", "1",
                     "--out", "bench/out/offline_ranker.json"],
         output="bench/out/offline_ranker.json", summarise=lambda raw: raw,
         rows=offline_ranker_rows),
    Step("fairness", "Fairness: popularity bias and diversity, measured and controlled",
         "bench.controls", args=["--chosen", CHOSEN_CONTROLS, "--out", "bench/out/controls.json"],
         quick_args=["--limit", "5000", "--chosen", CHOSEN_CONTROLS,
                     "--out", "bench/out/controls.json"],
         output="bench/out/controls.json", summarise=fairness_summary, rows=fairness_rows,
         files=["bench/out/controls.png"], table=fairness_table),
    Step("swap", "Ranker hot swap: publish to every worker serving it", "bench.swap_latency",
         args=["--workers", "2", "--publishes", "10", "--out", "bench/out/swap_latency.json"],
         quick_args=["--workers", "2", "--publishes", "3",
                     "--out", "bench/out/swap_latency.json"],
         output="bench/out/swap_latency.json", summarise=swap_summary, rows=swap_rows),
    Step("soak", "Soak: kill -9, a Redis restart and an overload under steady load",
         "bench.soak", args=["--out", "bench/out/soak.json"],
         quick_args=["--minutes", "2", "--kill-every", "1", "--overload-minutes", "0.5",
                     "--recover-minutes", "2", "--capacity-events", "10000",
                     "--capacity-seconds", "20", "--out", "bench/out/soak.json"],
         output="bench/out/soak.json", summarise=soak_summary, rows=soak_rows,
         plots=soak_plots),
]



def _images(step: Step, summary: dict[str, Any], figures: Figures) -> list[str]:
    """The step's plots, drawn from its summary, and the extra files it names, copied beside
    them: their file names."""
    images = [p.name for p in step.plots(summary, figures)]
    for extra in step.files:
        source = ROOT / extra
        if source.exists():
            (figures.directory / source.name).write_bytes(source.read_bytes())
            images.append(source.name)
    return images


def run_step(step: Step, *, quick: bool, figures: Figures, log_dir: Path,
             reuse: bool = False) -> dict[str, Any]:
    """Run one step's script, then summarise and plot what it wrote; returns the record kept
    in ``docs/results/<step>.json`` (the machine and commit as the step started, the load
    average also as it ended). With ``reuse``, an output the script already wrote (by the same
    command, run by hand) is summarised instead of running it again; its own ``seconds`` are
    kept when it has them."""
    before = machine_info()
    figures.caption = "measured on " + machine_line(before)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"report-{step.name}.log"
    output = ROOT / step.output
    if reuse and output.exists():
        summary = step.summarise(json.loads(output.read_text()))
        images = _images(step, summary, figures)
        return {"step": step.name, "title": step.title, "command": step.shell(quick),
                "quick": quick, "seconds": float(summary.get("seconds", 0.0)),
                "images": images, "machine": before, "reused_output": True,
                "loadavg_after": before["loadavg_1_5_15"], "summary": summary}
    output.unlink(missing_ok=True)
    print(f"== {step.name}: {step.shell(quick)}  (log: {log.relative_to(ROOT)})", flush=True)
    started = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(step.command(quick), cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            f.write(line)
            print(f"   {line}", end="", flush=True)
        code = proc.wait()
    seconds = time.perf_counter() - started
    if code != 0 or not output.exists():
        raise RuntimeError(f"{step.name}: `{step.shell(quick)}` exited {code}; see {log}")
    summary = step.summarise(json.loads(output.read_text()))
    images = _images(step, summary, figures)
    return {"step": step.name, "title": step.title, "command": step.shell(quick),
            "quick": quick, "seconds": round(seconds, 1), "images": images,
            "machine": before, "loadavg_after": machine_info()["loadavg_1_5_15"],
            "summary": summary}


def load_records(directory: Path, steps: Sequence[Step]) -> list[dict[str, Any]]:
    records = []
    for step in steps:
        path = directory / f"{step.name}.json"
        if path.exists():
            records.append(json.loads(path.read_text()))
    return records


def headline_table(records: Sequence[dict[str, Any]], steps: Sequence[Step]) -> str:
    by_name = {s.name: s for s in steps}
    lines = ["| what | measured | target |", "|---|---|---|"]
    for record in records:
        for what, measured, target in by_name[record["step"]].rows(record["summary"]):
            lines.append(f"| {what} | {measured} | {target} |")
    return "\n".join(lines)


def results_markdown(records: Sequence[dict[str, Any]], steps: Sequence[Step],
                     *, image_prefix: str = "") -> str:
    """The headline table, then per step its command, machine and images."""
    by_name = {s.name: s for s in steps}
    parts = ["Made by `tastemaker bench` (`python -m bench.report`); each step's command, "
             "summary JSON and machine are below.", "", headline_table(records, steps), ""]
    for record in records:
        m = record["machine"]
        parts += [f"**{record['title']}** — `{record['command']}`"
                  f"{' (quick mode)' if record['quick'] else ''}, {record['seconds']:.0f} s; "
                  f"[summary]({image_prefix}{record['step']}.json)", "",
                  f"<sub>{machine_line(m)}</sub>", ""]
        parts += [f"![{record['title']}]({image_prefix}{image})" for image in record["images"]]
        step = by_name.get(record["step"])
        if step is not None and step.table is not None:
            parts += ["", step.table(record["summary"])]
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def update_results_page(block: str, page: Path = RESULTS_PAGE) -> bool:
    """Replace what is between the page's results markers with ``block``; False when the
    page has no markers (then it is left alone)."""
    text = page.read_text()
    pattern = re.compile(re.escape(MARK_START) + r".*?" + re.escape(MARK_END), re.S)
    if not pattern.search(text):
        return False
    page.write_text(pattern.sub(lambda _: f"{MARK_START}\n{block}{MARK_END}", text))
    return True


def main(argv: Sequence[str] | None = None, *, steps: Sequence[Step] = STEPS) -> int:
    names = [s.name for s in steps]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=names, metavar="STEP",
                        help=f"run only this step (repeatable): {', '.join(names)}")
    parser.add_argument("--quick", action="store_true", help="small versions of the steps")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-page", action="store_true",
                        help=f"leave {RESULTS_PAGE.relative_to(ROOT)} alone")
    parser.add_argument("--reuse", action="store_true",
                        help="summarise outputs the steps' scripts already wrote (no rerun)")
    args = parser.parse_args(argv)

    chosen = [s for s in steps if not args.only or s.name in args.only]
    args.results.mkdir(parents=True, exist_ok=True)
    figures = Figures(args.results, "")
    failed = []
    for step in chosen:
        try:
            record = run_step(step, quick=args.quick, figures=figures, log_dir=OUT / "logs",
                              reuse=args.reuse)
        except Exception as exc:  # one step failing must not lose the others
            print(f"!! {step.name} failed: {exc}", flush=True)
            failed.append(step.name)
            continue
        (args.results / f"{step.name}.json").write_text(json.dumps(record, indent=1) + "\n")
        print(f"== {step.name}: done in {record['seconds']:.0f} s; images {record['images']}",
              flush=True)

    records = load_records(args.results, steps)
    (args.results / "results.md").write_text(
        "# tastemaker results\n\n" + results_markdown(records, steps))
    print(headline_table(records, steps))
    if not args.no_page and args.results == RESULTS:
        if update_results_page(results_markdown(records, steps, image_prefix="results/")):
            print(f"{RESULTS_PAGE.relative_to(ROOT)}: results block updated")
    print(f"wrote {args.results / 'results.md'}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
