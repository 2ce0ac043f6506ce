"""The ``tastemaker`` command line.

A thin layer: each command reads the settings, calls one function of its module and prints the
result. Modules are imported inside the commands so ``tastemaker --help`` stays fast. A bad setting
prints its message and exits 2; a stack that can't do what was asked exits 1; neither shows a
traceback.
"""

from __future__ import annotations

import logging
from typing import Annotated, NoReturn

import typer

from streams.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    name="tastemaker",
    help="Streaming recommender: Kafka events in, fresh top-N recommendations in Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    from streams.logs import configure_logging

    try:
        log_format = load_settings().log_format
    except SettingsError:
        log_format = "text"  # the command reports the bad setting (exit 2)
    configure_logging(log_format, level=logging.DEBUG if verbose else logging.INFO)


def _settings() -> Settings:
    """Settings from the environment; a bad value ends the command with exit code 2."""
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _fail(exc: Exception) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1) from None


# --- local stack ------------------------------------------------------------------------------


@app.command()
def up() -> None:
    """Start local Kafka and Redis (no Docker), create the topics, print client settings.

    The export lines go to stdout, so eval "$(tastemaker up)" points this shell at the stack.
    """
    from streams.tools.stack import LocalStack, StackError

    stack = LocalStack(_settings())
    try:
        changes = stack.up()
    except StackError as exc:
        _fail(exc)
    for change in changes:
        took = f" in {change.seconds:.1f} s" if change.outcome == "started" else ""
        typer.echo(
            f"{change.name}: {change.outcome} (pid {change.pid}, {change.address}){took}", err=True
        )
    for key, value in stack.client_env().items():
        typer.echo(f"export {key}={value}")


@app.command()
def down(
    wipe: Annotated[bool, typer.Option(help="Also delete the stack's data and logs.")] = False,
) -> None:
    """Stop the services `up` started (SIGTERM, then SIGKILL)."""
    from streams.tools.stack import LocalStack, StackError

    stack = LocalStack(_settings())
    try:
        changes = stack.down(wipe=wipe)
    except StackError as exc:
        _fail(exc)
    for change in changes:
        pid = f" (pid {change.pid})" if change.pid else ""
        typer.echo(f"{change.name}: {change.outcome}{pid}")
    if wipe:
        typer.echo(f"wiped data and logs under {stack.root}")


@app.command()
def status() -> None:
    """Show whether each local service is running, its pid and address."""
    from streams.tools.stack import LocalStack

    for state in LocalStack(_settings()).status():
        pid = str(state.pid) if state.pid else "-"
        typer.echo(
            f"{state.name:<6} {'running' if state.running else 'stopped':<8} "
            f"pid {pid:<8} {state.address}"
        )


@app.command()
def topics() -> None:
    """Create the missing topics on TASTEMAKER_KAFKA_BOOTSTRAP_SERVERS (any broker)."""
    import asyncio

    from aiokafka.errors import KafkaError

    from streams.contract.topics import ensure_topics, topic_partitions

    settings = _settings()
    try:
        created = asyncio.run(ensure_topics(settings))
    except (KafkaError, OSError, TimeoutError) as exc:
        _fail(RuntimeError(f"{settings.kafka_bootstrap_servers}: {exc!r}"))
    for topic, partitions in topic_partitions(settings).items():
        state = "created" if topic in created else "exists"
        typer.echo(f"{topic}: {state} ({partitions} partitions)")


# --- events and recommendations -----------------------------------------------------------------


@app.command()
def produce(
    topic: Annotated[str, typer.Argument(help="An event topic: plays, ratings or reviews.")],
    file: Annotated[str, typer.Argument(help="JSON-lines file; - reads stdin.")] = "-",
) -> None:
    """Validate and send one JSON event per line to TOPIC, keyed by user id.

    Invalid lines are reported as "line N: reason" and skipped; the exit code is 1 if any were.
    """
    import asyncio
    import sys

    from aiokafka.errors import KafkaError
    from tqdm import tqdm

    from streams.client.produce import produce_file, topic_kind

    settings = _settings()
    try:
        topic_kind(settings, topic)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None

    def report(problem: str) -> None:
        tqdm.write(problem, file=sys.stderr)  # keeps the progress bar intact

    try:
        result = asyncio.run(produce_file(settings, topic, file, on_reject=report))
    except (KafkaError, OSError) as exc:
        _fail(exc)
    typer.echo(result.summary())
    if result.rejected:
        raise typer.Exit(1)


