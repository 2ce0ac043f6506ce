"""The README's two commands are the ones CI and users run; its links, and docs/'s, resolve."""

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


# --- the README and docs/ stay true -------------------------------------------------------------
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(page: Path) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", page.read_text())


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", prose(page), re.M)}


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move the depth to docs/"
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in "\n".join(lines), f"README.md does not link {page.name}"


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(prose(page)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_the_commands_the_pages_name_exist():
    import importlib.util

    import typer

    from streams.tools.cli import app

    commands = set(typer.main.get_command(app).commands)
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```(?:bash|console)\n(.*?)```", readme, re.S):
        for name in re.findall(r"tastemaker ([a-z][\w-]*)", block):
            assert name in commands, f"README.md runs `tastemaker {name}`, no such command"
    for page in PAGES:
        for module in set(re.findall(r"python -m ([\w.]+)", page.read_text())):
            if module in ("pytest", "pip", "venv"):
                continue
            assert importlib.util.find_spec(module), f"{page.name}: python -m {module}"


def test_the_readme_python_example_compiles():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec")
