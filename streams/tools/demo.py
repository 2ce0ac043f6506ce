"""``tastemaker demo``: the whole system on real data, in one command.

Brings the stack up (the services in the settings when they answer, else the local stack), starts
a stream worker and the ranker trainer (two real processes), replays MovieLens-100K with real
review texts through Kafka, waits until every event is processed, the trainer has fitted on every
example the worker logged, every worker serves the current ranker version and the settle pass has
re-ranked the lists with it, then prints three users' recent history and top-10 recommendations
with titles and explanations, read from Redis, and a summary (throughput, freshness, dead letters,
the ranker versions published and refused, the version each shown list was ranked with).

The demo uses topics and keys of its own (``demo-*`` topics, ``demo:`` key prefix) and clears
them first, so it can be run again; it stops what it started unless ``--keep``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from streams.connections import kafka_admin, kafka_consumer, redis_sync
from streams.contract.keys import Keys
from streams.settings import Settings, load_settings
from streams.tools.datasets import Movie, Rating
from streams.tools.supervisor import TrainerProcess, WorkerProcess, is_settled, processed

logger = logging.getLogger(__name__)

DEMO_USERS = ("1", "405", "655")  # a long, a very long and an active-late history
# The trainer's schedule in the demo. The full replay logs about 14,600 examples (half the
# positive events whose item is among the candidates) over its minutes of processing (12 on a
# busy 2-core machine): a fit every 30 s gives several, each on a larger window, so the guard is
# seen publishing and refusing as data accumulate (17 fits, 7 published there); 5,000 new
# examples (a third of the run) start one sooner on a machine fast enough to log them in < 30 s.
# After the last event the final fit then comes within 30 s, plus its own ~20 s: inside
# RANKER_WAIT_S. The default schedule (300 s / 2,000) suits a live stream, not a replay.
DEMO_TRAINER = {"trainer_interval_s": 30.0, "trainer_min_new_examples": 5_000}
# torch's default of one thread per core makes this small MLP 10-25x slower on a busy 2-core
# machine (threads wait on each other and on the worker); one thread leaves a core to the worker
TRAINER_ENV = {"OMP_NUM_THREADS": "1"}
RANKER_WAIT_S = 90.0  # after the last event: the trainer's last fit, the swap, the settle pass


def demo_settings(base: Settings, name: str = "demo") -> Settings:
    """``base`` with the demo's own topics (``{name}-plays``, ...), key prefix (``{name}:``),
    app id and trainer schedule."""
    return load_settings(**{
        **base.model_dump(),
        "topic_plays": f"{name}-plays", "topic_ratings": f"{name}-ratings",
        "topic_reviews": f"{name}-reviews", "topic_dlq": f"{name}-events-dlq",
        "topic_ranker_examples": f"{name}-ranker-examples",
        "topic_model_updates": f"{name}-model-updates",
        "key_prefix": f"{name}:", "app_id": f"tastemaker-{name}",
        **DEMO_TRAINER,
    })


# --- what the trainer did ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Decision:
    published: bool
    candidate_ndcg: float
    current_ndcg: float
    against: str  # "version N" or "co-occurrence order"
    holdout_groups: int


@dataclass(frozen=True, slots=True)
class TrainerLog:
    """The fits a trainer recorded in its log stream (`streams.contract.keys.Keys.trainer_log`):
    attempts (with how many example records it had read then) and the guard's decisions, in
    order."""

    fits_started: int = 0
    attempts: tuple[int, ...] = ()  # records read at each fit or non-fit (too few, none new)
    decisions: tuple[Decision, ...] = ()

    @classmethod
    def of(cls, entries: Sequence[Mapping[bytes, bytes]]) -> TrainerLog:
        """From the stream's entries' fields, oldest first (as ``XRANGE`` returns them).

        >>> log = TrainerLog.of([
        ...     {b"kind": b"attempt", b"fitting": b"0", b"read": b"12"},
        ...     {b"kind": b"attempt", b"fitting": b"1", b"read": b"950"},
        ...     {b"kind": b"decision", b"published": b"0", b"candidate_ndcg": b"0.12",
        ...      b"current_ndcg": b"0.13", b"against": b"version 1", b"holdout_groups": b"180"},
        ...     {b"kind": b"attempt", b"fitting": b"1", b"read": b"2100"},
        ...     {b"kind": b"decision", b"published": b"1", b"candidate_ndcg": b"0.14",
        ...      b"current_ndcg": b"0.13", b"against": b"version 1", b"holdout_groups": b"400"},
        ...     {b"kind": b"attempt", b"fitting": b"0", b"read": b"2150"}])
        >>> log.attempts, log.fits_started, [d.published for d in log.decisions]
        ((12, 950, 2100, 2150), 2, [False, True])
        >>> log.caught_up(2150), log.caught_up(2200)  # the last 50 records read were repeats
        (True, False)
        """
        started, attempts, decisions = 0, [], []
        for entry in entries:
            fields = {k.decode(): v.decode() for k, v in entry.items()}
            if fields.get("kind") == "attempt":
                started += fields["fitting"] == "1"
                attempts.append(int(fields["read"]))
            elif fields.get("kind") == "decision":
                decisions.append(Decision(
                    fields["published"] == "1", float(fields["candidate_ndcg"]),
                    float(fields["current_ndcg"]), fields["against"],
                    int(fields["holdout_groups"])))
        return cls(started, tuple(attempts), tuple(decisions))

    @property
    def in_flight(self) -> bool:
        return self.fits_started > len(self.decisions)

    def caught_up(self, logged: int) -> bool:
        """Whether the trainer's last attempt came after it had read all ``logged`` example
        records and its fit, if any, is decided: no fit is due any more."""
        if logged == 0:
            return not self.in_flight
        return not self.in_flight and bool(self.attempts) and self.attempts[-1] >= logged

    @property
    def published(self) -> int:
        return sum(d.published for d in self.decisions)

    @property
    def refused(self) -> int:
        return len(self.decisions) - self.published


# --- the report ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Freshness:
    """The worker's ``tastemaker_freshness_seconds`` histogram: one observation per list written
    after a batch (Kafka append time of the user's last event to the list in Redis)."""

    p50: float  # bucket upper bounds (streams.runtime.metrics.histogram_quantile)
    p99: float
    mean: float  # exact: the histogram's sum / count
    count: int


@dataclass(frozen=True, slots=True)
class RankerState:
    version: int  # served (ranker:current); 0: none published
    holdout_ndcg: float | None = None  # of the served version, from its artefact's metadata
    previous_ndcg: float | None = None  # of what it replaced, on the same held-out groups
    holdout_groups: int | None = None
    replaced: str | None = None  # "version N" / "co-occurrence order", from the trainer's log


@dataclass(slots=True)
class DemoReport:
    events: int
    replay_rate: float
    process_seconds: float
    dlq: int
    examples: int = 0  # ranker training examples the worker logged
    trainer: TrainerLog = field(default_factory=TrainerLog)
    ranker: RankerState = field(default_factory=lambda: RankerState(0))
    ranker_ready: bool = False  # the wait after the replay ended with every condition met
    ranker_wait_s: float = 0.0
    served: dict[str, str] = field(default_factory=dict)  # shown user -> recsmeta "model"
    freshness: Freshness | None = None
    worker_exit: int | None = None
    trainer_exit: int | None = None

    @property
    def process_rate(self) -> float:
        return self.events / self.process_seconds if self.process_seconds else 0.0


# --- the demo -----------------------------------------------------------------------------------
def run_demo(base: Settings, *, keep: bool = False, limit: int | None = None,
             console: Console | None = None, name: str = "demo") -> DemoReport:
    """Run the demo (``name`` names its topics and keys: tests use one of their own)."""
    with _exit_on_sigterm():
        return _run_demo(base, keep=keep, limit=limit, console=console or Console(), name=name)


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """SIGTERM (``timeout``, CI, ``kill``) ends the demo as Ctrl-C does, through the ``finally``
    that stops the worker and the trainer: in sessions of their own, they would outlive it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_demo(base: Settings, *, keep: bool, limit: int | None, console: Console, name: str
              ) -> DemoReport:
    from streams.tools.datasets import movielens_100k
    from streams.tools.stack import LocalStack, free_port, kafka_answers, run_coroutine

    settings = demo_settings(base, name)
    stack = None
    if not (run_coroutine(kafka_answers(settings)) and _redis_answers(settings)):
        console.print("[bold]starting the local stack[/] (Kafka in KRaft mode + Redis)")
        stack = LocalStack(settings)
        stack.up()
    worker = trainer = None
    try:
        _reset(settings)
        logs = Path(tempfile.mkdtemp(prefix=f"tastemaker-{name}-"))
        metrics_port = free_port()
        console.print(f"[bold]starting a stream worker[/] (log: {logs / 'worker.log'}, "
                      f"metrics: http://127.0.0.1:{metrics_port}/metrics)")
        worker = WorkerProcess(load_settings(**{**settings.model_dump(),
                                                "metrics_port": metrics_port}),
                               logs / "worker.log").start()
        worker.wait_ready(timeout=120)
        console.print(f"[bold]starting the ranker trainer[/] (log: {logs / 'trainer.log'}; "
                      f"fits every {settings.trainer_interval_s:g} s or "
                      f"{settings.trainer_min_new_examples:,} new examples)")
        trainer = TrainerProcess(load_settings(**{**settings.model_dump(), "metrics_port": 0}),
                                 logs / "trainer.log", env=TRAINER_ENV).start()
        ratings, movies = movielens_100k(settings.cache_dir)
        if limit is not None:
            ratings = ratings[: limit // 2]  # the replay sends a play and a rating per rating
        users = _demo_users(ratings)
        report = _replay_and_wait(settings, worker, trainer, limit=limit, console=console)
        _wait_for_ranker(settings, report, worker, trainer, users, console)
        report.freshness = _freshness(metrics_port)
        report.ranker = _ranker_state(settings, report.trainer)
        with redis_sync(settings) as r:
            report.served = {u: (r.hget(Keys(settings.key_prefix).recs_meta(u), "model")
                                 or b"?").decode() for u in users}
        _show_users(settings, console, ratings, movies, users)
        if not keep:
            report.trainer_exit = trainer.stop()
            report.worker_exit = worker.stop()
        _show_summary(console, report, keep=keep)
        return report
    finally:
        if keep:
            _print_keep(console, settings, worker, trainer, stack)
        else:
            for process in (trainer, worker):
                if process is not None:
                    process.stop()
            if stack is not None:
                stack.down()


def _redis_answers(settings: Settings) -> bool:
    try:
        with redis_sync(settings, socket_timeout=2) as r:
            return bool(r.ping())
    except redis.RedisError:
        return False


def _reset(settings: Settings) -> None:
    """Delete the demo's topics and keys, then create the topics afresh."""
    from streams.contract.topics import ensure_topics
    from streams.tools.namespaces import drop_namespaces
    from streams.tools.stack import run_coroutine

    if run_coroutine(drop_namespaces([settings])):
        time.sleep(1.0)  # the broker finishes deleting the topics before they are created again
    run_coroutine(ensure_topics(settings))


def _demo_users(ratings: Sequence[Rating]) -> list[str]:
    """`DEMO_USERS` that have events in ``ratings``, then the most active users, three in all."""
    active = Counter(r.user_id for r in ratings)
    users = [u for u in DEMO_USERS if u in active]
    users += [u for u, _ in active.most_common(len(DEMO_USERS)) if u not in users]
    return users[:len(DEMO_USERS)]


def _replay_and_wait(settings: Settings, worker: WorkerProcess, trainer: TrainerProcess, *,
                     limit: int | None, console: Console) -> DemoReport:
    from streams.tools.replay import replay
    from streams.tools.stack import run_coroutine

    console.print("[bold]replaying MovieLens-100K[/] with real review texts")
    started = time.monotonic()
    result = run_coroutine(replay(settings, "movielens-100k", limit=limit))
    total = result.events
    with tqdm(total=total, unit="event", desc="processed by the worker") as bar:
        done = 0
        while done < total:
            _check_alive(worker, trainer)
            time.sleep(0.5)
            now = processed(settings)
            bar.update(now - done)
            done = now
    deadline = time.monotonic() + 120
    while not is_settled(settings) and time.monotonic() < deadline:
        time.sleep(0.5)
    return DemoReport(events=total, replay_rate=result.rate,
                      process_seconds=time.monotonic() - started, dlq=_records(
                          settings, settings.topic_dlq))


def _check_alive(worker: WorkerProcess, trainer: TrainerProcess) -> None:
    for label, process in (("worker", worker), ("trainer", trainer)):
        if not process.alive():
            raise RuntimeError(f"the {label} stopped:\n{process.tail()}")


def _wait_for_ranker(settings: Settings, report: DemoReport, worker: WorkerProcess,
                     trainer: TrainerProcess, users: Sequence[str], console: Console) -> None:
    """Wait (at most `RANKER_WAIT_S`) until the trainer has fitted on every logged example and
    its fit is decided, every worker serves ``ranker:current``, and the shown users' lists were
    rewritten with it by a settle pass over the final statistics. Fills the report's ranker
    fields; when time runs out, the summary says what was served instead."""
    keys = Keys(settings.key_prefix)
    report.examples = _records(settings, settings.topic_ranker_examples)
    console.print(f"waiting for the trainer to fit on all {report.examples:,} logged examples "
                  f"and the worker to re-rank with the result (at most {RANKER_WAIT_S:g} s)")
    started = time.monotonic()
    while True:
        _check_alive(worker, trainer)
        with redis_sync(settings) as r:
            report.trainer = TrainerLog.of([f for _, f in r.xrange(keys.trainer_log)])
            current = int(r.get(keys.ranker_current) or 0)
            serving = [orjson.loads(v)["version"] for v in r.hvals(keys.ranker_serving)]
            models = [r.hget(keys.recs_meta(u), "model") for u in users]
        want = str(current).encode() if current else b"none"
        ready = (report.trainer.caught_up(report.examples)
                 and all(v == current for v in serving) and (serving or not current)
                 and all(m == want for m in models) and is_settled(settings))
        report.ranker_wait_s = time.monotonic() - started
        if ready or report.ranker_wait_s > RANKER_WAIT_S:
            report.ranker_ready = ready
            return
        time.sleep(0.5)


def _records(settings: Settings, topic: str) -> int:
    """Records in ``topic`` now (end minus beginning offsets, over its partitions)."""
    from aiokafka import TopicPartition

    from streams.tools.stack import run_coroutine

    async def count() -> int:
        # the partitions from the admin client: a consumer's partitions_for_topic reads its own
        # metadata cache, which consumer.topics() does not fill (it answered None, so 0, before)
        admin = kafka_admin(settings)
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        tps = [TopicPartition(topic, p["partition"]) for t in described if t["error_code"] == 0
               for p in t["partitions"]]
        if not tps:
            return 0
        consumer = kafka_consumer(settings, enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            return sum(ends[tp] - starts[tp] for tp in tps)
        finally:
            await consumer.stop()

    return run_coroutine(count())


def _freshness(port: int) -> Freshness | None:
    """Read the worker's freshness histogram from its Prometheus endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    from streams.runtime.metrics import histogram_quantile

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError as exc:
        logger.warning("could not read the worker's metrics: %s", exc)
        return None
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "tastemaker_freshness_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    if not count:
        return None
    return Freshness(histogram_quantile(buckets, 0.5), histogram_quantile(buckets, 0.99),
                     total / count, int(count))


def _ranker_state(settings: Settings, trainer: TrainerLog) -> RankerState:
    """The served version and, from its artefact's metadata, its held-out nDCG@10 and that of
    what it replaced (measured by the trainer on the same held-out groups)."""
    from models.ranker import ArtefactError, from_artefact

    keys = Keys(settings.key_prefix)
    with redis_sync(settings) as r:
        version = int(r.get(keys.ranker_current) or 0)
        data = r.get(keys.ranker_artefact(version)) if version else None
    if not version or data is None:
        return RankerState(version)
    try:
        _, metadata = from_artefact(data, max_bytes=settings.ranker_max_artefact_bytes)
        metrics = json.loads(metadata.get("metrics", "{}"))
    except (ArtefactError, ValueError) as exc:
        logger.warning("ranker version %d unreadable: %s", version, exc)
        return RankerState(version)
    published = [d for d in trainer.decisions if d.published]
    # versions are numbered in publish order from 1 (the demo clears its keys first)
    replaced = published[version - 1].against if 0 < version <= len(published) else None
    holdout, previous = metrics.get("holdout", {}), metrics.get("previous", {})
    return RankerState(version, holdout.get("ndcg@10"), previous.get("ndcg@10"),
                       holdout.get("groups"), replaced)


# --- printing -----------------------------------------------------------------------------------
def _show_users(settings: Settings, console: Console, ratings: Sequence[Rating],
                movies: dict[str, Movie], users: Sequence[str]) -> None:
    from streams.client.recs import get_recommendations, recommendations_table

    for user in users:
        history = [r for r in ratings if r.user_id == user][-5:]
        table = Table(title=f"user {user}: last plays and ratings", title_justify="left")
        for column in ("when", "title", "stars"):
            table.add_column(column)
        for r in history:
            movie = movies.get(r.item_id)
            table.add_row(time.strftime("%Y-%m-%d", time.gmtime(r.ts)),
                          movie.title if movie else r.item_id, f"{r.rating:g}")
        console.print(table)
        console.print(recommendations_table(user, get_recommendations(user, 10,
                                                                      settings=settings)))


def _bound(value: float) -> str:
    """A percentile's bucket upper bound: "≤ 250 ms", "≤ 30 s", "> 600 s" (past the last)."""
    if math.isinf(value):
        return "> 600 s"
    return f"≤ {value * 1000:.0f} ms" if value < 1 else f"≤ {value:g} s"


def _show_summary(console: Console, report: DemoReport, *, keep: bool) -> None:
    summary = Table(title="summary", title_justify="left", show_header=False)
    summary.add_row("events replayed", f"{report.events:,}")
    summary.add_row("replay rate (produce)", f"{report.replay_rate:,.0f} events/s")
    summary.add_row("end to end (produce → recommendations in Redis)",
                    f"{report.process_rate:,.0f} events/s ({report.process_seconds:.1f} s)")
    f = report.freshness
    summary.add_row(
        "freshness, Kafka append → list in Redis\n(p50/p99: histogram bucket upper bounds; "
        "the replay\nproduces faster than one worker, so it includes queueing)",
        f"p50 {_bound(f.p50)}, p99 {_bound(f.p99)}; mean {f.mean:.1f} s over "
        f"{f.count:,} list writes" if f else "not measured (worker metrics unreadable)")
    summary.add_row("dead-lettered", f"{report.dlq}")
    t = report.trainer
    summary.add_row("ranker fits (training examples logged)",
                    f"{len(t.decisions)}: {t.published} published, {t.refused} refused by the "
                    f"guard ({report.examples:,} examples)")
    k = report.ranker
    if k.version and k.holdout_ndcg is not None and k.previous_ndcg is not None:
        served = (f"version {k.version}: held-out nDCG@10 {k.holdout_ndcg:.4f} vs "
                  f"{k.previous_ndcg:.4f} of {k.replaced or 'what it replaced'}"
                  + (f" ({k.holdout_groups:,} groups)" if k.holdout_groups else ""))
    elif k.version:
        served = f"version {k.version} (its metrics unreadable)"
    else:
        served = "none published: ranking by co-occurrence score"
    summary.add_row("ranker model served", served)
    summary.add_row("shown lists ranked with (recsmeta model)",
                    ", ".join(f"user {u}: {_model_label(m)}" for u, m in report.served.items()))
    if report.ranker_ready:
        waited = f"ready {report.ranker_wait_s:.0f} s after the last event"
    else:
        waited = (f"not ready after {RANKER_WAIT_S:g} s (trainer "
                  f"{'still fitting' if t.in_flight else 'idle'}): lists as served then")
    summary.add_row("last fit, swap and settle pass", waited)
    if not keep:
        summary.add_row("worker / trainer exit codes", f"{report.worker_exit} / "
                                                       f"{report.trainer_exit}")
    console.print(summary)


def _model_label(model: str) -> str:
    return "co-occurrence order" if model == "none" else f"version {model}"


def _print_keep(console: Console, settings: Settings, worker: WorkerProcess | None,
                trainer: TrainerProcess | None, stack: object | None) -> None:
    console.print(f"kept running; read recommendations with: "
                  f"TASTEMAKER_KEY_PREFIX={settings.key_prefix} tastemaker recs {DEMO_USERS[0]}")
    pids = [(label, p.pid) for label, p in (("worker", worker), ("trainer", trainer))
            if p is not None and p.alive()]
    if pids:  # both stop cleanly on SIGTERM
        console.print(f"stop the {' and the '.join(label for label, _ in pids)} with: "
                      f"kill {' '.join(str(pid) for _, pid in pids)}")
    if stack is not None:
        console.print(f"and the local stack with: TASTEMAKER_STACK_DIR={settings.stack_dir} "
                      "tastemaker down")
    console.print("stop them before running the demo again: it clears the demo's topics and "
                  "keys, which they use")
