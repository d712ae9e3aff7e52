"""The suite's own machinery: the comparison, the known-differences filter, and the docs table that
mirrors the list."""

from __future__ import annotations

import re
from pathlib import Path

from tests.differential.compare import diff, split_known
from tests.differential.harness import normalise
from tests.differential.known_differences import KNOWN, Known

DOC = Path(__file__).resolve().parents[2] / "docs" / "thingsboard.md"


def test_diff_sees_status_types_missing_fields_and_lengths():
    expected = {"s": {"status": 500, "body": {"errorCode": 46, "v": 1.0, "data": [1, 2]}}}
    actual = {"s": {"status": 400, "body": {"v": 1, "data": [1], "extra": True}}}
    assert diff(expected, actual) == [
        ("s/body/data/<length>", 2, 1), ("s/body/errorCode", 46, "<absent>"), ("s/body/extra", "<absent>", True),
        ("s/body/v", 1.0, 1), ("s/status", 500, 400)]
    assert diff({"a": True}, {"a": 1}) == [("a", True, 1)]  # a boolean is not a number
    assert diff({"a": [{"k": "x"}]}, {"a": [{"k": "x"}]}) == []


def test_known_differences_explain_only_their_paths():
    known = [Known("ex", "step/body/message", "why", "who")]
    diffs = [("step/body/message", "a", "b"), ("step/status", 500, 400)]
    left, used = split_known(diffs, "ex", known)
    assert left == [("step/status", 500, 400)] and used == {0}
    assert split_known(diffs, "other", known) == (diffs, set())


def test_normalisation_hides_only_what_differs_run_to_run():
    import time

    now = int(time.time() * 1000)
    got = normalise({"id": "0b2f6a1e-1111-2222-3333-444455556666", "customerId": "13814000-1dd2-11b2-8080-808080808080",
                     "createdTime": now, "ts": 1_700_000_000_000, "name": "tbdiff-abc123-dev", "n": 5,
                     "token": "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJ4In0.c2ln", "pair": ("x", now)}, "abc123")
    assert got == {"id": "<uuid>", "customerId": "<nil-uuid>", "createdTime": "<now>", "ts": 1_700_000_000_000,
                   "name": "tbdiff-<u>-dev", "n": 5, "token": "<jwt>", "pair": ["x", "<now>"]}


def test_docs_table_mirrors_the_known_differences():
    section = DOC.read_text(encoding="utf-8").split("## Differential suite", 1)[1]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", section, flags=re.M)
    assert sorted(rows) == sorted((k.exchange, k.path) for k in KNOWN)
