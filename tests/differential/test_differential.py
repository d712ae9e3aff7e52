"""The same scripted exchanges against the embedded platform and ThingsBoard, compared field by field.

Without TB_URL: the embedded platform against the recorded transcripts of real ThingsBoard
(expected/*.json), so a regression fails CI. With TB_URL: against the live server as well (and
``TBSPARK_RECORD=1`` rewrites the recordings from it). How to run: docs/thingsboard.md, "Differential
suite". Known differences (known_differences.py) are the only ones allowed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from tests.differential.compare import render, split_known, transcript_diff
from tests.differential.exchanges import EXCHANGES, NEEDS_KAFKA
from tests.differential.harness import Target, Transcript, new_unique
from tests.differential.known_differences import KNOWN

EXPECTED = Path(__file__).parent / "expected"
RECORD = os.environ.get("TBSPARK_RECORD") == "1"
TB_VERSION = os.environ.get("TB_VERSION", "4.3.1.3")
RESULTS: dict[str, dict] = {}  # exchange → outcome, for the terminal summary (conftest)
_LIVE: dict[str, list] = {}
NAMES = [pytest.param(n, marks=pytest.mark.kafka) if n in NEEDS_KAFKA else n for n in sorted(EXCHANGES)]


def run(name: str, t: Target) -> list[dict]:
    tr = Transcript(new_unique())
    EXCHANGES[name](t, tr)
    return tr.steps


def recording(name: str) -> dict | None:
    path = EXPECTED / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def reference(name: str, live: Target | None) -> list[dict]:
    """What ThingsBoard answers: the live server when there is one, else the last recording."""
    if live is not None:
        if name not in _LIVE:
            _LIVE[name] = run(name, live)
            if RECORD:
                EXPECTED.mkdir(exist_ok=True)
                (EXPECTED / f"{name}.json").write_text(json.dumps({
                    "recorded_from": f"ThingsBoard CE {TB_VERSION}",
                    "recorded_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "transcript": _LIVE[name]}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return _LIVE[name]
    rec = recording(name)
    if rec is None:
        pytest.skip(f"no recording of {name} from real ThingsBoard: run with TB_URL and TBSPARK_RECORD=1")
    return rec["transcript"]


@pytest.mark.parametrize("name", NAMES)
def test_embedded_platform_answers_as_thingsboard(name, embedded, live, request):
    if name in NEEDS_KAFKA:  # the session's broker, which the live server reaches on loopback too
        bootstrap = request.getfixturevalue("kafka").bootstrap
        for t in (embedded, live):
            if t is not None:
                t.kafka_bootstrap = bootstrap
    expected = reference(name, live)
    got = run(name, embedded)
    diffs = transcript_diff(expected, got)
    left, used = split_known(diffs, name, KNOWN)
    stale = [k for i, k in enumerate(KNOWN) if k.exchange == name and i not in used]
    RESULTS[name] = {"differences": len(left), "known": len(diffs) - len(left), "stale": len(stale),
                     "against": "live" if live else "recording", "first": left[0][0] if left else None}
    assert not left, f"{name}: {len(left)} undocumented difference(s) from ThingsBoard\n{render(left)}"
    assert not stale, f"{name}: known differences that no longer occur (remove them): {stale}"


@pytest.mark.realtb
@pytest.mark.parametrize("name", NAMES)
def test_thingsboard_answers_as_recorded(name, live, request):
    """The live ThingsBoard against its own recording: catches a recording gone stale (another
    version) or an exchange whose normalisation lets run-to-run noise through."""
    if live is None:
        pytest.skip("TB_URL is not set: no real ThingsBoard to compare with its recording")
    if name in NEEDS_KAFKA:
        live.kafka_bootstrap = request.getfixturevalue("kafka").bootstrap
    rec = recording(name)
    if rec is None or RECORD:
        pytest.skip("recording now" if RECORD else f"no recording of {name} yet")
    diffs = transcript_diff(rec["transcript"], reference(name, live))
    assert not diffs, f"{name}: ThingsBoard no longer answers as recorded\n{render(diffs)}"
