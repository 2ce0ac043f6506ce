"""Worker and trainer processes started from Python: by the demo, the benchmarks and the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Self

from pydantic import SecretStr

from streams.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]


def settings_env(settings: Settings, **extra: object) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = dict(os.environ)
    for name, value in {**settings.model_dump(), **extra}.items():
        key = f"{ENV_PREFIX}{name.upper()}"
        if value is None:  # unset: the default (None), not the text "None"
            env.pop(key, None)
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[key] = str(value)
    return env


def cli_module(root: Path) -> str:
    """The CLI's module in the checkout at ``root``: ``streams.cli`` in a benchmark's baseline
    from before ``streams/`` was grouped into packages."""
    grouped = (root / "streams" / "tools" / "cli.py").exists()
    return "streams.tools.cli" if grouped else "streams.cli"


class ChildProcess:
    """A ``python -m streams.tools.cli ...`` command in a child process of its own (its own session,
    so that a signal reaches it and nothing else), stdout and stderr appended to ``log_path``."""

    args: tuple[str, ...] = ()

    def __init__(self, settings: Settings, log_path: Path, *,
                 env: Mapping[str, str] | None = None, root: Path = ROOT) -> None:
        self.settings = settings
        self.log_path = log_path
        self.env = dict(env or {})  # more environment variables (not settings: those are above)
        self.root = root  # the checkout whose code runs (a benchmark's baseline: another one)
        self.proc: subprocess.Popen | None = None

    def start(self) -> Self:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", cli_module(self.root), *self.args],
                cwd=self.root, env={**settings_env(self.settings), **self.env}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Send ``sig``, wait up to 30 s (then SIGKILL); return the exit code (None: never
        started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the process (SIGSTOP) for the block, then let it go on (SIGCONT): a test
        changes the world under it and looks at the result before the process can react."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class WorkerProcess(ChildProcess):
    """``tastemaker worker`` in a child process of its own."""

    args = ("worker", "--loglevel", "info")

    def __init__(self, settings: Settings, log_path: Path, *,
                 env: Mapping[str, str] | None = None, root: Path = ROOT) -> None:
        super().__init__(settings, log_path, env=env, root=root)
        self._readies = 0

    def start(self) -> WorkerProcess:
        self._readies = self._count_readies()
        return super().start()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._count_readies() > self._readies:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.tail()}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.tail()}")

    def _count_readies(self) -> int:
        if not self.log_path.exists():
            return 0
        return self.log_path.read_bytes().count(b"Worker ready")


class TrainerProcess(ChildProcess):
    """``tastemaker trainer`` (the periodic ranker trainer) in a child process of its own; on
    SIGTERM (`stop`) it closes its clients and exits with code 0."""

    args = ("trainer",)


def processed(settings: Settings) -> int:
    """Messages the workers have committed: the sum of the next offsets of every partition."""
    from streams.connections import redis_sync
    from streams.contract.keys import Keys

    with redis_sync(settings) as r:
        return sum(int(v) for v in r.hgetall(Keys(settings.key_prefix).offsets).values())


def is_settled(settings: Settings) -> bool:
    """Whether every event partition's users were settled at the last committed delta."""
    from streams.connections import redis_sync
    from streams.contract.keys import Keys

    keys = Keys(settings.key_prefix)
    fields = {f"{t}:{p}".encode() for t in settings.event_topics
              for p in range(settings.topic_partitions)}
    with redis_sync(settings) as r:
        last = r.xrevrange(keys.deltas, count=1)
        settled = r.hgetall(keys.settled)
    return bool(last) and all(settled.get(f) == last[0][0] for f in fields)


def rss_bytes(pid: int) -> tuple[int, int]:
    """``(current, peak)`` resident set size of a live process, from ``/proc/<pid>/status``
    (VmRSS, VmHWM: the kernel's own high-water mark, so no peak is missed between samples)."""
    fields = {}
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]
