"""docs/benchmarks.md opens with the summary a reader looks for: one table of the figures of record,
each with its reference, ratio, date and the command that measures it — a command that exists."""

from __future__ import annotations

import re

from tbspark.settings import REPO_ROOT

DOC = REPO_ROOT / "docs" / "benchmarks.md"


def summary_rows() -> tuple[list[str], list[list[str]]]:
    text = DOC.read_text()
    section = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    table = [ln for ln in section.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in table]
    return cells[0], cells[2:]


def test_the_summary_is_the_first_section_and_has_the_promised_columns():
    headings = [ln for ln in DOC.read_text().splitlines() if ln.startswith("## ")]
    assert headings[0] == "## Summary"
    header, rows = summary_rows()
    assert header == ["Figure", "Value", "Reference", "Ratio", "Date (UTC)", "Command"]
    assert len(rows) >= 10


def test_every_summary_row_is_dated_and_names_a_bench_script_that_exists():
    _, rows = summary_rows()
    for figure, value, _ref, _ratio, date, command in rows:
        assert value and re.fullmatch(r"\d{4}-\d{2}-\d{2}", date), figure
        if command == "same":
            continue
        script = re.search(r"bench/[\w_]+\.py", command)
        assert script and (REPO_ROOT / script.group(0)).exists(), (figure, command)


def test_every_summary_value_is_recorded_in_the_history_below():
    """The summary restates figures; the sections below must still hold each one."""
    _, rows = summary_rows()
    history = DOC.read_text().split("## Contents", 1)[1]
    for figure, value, *_ in rows:
        number = re.search(r"\d[\d,.]*", value).group(0).rstrip(".,")
        assert number in history, (figure, number)
