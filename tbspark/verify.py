"""Last stage of the pipeline: read the zone aggregates back from ThingsBoard and judge them
against the scenario's expectations and, window by window, against the simulator's ground truth.

The judging (``judge``) is a pure function of the ground truth and the points read back, so it is
unit-tested without any server; ``verify`` only adds the reading over REST.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable

from tbspark.errors import StateError, TbNotFoundError, UsageError, VerificationError
from tbspark.state import GroundTruthRecord, ProvisionRecord, StateDir, WindowTruth

if TYPE_CHECKING:
    from tbspark.scenario import Scenario
    from tbspark.settings import Connection
    from tbspark.thingsboard.rest import TbRestClient

# Averages are computed by Spark in double precision and travel as text; a relative difference
# above this is a real difference, not rounding.
REL_TOLERANCE = 1e-9

# Points: zone -> metric ("avg"|"count"|"min"|"max") -> [(ts_ms, value)]
Points = dict[str, dict[str, list[tuple[int, float]]]]


@dataclass(frozen=True)
class MetricKeys:
    """The telemetry keys the aggregation job writes (None = that metric is not written)."""

    avg: str = "windSpeed"
    count: str | None = "windSpeedCount"
    min: str | None = "windSpeedMin"
    max: str | None = "windSpeedMax"

    def items(self) -> list[tuple[str, str]]:
        return [(m, k) for m, k in (("avg", self.avg), ("count", self.count),
                                    ("min", self.min), ("max", self.max)) if k]


@dataclass
class WindowMismatch:
    zone: str
    window_start_ms: int
    problem: str  # missing | duplicated | extra | misaligned | count | avg | min | max | moved
    expected: Any = None
    found: Any = None

    def describe(self) -> str:
        when = clock_utc(self.window_start_ms)
        if self.problem == "missing":
            return f"{self.zone} window {when}: missing (expected {self.expected} messages)"
        if self.problem == "extra":
            return f"{self.zone} window {when}: extra window not in the ground truth ({self.found})"
        if self.problem == "duplicated":
            return f"{self.zone} window {when}: duplicated — {self.found} points for one window"
        if self.problem == "misaligned":
            return f"{self.zone} point at {clock_utc(self.found)}: not at a window start"
        return f"{self.zone} window {when}: {self.problem} expected {self.expected}, found {self.found}"


@dataclass
class ZoneVerdict:
    zone: str
    windows_expected: int
    windows_found: int
    windows_matching: int
    messages_expected: int | None
    messages_found: int | None
    mean: float | None           # count-weighted mean of the run as read back
    expected_mean: float | None
    tolerance: float | None
    deviation: float | None
    mean_ok: bool | None          # None = no expectation for this zone
    series: list[tuple[int, float]] = field(default_factory=list)  # (window start, average)


@dataclass
class VerifyReport:
    scenario: str
    holds: bool
    window_s: float
    timestamps: str
    exact: bool                   # was the window-by-window check made?
    started_ms: int | None
    ended_ms: int | None
    zones: list[ZoneVerdict]
    mismatches: list[WindowMismatch]
    notes: list[str] = field(default_factory=list)

    @property
    def windows_verified(self) -> int:
        return sum(z.windows_matching for z in self.zones)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["windows_verified"] = self.windows_verified
        for z in d["zones"]:
            z["series"] = [{"ts": ts, "avg": v} for ts, v in z["series"]]
        for m, obj in zip(d["mismatches"], self.mismatches):
            m["description"] = obj.describe()
        return d


def clock_utc(ms: int | None) -> str:
    """A report's time of day in UTC, to the millisecond (``-`` for none)."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def parse_since(text: str) -> int:
    """``--since``: epoch milliseconds, or an ISO-8601 time (UTC when no zone is given)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r} is neither epoch milliseconds nor an ISO time",
                         "pass e.g. 1719999999999 or 2026-11-28T14:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= REL_TOLERANCE * max(1.0, abs(a), abs(b))


def _by_window(points: Iterable[tuple[int, float]], window_ms: int,
               zone: str, out: list[WindowMismatch]) -> dict[int, list[float]]:
    # The ground truth's window arithmetic, deliberately not the job's (groundtruth.window_key);
    # imported here: tbspark.simulate's package pulls in the simulator, which verify does not need.
    from tbspark.simulate.groundtruth import window_start

    grouped: dict[int, list[float]] = {}
    for ts, value in points:
        start = window_start(ts, window_ms)  # the ground truth's arithmetic, not the job's
        if ts != start:
            out.append(WindowMismatch(zone, start, "misaligned", found=ts))
        grouped.setdefault(start, []).append(value)
    return grouped


def judge(*, scenario: str, window_s: float, keys: MetricKeys, points: Points,
          groundtruth: GroundTruthRecord | None, expectations: dict[str, tuple[float, float]],
          exact: bool, timestamps: str = "device", since_ms: int | None = None) -> VerifyReport:
    """Judge the read-back points. ``expectations``: zone -> (mean, tolerance).
    ``groundtruth``: the simulator's record (None when there is none)."""
    window_ms = int(round(window_s * 1000))
    gt_windows: dict[str, dict[int, WindowTruth]] = {}
    if groundtruth:
        for zone, wins in groundtruth.windows.items():
            gt_windows[zone] = {ts: w for ts, w in wins.items() if since_ms is None or ts >= since_ms}
    do_exact = bool(exact and groundtruth)
    server_ts = timestamps == "server"
    zones = list(dict.fromkeys([*expectations, *gt_windows, *points]))
    mismatches: list[WindowMismatch] = []
    notes: list[str] = []
    verdicts: list[ZoneVerdict] = []
    moved_total = 0

    for zone in zones:
        zone_pts = points.get(zone, {})
        found: dict[str, dict[int, list[float]]] = {
            m: _by_window(zone_pts.get(m, []), window_ms, zone, mismatches if m == "avg" else [])
            for m, _ in keys.items()}
        avg_w = found.get("avg", {})
        cnt_w = found.get("count", {})
        gt = gt_windows.get(zone, {})
        matching = 0
        zone_moved = 0
        if do_exact:
            near = {ws: w.near_edge for ws, w in gt.items()}
            for ws in sorted(set(gt) | set(avg_w)):
                exp = gt.get(ws)
                got = avg_w.get(ws)
                if got is not None and len(got) > 1:
                    mismatches.append(WindowMismatch(zone, ws, "duplicated", found=len(got)))
                    continue
                slack = near.get(ws - window_ms, 0) + near.get(ws, 0) + near.get(ws + window_ms, 0)
                if exp is None:
                    n = cnt_w.get(ws, [0])[0] if cnt_w.get(ws) else None
                    if server_ts and n is not None and n <= slack:
                        zone_moved += int(n)
                        continue
                    mismatches.append(WindowMismatch(zone, ws, "extra", found=f"avg {got[0]}"
                                                     + (f", count {int(n)}" if n is not None else "")))
                    continue
                if got is None:
                    if server_ts and exp.count <= slack:
                        continue
                    mismatches.append(WindowMismatch(zone, ws, "missing", expected=exp.count))
                    continue
                problems = _compare_window(zone, ws, exp, got[0], found)
                if problems and server_ts:
                    n = found["count"][ws][0] if found.get("count", {}).get(ws) else None
                    if n is not None and abs(n - exp.count) <= slack:
                        # count arrivals only: each moved message leaves one window and enters another
                        zone_moved += max(0, int(n - exp.count))
                        matching += 1
                        continue
                if problems:
                    mismatches.extend(problems)
                else:
                    matching += 1
            moved_total += zone_moved
        series = sorted((ws, vals[0]) for ws, vals in avg_w.items())
        mean, n_found = _weighted_mean(avg_w, cnt_w)
        exp_mean, tol = expectations.get(zone, (None, None))
        deviation = (mean - exp_mean) if (mean is not None and exp_mean is not None) else None
        mean_ok = None if exp_mean is None else (deviation is not None and abs(deviation) <= tol)
        verdicts.append(ZoneVerdict(
            zone=zone, windows_expected=len(gt), windows_found=len(avg_w), windows_matching=matching,
            messages_expected=sum(w.count for w in gt.values()) if groundtruth else None,
            messages_found=n_found, mean=mean, expected_mean=exp_mean, tolerance=tol,
            deviation=deviation, mean_ok=mean_ok, series=series))

    if do_exact and server_ts:
        notes.append("server timestamps: a message sent near a window edge may be stamped into the "
                     "neighbouring window by the platform; window differences of up to the near-edge "
                     f"counts are accepted ({moved_total} message(s) accounted for that way)")
    if not do_exact:
        notes.append("no window-by-window check: " + (
            "the scenario sets expectations.exact: false" if groundtruth else
            "no ground truth in the state directory (run tbspark simulate first)"))
    if not any(z.windows_found for z in verdicts):
        notes.append("no aggregates were read back for any zone")
    holds = (not mismatches and all(z.mean_ok is not False for z in verdicts)
             and any(z.windows_found for z in verdicts))
    return VerifyReport(
        scenario=scenario, holds=holds, window_s=window_s, timestamps=timestamps, exact=do_exact,
        started_ms=groundtruth.started_ms if groundtruth else None,
        ended_ms=groundtruth.ended_ms if groundtruth else None,
        zones=verdicts, mismatches=mismatches, notes=notes)