@app.command()
def replay(
    dataset: Annotated[str, typer.Argument(help="Data set to replay: movielens-100k.")],
    speed: Annotated[
        float | None,
        typer.Option(help="Event-time seconds per wall second; default: as fast as possible."),
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the review sampling.")] = 7,
    encoding: Annotated[str, typer.Option(
        help="completion: plays carry a completion that follows the stars; no-completion: "
             "plays without completion, as most platforms send them.")] = "completion",
) -> None:
    """Replay a data set as play, rating and review events in time order.

    Item metadata (title, year, genres) goes to Redis first.
    """
    import asyncio

    from aiokafka.errors import KafkaError
    from redis.exceptions import RedisError

    from streams.tools.replay import DATASETS, ENCODINGS
    from streams.tools.replay import replay as run_replay

    settings = _settings()
    if dataset not in DATASETS:
        typer.echo(f"error: unknown data set {dataset!r}; expected {', '.join(DATASETS)}", err=True)
        raise typer.Exit(2)
    if encoding not in ENCODINGS:
        typer.echo(f"error: unknown encoding {encoding!r}; expected {', '.join(ENCODINGS)}",
                   err=True)
        raise typer.Exit(2)
    try:
        result = asyncio.run(
            run_replay(settings, dataset, speed=speed, limit=limit, seed=seed,  # type: ignore[arg-type]
                       encoding=encoding)  # type: ignore[arg-type]
        )
    except (KafkaError, RedisError, OSError, ValueError) as exc:
        _fail(exc)
    typer.echo(result.summary())


@app.command()
def recs(
    user_id: Annotated[str, typer.Argument(help="The user whose recommendations to show.")],
    n: Annotated[int, typer.Option("-n", help="How many.", min=1)] = 10,
) -> None:
    """Show a user's recommendations: title, score, why, review sentiment."""
    from redis.exceptions import RedisError
    from rich.console import Console

    from streams.client.recs import get_recommendations, recommendations_table

    settings = _settings()
    try:
        found = get_recommendations(user_id, n, settings=settings)
    except RedisError as exc:
        _fail(RuntimeError(f"{settings.redis_url}: {exc}"))
    if not found:
        typer.echo(f"no recommendations for user {user_id} yet")
        return
    Console().print(recommendations_table(user_id, found))


@app.command("erase-user")
def erase_user(
    user_id: Annotated[str, typer.Argument(help="The user to erase.")],
) -> None:
    """Erase a user: history, recommendations, explanations, and their share of the item
    statistics (every worker follows). Their events up to now are ignored from then on."""
    import asyncio

    from redis.exceptions import RedisError

    from streams.runtime.erasure import erase_user as run_erasure

    settings = _settings()
    try:
        report = asyncio.run(run_erasure(settings, user_id))
    except RedisError as exc:
        _fail(RuntimeError(f"{settings.redis_url}: {exc}"))
    typer.echo(report.summary())


# --- stream worker ----------------------------------------------------------------------------


@app.command()
def worker(
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Log level.")] = "info",
) -> None:
    """Run a stream worker: consume plays, ratings and reviews; keep recommendations in Redis.

    Start several (same settings) to share the partitions; each gives the same final state.
    """
    import sys

    from streams.runtime.app import run_worker

    settings = _settings()
    sys.argv = [sys.argv[0]]  # Faust's Worker reads argv; ours was already parsed
    run_worker(settings, loglevel=loglevel)


@app.command()
def trainer(
    once: Annotated[bool, typer.Option(
        "--once", help="Read the examples logged so far, fit once, exit.")] = False,
    rollback: Annotated[int | None, typer.Option(
        "--rollback", metavar="VERSION", help="Serve a published VERSION again, then exit.")
    ] = None,
) -> None:
    """Fine-tune the ranker on the workers' logged examples and publish guarded versions.

    Trains on CUDA when torch sees a GPU (TASTEMAKER_TRAINER_DEVICE=auto), else on the CPU.
    """
    import asyncio

    from models.ranker import ArtefactError
    from streams.runtime.trainer import Trainer

    settings = _settings()
    if settings.metrics_port and rollback is None:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)
    runner = Trainer(settings)
    try:
        if rollback is not None:
            asyncio.run(runner.rollback(rollback))
            typer.echo(f"serving ranker version {rollback}")
            return
        result = asyncio.run(runner.run_until_stopped(once=once))
    except ArtefactError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        return
    if runner.stopped:
        return
    if once and result is None:
        typer.echo("not enough examples to fit")
    elif once:
        typer.echo(f"{'published' if result.published else 'refused'}: held-out nDCG@10 "
                      f"{result.candidate['ndcg@10']:.4f} vs {result.current['ndcg@10']:.4f}")


@app.command()
def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the stack and worker running.")
                    ] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Replay only N events.", min=1)
                     ] = None,
) -> None:
    """Stack up, a worker, MovieLens-100K replayed, recommendations printed, summary."""
    from streams.tools.demo import run_demo

    run_demo(_settings(), keep=keep, limit=limit)


@app.command()
def bench(
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="Run only this step (repeatable): quality, freshness, speed, "
                       "read_latency, sentiment, ...")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small versions of the steps.")
                     ] = False,
) -> None:
    """Run the benchmarks; write docs/results/ (results.md, PNGs, JSON) and the results
    block of docs/results.md. Needs a checkout (bench/) and, for the stream steps, a running
    stack."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "report.py").exists():
        _fail(RuntimeError(f"bench/ not found under {root}: run from a tastemaker checkout"))
    sys.path.insert(0, str(root))
    from bench.report import main as report

    _settings()  # a bad setting stops here, not in the middle of a step
    argv = [arg for step in only or [] for arg in ("--only", step)]
    raise typer.Exit(report([*argv, *(["--quick"] if quick else [])]))


if __name__ == "__main__":
    app()
