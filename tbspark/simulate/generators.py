"""Telemetry value generators of a scenario (uniform, normal, constant, sine + noise), seeded
per device so that a run with ``--seed`` is reproducible, and the per-device message plan
(keys with the same rate travel in one message)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass
from typing import Any, Callable

from tbspark.errors import ScenarioError

ValueFn = Callable[[float], Any]  # elapsed seconds → value as it goes on the wire
RENDER_CACHE = 4096  # rendered message bodies kept per stream (single-key numeric streams)


def device_rng(seed: int | None, device_name: str) -> random.Random:
    """One RNG per device. With a seed, str seeding (sha512 of the text) makes it independent of
    PYTHONHASHSEED and of the order devices are created in."""
    if seed is None:
        return random.Random()
    return random.Random(f"{seed}:{device_name}")


def device_seed(seed: int | None, device_name: str) -> int:
    """64 bits per device for the C hot path's generators: from the seed and the device's name
    (reproducible), or random without a seed."""
    if seed is None:
        return int.from_bytes(os.urandom(8), "little")
    return int.from_bytes(hashlib.sha256(f"{seed}:{device_name}".encode()).digest()[:8], "little")


def _g(gen: Any, name: str, default: Any = None) -> Any:
    value = getattr(gen, name, default)
    return default if value is None else value


def make_value_fn(gen: Any, rng: random.Random) -> ValueFn:
    """A function of elapsed time returning the next value, already rounded and, for
    ``send_as: string``, rendered as text like the tutorial's ``{"windSpeed":"33"}``."""
    kind = gen.kind
    decimals = _g(gen, "decimals")

    def rounded(x: float) -> float:
        return round(x, decimals) if decimals is not None else x

    # draw(n): the next n values at once, the very numbers n calls would give (same rng calls).
    draw: Callable[[int], list] | None = None
    if kind == "uniform_int":
        lo, hi = int(gen.min), int(gen.max)
        raw: ValueFn = lambda t: rng.randint(lo, hi)  # noqa: E731
        if hi >= lo and getattr(getattr(rng, "_randbelow", None), "__func__", None) is \
                random.Random._randbelow_with_getrandbits:
            draw = _int_drawer(rng, lo, hi)
    elif kind == "uniform_float":
        lo_f, hi_f = float(gen.min), float(gen.max)
        raw = lambda t: rounded(rng.uniform(lo_f, hi_f))  # noqa: E731
        uni = rng.uniform
        draw = ((lambda n: [round(uni(lo_f, hi_f), decimals) for _ in range(n)])  # noqa: E731
                if decimals is not None else (lambda n: [uni(lo_f, hi_f) for _ in range(n)]))
    elif kind == "normal":
        mean, sd = float(gen.mean), float(gen.stddev)
        # min and max clip the draw (before rounding); unset, they do not bound it.
        c_lo = float(_g(gen, "min", -math.inf))
        c_hi = float(_g(gen, "max", math.inf))
        gauss = rng.gauss

        def clipped() -> float:
            x = gauss(mean, sd)
            return c_lo if x < c_lo else c_hi if x > c_hi else x
        raw = lambda t: rounded(clipped())  # noqa: E731
        draw = ((lambda n: [round(clipped(), decimals) for _ in range(n)])  # noqa: E731
                if decimals is not None else (lambda n: [clipped() for _ in range(n)]))
    elif kind == "constant":
        const = gen.value
        raw = lambda t: const  # noqa: E731
    elif kind == "sine":
        mean = float(_g(gen, "mean", 0.0))
        amp = float(_g(gen, "amplitude", 1.0))
        period = float(_g(gen, "period_s", 60.0))
        noise = float(_g(gen, "noise", 0.0))
        raw = lambda t: rounded(mean + amp * math.sin(2 * math.pi * t / period)  # noqa: E731
                                + (rng.gauss(0.0, noise) if noise else 0.0))
    else:
        raise ScenarioError(f"unknown generator kind {kind!r}",
                            hint="use uniform_int, uniform_float, normal, constant or sine")
    as_string = _g(gen, "send_as", "number") == "string"
    fn = (lambda t: str(raw(t))) if as_string else raw
    # Only a sine depends on the time it is asked at; the others can be drawn ahead in blocks.
    fn.timed = kind == "sine"  # type: ignore[attr-defined]
    fn.draw = draw  # type: ignore[attr-defined]  # numbers (before send_as), or None
    fn.as_string = as_string  # type: ignore[attr-defined]
    # What the C hot path (native.py) needs to draw the same kind of values itself.
    fn.kind = kind  # type: ignore[attr-defined]
    fn.bounds = (int(gen.min), int(gen.max)) if kind == "uniform_int" else None  # type: ignore[attr-defined]
    fn.params = ((float(gen.mean), float(gen.stddev), c_lo, c_hi) if kind == "normal"  # type: ignore[attr-defined]
                 else (float(gen.min), float(gen.max)) if kind == "uniform_float" else None)
    fn.decimals = decimals  # type: ignore[attr-defined]
    return fn


