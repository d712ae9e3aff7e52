"""tbspark/platform/lenient_json.py against what the real Gson 2.13.2 (ThingsBoard 4.3.1.3's parser)
made of the same inputs, recorded in expected/gson_lenient.json by record_gson.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tbspark.platform import lenient_json, values

RECORDED = json.loads((Path(__file__).parent / "expected" / "gson_lenient.json").read_text(encoding="utf-8"))
CASES = RECORDED["cases"]


@pytest.mark.parametrize("case", [c for c in CASES if "parsed" in c], ids=lambda c: repr(c["input"])[:40])
def test_accepted_like_gson(case):
    # Gson prints numbers with their own spelling, so the strict platform parser types them the same way.
    assert lenient_json.loads(case["input"]) == values.loads(case["parsed"])


@pytest.mark.parametrize("case", [c for c in CASES if "error" in c], ids=lambda c: repr(c["input"])[:40])
def test_refused_like_gson_with_its_message(case):
    # ThingsBoard's HTTP device API answers a 500 whose body is this message (JsonSyntaxException's).
    with pytest.raises(ValueError) as err:
        lenient_json.loads(case["input"])
    assert str(err.value) == case["error"].removeprefix("JsonSyntaxException: ")


def test_number_spelling_survives_lenient_parsing():
    got = lenient_json.loads("{a:1e5,b:1.0,c:12345678901234567890,d:'33'}")
    assert got == {"a": 100000, "b": 1.0, "c": "12345678901234567890", "d": "33"}
    assert type(got["a"]) is int and type(got["b"]) is float
    assert values.typed(got["c"])[0] == values.STRING and values.typed(got["d"]) == (values.LONG, 33)


def test_platform_parser_falls_back_to_lenient_only_when_strict_fails():
    assert values.loads("{temperature: 21.5, 'ok': True}") == {"temperature": 21.5, "ok": True}
    with pytest.raises(ValueError):
        values.loads('{"a":1,}')


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(ValueError, match="nested too deeply"):
        lenient_json.loads("{a:" * 5000)
    with pytest.raises(ValueError, match="nested too deeply"):
        lenient_json.loads("[" * 5000)
