"""bench.report: a step is one entry; the report runs its script, keeps its summary and plots,
and rebuilds results.md and the results page's block from every step's summary.

This file is also the fake benchmark script the test runs (``python -m tests.unit.test_report
OUT``), as the report runs the real ``bench/`` scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import report
from bench.report import MARK_END, MARK_START, STEPS, Figures, Step, update_results_page

ROOT = Path(__file__).resolve().parents[2]


def _rows(summary: dict) -> list[tuple[str, str, str]]:
    return [("fake lift", f"{summary['lift']:.2f}x", "> 1")]


def _plot(summary: dict, figures: Figures) -> list[Path]:
    plt = report._pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, summary["lift"]])
    ax.set_xlabel("x")
    return [figures.save(fig, "fake.png")]


def _fake_step(output: Path) -> Step:
    return Step("fake", "A fake bench", "tests.unit.test_report", args=[str(output), "1.25"],
                quick_args=[str(output), "1.5"], output=str(output),
                summarise=lambda raw: {"lift": raw["lift"]}, rows=_rows, plots=_plot)


def test_a_step_added_to_the_list_is_run_summarised_plotted_and_reported(tmp_path: Path):
    step = _fake_step(tmp_path / "fake.json")
    results = tmp_path / "results"
    assert report.main(["--quick", "--results", str(results), "--no-page"],
                       steps=[step]) == 0
    record = json.loads((results / "fake.json").read_text())
    assert record["summary"] == {"lift": 1.5}
    assert record["quick"] is True
    assert record["command"].startswith("python -m tests.unit.test_report")
    assert (results / "fake.png").read_bytes()[:4] == b"\x89PNG"
    text = (results / "results.md").read_text()
    assert "| fake lift | 1.50x | > 1 |" in text
    assert "![A fake bench](fake.png)" in text
    assert record["machine"]["cores"] and record["machine"]["commit"]


def test_only_one_step_keeps_the_others_summaries(tmp_path: Path):
    first, second = _fake_step(tmp_path / "a.json"), _fake_step(tmp_path / "b.json")
    second = Step(**{**second.__dict__, "name": "other", "title": "Another"})
    results = tmp_path / "results"
    report.main(["--results", str(results), "--no-page"], steps=[first, second])
    report.main(["--only", "other", "--quick", "--results", str(results), "--no-page"],
                steps=[first, second])
    text = (results / "results.md").read_text()
    assert "| fake lift | 1.25x | > 1 |" in text and "| fake lift | 1.50x | > 1 |" in text


def test_a_failing_step_is_reported_and_the_exit_code_is_1(tmp_path: Path):
    broken = Step(**{**_fake_step(tmp_path / "x.json").__dict__, "args": ["/nonexistent/x", "1"]})
    assert report.main(["--results", str(tmp_path), "--no-page"], steps=[broken]) == 1


def test_the_block_between_the_markers_is_replaced(tmp_path: Path):
    page = tmp_path / "results.md"
    page.write_text(f"# x\n\n## Results\n{MARK_START}\nold\n{MARK_END}\nafter\n")
    assert update_results_page("| new |\n", page)
    assert page.read_text() == f"# x\n\n## Results\n{MARK_START}\n| new |\n{MARK_END}\nafter\n"
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not update_results_page("x", plain)
    assert plain.read_text() == "no markers\n"


def test_the_steps_are_the_bench_scripts_and_the_results_page_has_the_block():
    assert len({s.name for s in STEPS}) == len(STEPS)
    for step in STEPS:
        assert (ROOT / (step.module.replace(".", "/") + ".py")).exists(), step.module
    text = (ROOT / "docs" / "results.md").read_text()
    assert text.index(MARK_START) < text.index(MARK_END)


if __name__ == "__main__":  # the fake benchmark: write {"lift": float} to the given path
    Path(sys.argv[1]).write_text(json.dumps({"lift": float(sys.argv[2])}))
