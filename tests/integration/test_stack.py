"""The local stack through the CLI: idempotent up, status, a busy port named, down, up again.

Each test runs its own stack (own stack_dir, own free ports), so the session's services stay
untouched.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.settings import load_settings
from streams.tools.cli import app
from streams.tools.stack import LocalStack, StackError, free_port
from tests.conftest import services_unavailable

pytestmark = pytest.mark.integration

runner = CliRunner()


def _require_local_stack() -> None:
    missing = [p for p in ("java", "redis-server") if shutil.which(p) is None]
    jars_cached = (LocalStack(load_settings()).kafka.jars_dir / "libs.complete").exists()
    if not jars_cached and shutil.which("mvn") is None:
        missing.append("mvn")
    if missing:
        services_unavailable(f"the local stack needs {', '.join(missing)} on PATH")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def stack_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Environment for a throwaway stack; whatever a test leaves running is stopped."""
    _require_local_stack()
    env = {
        "TASTEMAKER_STACK_DIR": str(tmp_path / "stack"),
        "TASTEMAKER_KAFKA_PORT": str(free_port()),
        "TASTEMAKER_KAFKA_CONTROLLER_PORT": str(free_port()),
        "TASTEMAKER_REDIS_PORT": str(free_port()),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        yield env
    finally:
        LocalStack(load_settings()).down(wipe=True)


def test_up_is_idempotent_and_down_stops_what_up_started(stack_env: dict[str, str]) -> None:
    kafka_port = int(stack_env["TASTEMAKER_KAFKA_PORT"])
    redis_port = int(stack_env["TASTEMAKER_REDIS_PORT"])

    first = runner.invoke(app, ["up"])
    assert first.exit_code == 0, first.output
    assert "kafka: started" in first.stderr and "redis: started" in first.stderr
    assert first.stdout.splitlines() == [
        f"export TASTEMAKER_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{kafka_port}",
        f"export TASTEMAKER_REDIS_URL=redis://127.0.0.1:{redis_port}/0",
    ]

    second = runner.invoke(app, ["up"])
    assert second.exit_code == 0, second.output
    assert "kafka: already running" in second.stderr
    assert "redis: already running" in second.stderr
    assert second.stdout == first.stdout

    running = runner.invoke(app, ["status"]).stdout.splitlines()
    assert [line.split()[:2] for line in running] == [["kafka", "running"], ["redis", "running"]]
    assert running[0].endswith(f"127.0.0.1:{kafka_port}")
    assert running[1].endswith(f"127.0.0.1:{redis_port}")

    down = runner.invoke(app, ["down"])
    assert down.exit_code == 0, down.output
    assert "redis: stopped" in down.stdout and "kafka: stopped" in down.stdout
    stopped = runner.invoke(app, ["status"]).stdout.splitlines()
    assert [line.split()[:2] for line in stopped] == [["kafka", "stopped"], ["redis", "stopped"]]
    assert not _listening(kafka_port) and not _listening(redis_port)
    assert "not running" in runner.invoke(app, ["down"]).stdout

    again = runner.invoke(app, ["up"])
    assert again.exit_code == 0, again.output
    assert "kafka: started" in again.stderr and "redis: started" in again.stderr

    wiped = runner.invoke(app, ["down", "--wipe"])
    assert wiped.exit_code == 0, wiped.output
    assert not Path(stack_env["TASTEMAKER_STACK_DIR"]).exists()


def test_busy_port_is_named_and_nothing_is_started(stack_env: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]

        result = runner.invoke(app, ["up"], env={"TASTEMAKER_KAFKA_PORT": str(busy)})
        assert result.exit_code == 1
        assert f"port {busy} (TASTEMAKER_KAFKA_PORT) is already in use" in result.stderr
        assert "Traceback" not in result.output

        # Redis would have been free: up checks every port before starting anything.
        status = runner.invoke(app, ["status"], env={"TASTEMAKER_KAFKA_PORT": str(busy)})
        assert [line.split()[1] for line in status.stdout.splitlines()] == ["stopped"] * 2

        settings = load_settings(redis_port=busy)
        with pytest.raises(StackError, match=f"port {busy} \\(TASTEMAKER_REDIS_PORT\\)"):
            LocalStack(settings).redis.start()
