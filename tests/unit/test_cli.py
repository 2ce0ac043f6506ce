"""The CLI layer: fast help, settings errors as exit 2 without a traceback, status offline."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from streams.tools.cli import app

runner = CliRunner()


def test_help_lists_the_stack_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "down", "status"):
        assert command in result.stdout


def test_bad_setting_exits_2_naming_the_variable() -> None:
    result = runner.invoke(app, ["status"], env={"TASTEMAKER_KAFKA_PORT": "0"})
    assert result.exit_code == 2
    assert "TASTEMAKER_KAFKA_PORT" in result.stderr
    assert "Traceback" not in result.output


def test_status_of_a_stack_never_started(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["status"],
        env={"TASTEMAKER_STACK_DIR": str(tmp_path), "TASTEMAKER_REDIS_PORT": "6390"},
    )
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["kafka", "stopped"], ["redis", "stopped"]]
    assert lines[1].endswith("127.0.0.1:6390")
