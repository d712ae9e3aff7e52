"""Where the job's windows go: zone assets over REST, or virtual devices of one MQTT gateway session.
Both write each point at ts = window start, so a replayed batch overwrites instead of duplicating,
and both retry with backoff while ThingsBoard is down, until written or until a stop is requested.
A zone ThingsBoard refuses for good (a 4xx for its asset or its telemetry) does not hold the others
back: its windows become dead letters with the answer as the reason (``ZonesRefused``)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Protocol

from tbspark.aggregate.windows import ZoneWindow, to_points
from tbspark.errors import (
    MqttError,
    StateError,
    TbApiError,
    TbAuthError,
    TbNotFoundError,
    TbUnavailableError,
)
from tbspark.mqtt.topics import GATEWAY_CONNECT_TOPIC, GATEWAY_TELEMETRY_TOPIC
from tbspark.settings import Connection

MAX_BACKOFF_S = 5.0


class StopRequested(Exception):
    """Raised inside a batch when a stop was asked for before the batch could be written: the batch
    is then not committed, and a restart replays it."""


@dataclass(frozen=True)
class Refusal:
    """A zone's points (one per window: ts = window start, values) ThingsBoard refused for good,
    and its answer."""

    zone: str
    points: tuple[dict, ...]
    reason: str


class ZonesRefused(Exception):
    """Raised by a sink's ``write`` when every zone was written except these, which ThingsBoard
    refused for good: not retried (the same request gets the same answer), but dead-lettered."""

    def __init__(self, written: int, refused: list[Refusal]):
        super().__init__(f"{len(refused)} zone(s) refused: " + "; ".join(r.reason for r in refused[:3]))
        self.written = written
        self.refused = refused


class Sink(Protocol):
    def write(self, windows: list[ZoneWindow]) -> int: ...  # points written; raises to retry
    def close(self) -> None: ...


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, (TbUnavailableError, MqttError, OSError)):
        return True
    return isinstance(exc, TbApiError) and not isinstance(exc, TbAuthError) and (
        exc.status >= 500 or exc.status == 429)


def _permanent(exc: Exception) -> bool:
    """A refusal of this zone's request itself (4xx), not of every request (auth, rate limit)."""
    return (isinstance(exc, TbApiError) and 400 <= exc.status < 500
            and not isinstance(exc, (TbAuthError, TbNotFoundError)) and exc.status not in (408, 429))


def write_until_done(sink: Sink, windows: list[ZoneWindow], should_stop: Callable[[], bool],
                     on_retry: Callable[[Exception, float], None] | None = None,
                     on_refused: Callable[[list[Refusal]], None] | None = None) -> int:
    """Write the batch, retrying (backoff 0.5 s doubling to 5 s) while ThingsBoard is unreachable.
    Never gives up on its own — dropping a batch would lose windows; only a stop request ends it.
    Zones refused for good go to ``on_refused`` (which must store them before returning: the batch
    is committed after this) and the others count as written; without ``on_refused`` a refusal
    fails the batch."""
    delay = 0.5
    while True:
        try:
            return sink.write(windows)
        except ZonesRefused as exc:
            if on_refused is None:
                raise
            on_refused(exc.refused)
            return exc.written
        except Exception as exc:  # noqa: BLE001 - classified just below
            if not _retryable(exc):
                raise
            if on_retry:
                on_retry(exc, delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if should_stop():
                    raise StopRequested() from exc
                time.sleep(0.1)
            delay = min(delay * 2, MAX_BACKOFF_S)


class RestSink:
    """One asset per zone (type ``asset_type``), found or created by name and cached; telemetry via
    POST /api/plugins/telemetry/ASSET/{id}/timeseries/ANY."""

    def __init__(self, conn: Connection, asset_type: str, keys: dict[str, str], *,
                 client: object | None = None, parallel: int = 8):
        from tbspark.thingsboard.rest import TbRestClient

        # Few quick retries in the client; the long wait for a platform that is down is ours, so it
        # can notice a stop request.
        self.client = client or TbRestClient(conn.tb_url, conn.username, conn.password,
                                             retries=2, backoff_s=0.2, timeout_s=10)
        self.asset_type = asset_type
        self.keys = keys
        self.parallel = parallel
        self.asset_ids: dict[str, str] = {}
        # One pool for the sink's life (not one per batch: 8 thread starts and joins every trigger).
        self._pool: ThreadPoolExecutor | None = None

    def _asset_id(self, zone: str) -> str:
        if zone not in self.asset_ids:
            asset = self.client.get_or_create_asset(zone, self.asset_type)
            self.asset_ids[zone] = asset["id"]["id"]
        return self.asset_ids[zone]

    def _write_zone(self, zone: str, points: list[dict]) -> int:
        try:
            self.client.save_telemetry("ASSET", self._asset_id(zone), points)
        except TbNotFoundError:
            self.asset_ids.pop(zone, None)  # deleted meanwhile: create it again on the retry
            raise TbUnavailableError(f"zone asset {zone!r} vanished", "it is created again")
        return len(points)

    def write(self, windows: list[ZoneWindow]) -> int:
        per_zone = to_points(windows, self.keys)
        if len(per_zone) <= 2:
            outcomes = [_outcome(self._write_zone, z, p) for z, p in per_zone.items()]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="tbspark-sink")
            futures = [self._pool.submit(_outcome, self._write_zone, zone, points)
                       for zone, points in per_zone.items()]
            # Every write ends before this returns or raises (as the pool's `with` did): a slow write
            # of this attempt must not land after a retry's, or after the next batch's, newer value.
            wait(futures)
            outcomes = [f.result() for f in futures]
        for result in outcomes:  # anything else than a refusal (ThingsBoard down): retry the batch
            if isinstance(result, Exception) and not _permanent(result):
                raise result
        refused = [Refusal(zone, tuple(per_zone[zone]), _reason(result))
                   for zone, result in zip(per_zone, outcomes) if isinstance(result, Exception)]
        written = sum(r for r in outcomes if isinstance(r, int))
        if refused:
            raise ZonesRefused(written, refused)
        return written

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.client.close()


