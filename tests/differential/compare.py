"""Field-by-field comparison of two normalised transcripts, and the known differences filter."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any


def diff(expected: Any, actual: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every place the two JSON values differ: ``(path, expected, actual)``; a missing key shows as
    ``<absent>``. Paths are ``step-name/field/sub/0``: what known differences match on."""
    out: list[tuple[str, Any, Any]] = []
    if isinstance(expected, dict) and isinstance(actual, dict):
        for k in expected.keys() | actual.keys():
            sub = f"{path}/{k}" if path else str(k)
            out += diff(expected.get(k, "<absent>"), actual.get(k, "<absent>"), sub)
    elif isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            out.append((f"{path}/<length>", len(expected), len(actual)))
        for i, (e, a) in enumerate(zip(expected, actual)):
            out += diff(e, a, f"{path}/{i}")
    elif type(expected) is not type(actual) or expected != actual:
        out.append((path, expected, actual))
    return sorted(out, key=lambda d: d[0])


def by_step(transcript: list[dict]) -> dict[str, dict]:
    """Steps keyed by name (names are unique within an exchange)."""
    return {s["step"]: {k: v for k, v in s.items() if k != "step"} for s in transcript}


def transcript_diff(expected: list[dict], actual: list[dict]) -> list[tuple[str, Any, Any]]:
    return diff(by_step(expected), by_step(actual))


def split_known(diffs: list[tuple[str, Any, Any]], exchange: str, known: list) -> tuple[list, set[int]]:
    """(differences no known entry explains, indexes of the known entries that explained one)."""
    left, used = [], set()
    for d in diffs:
        hit = next((i for i, k in enumerate(known)
                    if fnmatchcase(exchange, k.exchange) and fnmatchcase(d[0], k.path)), None)
        if hit is None:
            left.append(d)
        else:
            used.add(hit)
    return left, used


def render(diffs: list[tuple[str, Any, Any]]) -> str:
    return "\n".join(f"  {p}: ThingsBoard {e!r} / here {a!r}" for p, e, a in diffs)