def _compare_window(zone: str, ws: int, exp: WindowTruth, got_avg: float,
                    found: dict[str, dict[int, list[float]]]) -> list[WindowMismatch]:
    problems: list[WindowMismatch] = []
    count = exp.count
    exp_avg = float(exp.sum) / count if count else float("nan")
    if "count" in found:
        got = found["count"].get(ws)
        if got is None or int(got[0]) != count:
            problems.append(WindowMismatch(zone, ws, "count", count, None if got is None else int(got[0])))
    if not _close(got_avg, exp_avg):
        problems.append(WindowMismatch(zone, ws, "avg", exp_avg, got_avg))
    for m in ("min", "max"):
        want = getattr(exp, m)
        if m in found and want is not None:
            got = found[m].get(ws)
            if got is None or not _close(got[0], float(want)):
                problems.append(WindowMismatch(zone, ws, m, want, None if got is None else got[0]))
    return problems


def _weighted_mean(avg_w: dict[int, list[float]], cnt_w: dict[int, list[float]]
                   ) -> tuple[float | None, int | None]:
    """Count-weighted mean over the run; a plain mean of the window averages when counts are absent."""
    if not avg_w:
        return None, None
    if cnt_w and all(ws in cnt_w for ws in avg_w):
        total = sum(cnt_w[ws][0] for ws in avg_w)
        if total > 0:
            return sum(avg_w[ws][0] * cnt_w[ws][0] for ws in avg_w) / total, int(total)
    vals = [v[0] for v in avg_w.values()]
    return sum(vals) / len(vals), None


