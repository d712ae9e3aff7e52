"""Telemetry value generators of a scenario (uniform, normal, constant, sine + noise), seeded
per device so that a run with ``--seed`` is reproducible, and the per-device message plan
(keys with the same rate travel in one message)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any, Callable

from tbspark.errors import ScenarioError

ValueFn = Callable[[float], Any]  # elapsed seconds → value as it goes on the wire


def device_rng(seed: int | None, device_name: str) -> random.Random:
    """One RNG per device. With a seed, str seeding (sha512 of the text) makes it independent of
    PYTHONHASHSEED and of the order devices are created in."""
    if seed is None:
        return random.Random()
    return random.Random(f"{seed}:{device_name}")


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

    if kind == "uniform_int":
        lo, hi = int(gen.min), int(gen.max)
        raw: ValueFn = lambda t: rng.randint(lo, hi)  # noqa: E731
    elif kind == "uniform_float":
        lo_f, hi_f = float(gen.min), float(gen.max)
        raw = lambda t: rounded(rng.uniform(lo_f, hi_f))  # noqa: E731
    elif kind == "normal":
        mean, sd = float(gen.mean), float(gen.stddev)
        raw = lambda t: rounded(rng.gauss(mean, sd))  # noqa: E731
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
    if _g(gen, "send_as", "number") == "string":
        return lambda t: str(raw(t))
    return raw


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

    def add(self, key: str, fn: ValueFn) -> None:
        self.keys.append(key)
        self.fns.append(fn)
        self.prefixes.append(json.dumps(key) + ":")

    @property
    def period_s(self) -> float:
        return self.period

    def values(self, elapsed_s: float) -> dict[str, Any]:
        return {k: fn(elapsed_s) for k, fn in zip(self.keys, self.fns)}


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