def _int_drawer(rng: random.Random, lo: int, hi: int) -> Callable[[int], list]:
    """randint(lo, hi) n times over, inlined: CPython's randint is lo + _randbelow(span), which
    draws getrandbits(span.bit_length()) until the result is below span — the same calls here,
    so the values are exactly those of randint."""
    span = hi - lo + 1
    k = span.bit_length()
    bits = rng.getrandbits

    def draw(n: int) -> list:
        out: list[int] = []
        append = out.append
        while n:
            r = bits(k)
            if r < span:
                append(lo + r)
                n -= 1
        return out
    return draw


def numeric(value: Any) -> float | None:
    """The number the platform stores for a sent value (strings that parse as numbers become
    numbers, §5.5), or None when it is not numeric."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return float(value) if "." in value else int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class MessageStream:
    """The keys of one device that share a rate: one MQTT message every ``period_s``."""

    rate_hz: float
    keys: list[str]
    fns: list[ValueFn]

    def __post_init__(self) -> None:
        # Plain attributes, read on every message: the period, and '"key":' per key ready to
        # prepend to a JSON value.
        self.period = 1.0 / self.rate_hz
        self.prefixes = [json.dumps(k) + ":" for k in self.keys]
        self._rendered: dict[str, dict] = {}  # per message end: value -> rendered body
        self.timed = any(getattr(fn, "timed", True) for fn in self.fns)

    def add(self, key: str, fn: ValueFn) -> None:
        self.keys.append(key)
        self.fns.append(fn)
        self.prefixes.append(json.dumps(key) + ":")
        self.timed = self.timed or getattr(fn, "timed", True)

    def bodies(self, n: int, elapsed_s: float, value_pos: int,
               end: str = "") -> tuple[list[bytes], list]:
        """The next ``n`` messages of this stream, drawn in order from the generators: each
        message's JSON members (``"k":v,...`` followed by ``end``, as bytes) and its numeric
        value of key ``value_pos`` (None when the key is not in the stream or not numeric)."""
        fns, prefixes = self.fns, self.prefixes
        out: list[bytes] = []
        nums: list = []
        if len(fns) == 1:
            fn, prefix = fns[0], prefixes[0]
            draw = getattr(fn, "draw", None)
            if draw is not None:
                # Numbers only: the number is what the platform stores, as text or not. Their
                # renderings repeat (integers in a range, few decimals): kept per value.
                nums = draw(n)
                cache = self._rendered.get(end)
                if cache is None:
                    cache = self._rendered[end] = {}
                quote = '"' if fn.as_string else ""
                get = cache.get
                for v in nums:
                    body = get(v)
                    if body is None:
                        body = f"{prefix}{quote}{v!r}{quote}{end}".encode()
                        if len(cache) < RENDER_CACHE:
                            cache[v] = body
                    out.append(body)
                return out, (nums if value_pos == 0 else [None] * n)
            for _ in range(n):
                v = fn(elapsed_s)
                out.append(f"{prefix}{json_value(v)}{end}".encode())
                nums.append(numeric(v) if value_pos == 0 else None)
            return out, nums
        for _ in range(n):
            vals = [fn(elapsed_s) for fn in fns]
            out.append((",".join(p + json_value(v) for p, v in zip(prefixes, vals)) + end).encode())
            nums.append(numeric(vals[value_pos]) if value_pos >= 0 else None)
        return out, nums

    @property
    def period_s(self) -> float:
        return self.period

    def values(self, elapsed_s: float) -> dict[str, Any]:
        return {k: fn(elapsed_s) for k, fn in zip(self.keys, self.fns)}


def json_value(v: Any) -> str:
    # Generators only produce numbers or numbers rendered as text, so no escaping is needed.
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def message_streams(telemetry: dict[str, Any], rng: random.Random) -> list[MessageStream]:
    """Group a device's generators by rate (keys with equal rate_hz travel in one message)."""
    by_rate: dict[float, MessageStream] = {}
    for key, gen in telemetry.items():
        rate = float(gen.rate_hz)
        stream = by_rate.get(rate)
        if stream is None:
            stream = by_rate[rate] = MessageStream(rate, [], [])
        stream.add(key, make_value_fn(gen, rng))
    return list(by_rate.values())