# ---------------------------------------------------------------- reading from ThingsBoard

def _to_float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def read_points(fetch: Callable[[str, list[str], int, int], dict], zones: dict[str, str],
                keys: MetricKeys, start_ms: int, end_ms: int) -> Points:
    """``fetch(entity_id, keys, start, end)`` answers like ThingsBoard's history call:
    ``{key: [{"ts": ..., "value": ...}]}``. ``zones``: zone name -> entity id."""
    out: Points = {}
    for zone, entity_id in zones.items():
        raw = fetch(entity_id, [k for _, k in keys.items()], start_ms, end_ms) or {}
        out[zone] = {}
        for metric, key in keys.items():
            pts = []
            for p in raw.get(key, []) or []:
                v = _to_float(p.get("value"))
                if v is not None:
                    pts.append((int(p["ts"]), v))
            out[zone][metric] = sorted(pts)
    return out


def metric_keys(scenario: Scenario) -> MetricKeys:
    m = scenario.aggregation.metrics
    return MetricKeys(avg=m.avg or scenario.aggregation.value_key, count=m.count, min=m.min, max=m.max)


def load_records(scenario: Scenario, state: StateDir) -> tuple[ProvisionRecord, GroundTruthRecord | None]:
    """The provision record (required) and the ground truth (optional) for this scenario."""
    from tbspark.simulate.groundtruth import load as load_groundtruth

    prov = ProvisionRecord.for_scenario(state, scenario)
    # groundtruth.json, or the shards of `simulate --shard I/N` merged (a missing shard is an error)
    gt = load_groundtruth(state.root, f"tbspark simulate {scenario.source}")
    if gt is not None and gt.scenario != scenario.name:
        raise StateError(f"the ground truth in {state.root} is for scenario {gt.scenario!r}, "
                         f"not {scenario.name!r}", "pass the --state-dir of this scenario's run")
    return prov, gt