def _outcome(fn: Callable[..., int], *args: object) -> int | Exception:
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - sorted by the caller: refusal, or retry
        return exc


def _reason(exc: Exception) -> str:
    api = exc.api_message if isinstance(exc, TbApiError) else str(exc)
    status = exc.status if isinstance(exc, TbApiError) else "?"
    return f"sink refused: HTTP {status}: {' '.join(str(api).split())[:500]}"


def refusal_letters(refused: list[Refusal]) -> list[tuple[bytes, bytes]]:
    """The dead letters (key = zone, value = JSON) of windows ThingsBoard refused, one per window:
    the reason, the zone (cut to 1,000 characters) and the point that was refused (``ts`` = window
    start, ``values`` = the aggregates), so that nothing counted is lost without a trace."""
    out = []
    for r in refused:
        zone = r.zone[:1000]
        for point in r.points:
            body = {"reason": r.reason, "zone": zone, "ts": point["ts"], "values": point["values"]}
            out.append((zone.encode("utf-8", "replace"), json.dumps(body).encode()))
    return out


def produce_letters(bootstrap: str, topic: str, letters: list[tuple[bytes, bytes]],
                    timeout_s: float = 30) -> None:
    """Produce dead letters and wait until the broker has them all (raises KafkaError otherwise)."""
    from confluent_kafka import KafkaException, Producer

    from tbspark.errors import KafkaError

    failed: list = []
    try:
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        for key, value in letters:
            p.produce(topic, value, key=key, on_delivery=lambda err, _msg: err and failed.append(err))
        left = p.flush(timeout_s)
    except KafkaException as exc:
        raise KafkaError(f"dead letters not written to {topic}: {exc}", "check the Kafka broker") from exc
    if left or failed:
        raise KafkaError(f"dead letters not written to {topic}: {failed[0] if failed else 'timed out'}",
                         "check the Kafka broker; the batch is replayed")


class GatewaySink:
    """One MQTT session as the gateway device: each zone becomes a virtual device (announced once with
    v1/gateway/connect), all of a batch's points go in one v1/gateway/telemetry publish, QoS 1,
    waiting for the PUBACK. Reconnects when the session drops."""

    def __init__(self, conn: Connection, gateway: dict, device_type: str, keys: dict[str, str]):
        if not gateway or not gateway.get("token"):
            raise StateError("provision.json has no gateway token",
                             "run `tbspark provision` with aggregation.sink: gateway in the scenario")
        self.host, self.port = conn.mqtt_host, conn.mqtt_port
        self.token = gateway["token"]
        self.device_type = device_type
        self.keys = keys
        self.session = None
        self.announced: set[str] = set()

    def _connected(self):
        from tbspark.thingsboard.mqtt import DeviceSession

        if self.session is None:
            self.session = DeviceSession(self.host, self.port, self.token, timeout_s=10).connect()
            self.announced.clear()  # a new session announces its devices again
        return self.session

    def write(self, windows: list[ZoneWindow]) -> int:
        per_zone = to_points(windows, self.keys)
        if not per_zone:
            return 0
        try:
            session = self._connected()
            for zone in per_zone:
                if zone not in self.announced:
                    session.publish(GATEWAY_CONNECT_TOPIC, {"device": zone, "type": self.device_type}, qos=1)
                    self.announced.add(zone)
            session.publish(GATEWAY_TELEMETRY_TOPIC, per_zone, qos=1)
        except MqttError:
            self.close()
            raise
        return sum(len(p) for p in per_zone.values())

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
