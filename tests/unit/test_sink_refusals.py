"""The REST sink when ThingsBoard refuses one zone for good (a 4xx for its asset or its telemetry):
the other zones are written, the refused zone's points come back as a ``ZonesRefused`` with the
answer, ``write_until_done`` hands them to the dead letters and counts the rest; an answer that is
not about the zone (down, 5xx, 429, 401) still retries the whole batch as before."""

from __future__ import annotations

import json
import threading

import pytest

from tbspark.aggregate.sinks import RestSink, ZonesRefused, refusal_letters, write_until_done
from tbspark.aggregate.windows import WindowAgg, ZoneWindow
from tbspark.errors import TbApiError, TbAuthError, TbUnavailableError
from tbspark.settings import Connection

KEYS = {"avg": "windSpeed", "count": "windSpeedCount", "min": "windSpeedMin", "max": "windSpeedMax"}


class FakeClient:
    """Stands in for TbRestClient: ``refuse`` maps a zone to the error its asset lookup (``"asset"``)
    or its telemetry (``"telemetry"``) gets, as (where, exception, times; None = always)."""

    def __init__(self, refuse: dict | None = None):
        self.refuse = refuse or {}
        self.saved: dict[str, list] = {}
        self.lock = threading.Lock()

    def _maybe_fail(self, zone: str, where: str) -> None:
        rule = self.refuse.get(zone)
        if rule and rule[0] == where and (rule[2] is None or rule[2] > 0):
            if rule[2] is not None:
                self.refuse[zone] = (rule[0], rule[1], rule[2] - 1)
            raise rule[1]

    def get_or_create_asset(self, name: str, type: str) -> dict:
        self._maybe_fail(name, "asset")
        return {"id": {"id": f"id-{name}"}}

    def save_telemetry(self, entity_type: str, entity_id: str, payload: list) -> None:
        zone = entity_id.removeprefix("id-")
        self._maybe_fail(zone, "telemetry")
        with self.lock:
            self.saved.setdefault(zone, []).extend(payload)

    def close(self) -> None:
        pass


def _windows(zones: list[str]) -> list[ZoneWindow]:
    return [ZoneWindow(z, start, WindowAgg(2, 10.0 + k, 4.0, 6.0 + k))
            for k, z in enumerate(zones) for start in (0, 10_000)]


def _sink(client: FakeClient) -> RestSink:
    return RestSink(Connection(), "WeatherStation", KEYS, client=client)


MALFORMED = TbApiError(400, "Validation error: name is malformed", 31, "POST", "/api/asset")
TOO_LARGE = TbApiError(413, "Payload Too Large", None, "POST", "/api/plugins/telemetry/ASSET/x/timeseries/ANY")


@pytest.mark.parametrize("n_zones", [2, 6])  # the sequential path (<= 2 zones) and the thread pool
def test_a_refused_zone_does_not_hold_back_the_others(n_zones: int) -> None:
    zones = [f"Zone {k}" for k in range(n_zones - 1)] + ["{{bad}}"]
    client = FakeClient({"{{bad}}": ("asset", MALFORMED, None)})
    sink = _sink(client)
    with pytest.raises(ZonesRefused) as info:
        sink.write(_windows(zones))
    assert set(client.saved) == set(zones[:-1])
    assert all(len(points) == 2 for points in client.saved.values())
    assert info.value.written == 2 * (n_zones - 1)
    (refusal,) = info.value.refused
    assert refusal.zone == "{{bad}}"
    assert refusal.reason == "sink refused: HTTP 400: Validation error: name is malformed"
    assert [p["ts"] for p in refusal.points] == [0, 10_000]
    sink.close()


def test_write_until_done_dead_letters_refusals_and_counts_the_rest() -> None:
    zones = ["Zone A", "Zone B", "Zone C"]
    client = FakeClient({"Zone B": ("telemetry", TOO_LARGE, None)})
    letters: list = []
    written = write_until_done(_sink(client), _windows(zones), lambda: False, on_refused=letters.extend)
    assert written == 4
    assert set(client.saved) == {"Zone A", "Zone C"}
    assert [r.zone for r in letters] == ["Zone B"]
    with pytest.raises(ZonesRefused):  # no one to hand the refusals to: the batch fails, as before
        write_until_done(_sink(client), _windows(zones), lambda: False)


@pytest.mark.parametrize("error", [
    TbUnavailableError("connection refused", "retrying"),
    TbApiError(503, "Service Unavailable"),
    TbApiError(429, "Too Many Requests"),
], ids=["down", "503", "429"])
def test_transient_failures_still_retry_the_whole_batch(error: Exception) -> None:
    """One zone failing transiently while another is refused: the batch is retried (nothing is
    dead-lettered on a maybe), then the refusal stands and everything else is written."""
    zones = ["Zone A", "Zone B", "{{bad}}"]
    client = FakeClient({"Zone B": ("telemetry", error, 2), "{{bad}}": ("asset", MALFORMED, None)})
    retries: list = []
    letters: list = []
    written = write_until_done(_sink(client), _windows(zones), lambda: False,
                               on_retry=lambda exc, delay: retries.append(exc), on_refused=letters.extend)
    assert retries == [error, error]
    assert written == 4 and set(client.saved) == {"Zone A", "Zone B"}
    assert [r.zone for r in letters] == ["{{bad}}"]


def test_an_auth_error_is_not_a_refusal_of_one_zone() -> None:
    client = FakeClient({"Zone A": ("telemetry", TbAuthError(401, "Authentication failed"), None)})
    with pytest.raises(TbAuthError):
        write_until_done(_sink(client), _windows(["Zone A", "Zone B"]), lambda: False,
                         on_refused=lambda r: pytest.fail("an auth error was dead-lettered"))


def test_refusal_letters_carry_the_reason_zone_and_points() -> None:
    client = FakeClient({"{{bad}}": ("asset", MALFORMED, None)})
    with pytest.raises(ZonesRefused) as info:
        _sink(client).write(_windows(["{{bad}}"]))
    letters = refusal_letters(info.value.refused)
    assert [k for k, _ in letters] == [b"{{bad}}", b"{{bad}}"]
    assert [json.loads(v) for _, v in letters] == [
        {"reason": "sink refused: HTTP 400: Validation error: name is malformed", "zone": "{{bad}}",
         "ts": start, "values": {"windSpeed": 5.0, "windSpeedCount": 2, "windSpeedMin": 4,
                                 "windSpeedMax": 6}} for start in (0, 10_000)]