def zone_entity_type(scenario: Scenario) -> str:
    """Where the job writes a zone's aggregates: an asset (REST sink) or a device (gateway sink)."""
    return "ASSET" if scenario.aggregation.sink == "rest" else "DEVICE"


def run_range(window_s: float, prov: ProvisionRecord, gt: GroundTruthRecord | None,
              now_ms: int | None = None) -> tuple[int, int]:
    """The time range (ms) the run's aggregates lie in: from the window before the first message
    sent to two windows after the last (a window is written once the watermark passes it); without
    a ground truth, from the provisioning to a window from now."""
    from tbspark.simulate.groundtruth import window_start

    window_ms = int(round(window_s * 1000))
    if gt is not None:
        return window_start(gt.started_ms, window_ms) - window_ms, gt.ended_ms + 2 * window_ms
    if now_ms is None:
        now_ms = int(datetime.now(tz=timezone.utc).timestamp() * 1000)
    return prov.created_at_ms, now_ms + window_ms


def zone_ids(scenario: Scenario, client: TbRestClient, prov: ProvisionRecord,
             zones: Iterable[str]) -> dict[str, str]:
    """zone name -> id of the entity holding its aggregates (``zone_entity_type``), for the zones
    that have one yet: an asset from the provision record when it has it, else looked up by name
    (the job creates the zone devices of the gateway sink, and assets provision did not)."""
    entity_type = zone_entity_type(scenario)
    ids: dict[str, str] = {}
    for zone in zones:
        known = prov.assets.get(zone) if entity_type == "ASSET" else None
        if known:
            ids[zone] = known
            continue
        try:
            ent = (client.get_asset_by_name(zone) if entity_type == "ASSET"
                   else client.get_device_by_name(zone))
        except TbNotFoundError:
            ent = None
        if ent:
            ids[zone] = ent["id"]["id"] if isinstance(ent.get("id"), dict) else ent["id"]
    return ids


def verify(scenario: Scenario, conn: Connection, state: StateDir, since_ms: int | None = None,
           client: TbRestClient | None = None) -> VerifyReport:
    """Read the zone aggregates of the run over REST and judge them."""
    from tbspark.thingsboard.rest import TbRestClient

    prov, gt = load_records(scenario, state)
    own_client = client is None
    client = client or TbRestClient(conn.tb_url, conn.username, conn.password)
    try:
        return _read_and_judge(scenario, conn, client, prov, gt, since_ms)
    finally:
        if own_client:
            client.close()


def _read_and_judge(scenario: Scenario, conn: Connection, client: TbRestClient, prov: ProvisionRecord,
                    gt: GroundTruthRecord | None, since_ms: int | None) -> VerifyReport:
    agg = scenario.aggregation
    keys = metric_keys(scenario)
    entity_type = zone_entity_type(scenario)
    zones = list(dict.fromkeys([*scenario.zones(), *(gt.windows if gt else {})]))
    ids = zone_ids(scenario, client, prov, zones)
    start, end = run_range(agg.window_s, prov, gt)
    if since_ms is not None:
        start = max(start, since_ms)
    if not ids:
        raise VerificationError(f"no zone {entity_type.lower()}s found on {conn.tb_url} for "
                                f"{', '.join(zones) or 'the scenario'}",
                                "run `tbspark aggregate` so it writes the zone aggregates, then verify again")

    def fetch(entity_id: str, key_list: list[str], s: int, e: int) -> dict:
        return client.get_timeseries(entity_type, entity_id, key_list, s, e, limit=100000, order_by="ASC")

    points = read_points(fetch, ids, keys, start, end)
    expectations = {z: (e.mean, e.tolerance) for z, e in scenario.expectations.zones.items()}
    report = judge(scenario=scenario.name, window_s=agg.window_s, keys=keys, points=points,
                   groundtruth=gt, expectations=expectations, exact=scenario.expectations.exact,
                   timestamps=gt.timestamps if gt else scenario.simulation.timestamps,
                   since_ms=since_ms)
    for zone in zones:
        if zone not in ids:
            report.notes.append(f"no {entity_type.lower()} named {zone!r} on {conn.tb_url}: "
                                "the aggregation job has written nothing for this zone")
    return report
