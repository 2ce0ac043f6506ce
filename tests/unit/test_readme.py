"""The README's two commands are the ones CI and users run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md must open with a bash block of two commands"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_demo_and_the_test_command():
    demo, tests = readme_commands()
    assert demo.endswith("tastemaker demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_word_for_word():
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = re.search(r'^TEST_CMD="(.*)"$', ci, re.M)
    assert test_cmd, ".ci/run must define TEST_CMD"
    assert shlex.split(test_cmd.group(1)) == shlex.split(readme_commands()[1])
