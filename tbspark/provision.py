"""`tbspark provision`: make a ThingsBoard (real or embedded) hold exactly what a scenario needs —
forwarding rule chain, device profiles, devices with tokens and client attributes, zone assets,
the gateway — idempotently, and record it in provision.json for simulate and verify."""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from tbspark import delivery
from tbspark.errors import KafkaError, TbApiError
from tbspark.settings import Connection
from tbspark.state import DeviceRecord, GatewayRecord, ProvisionRecord, StateDir
from tbspark.thingsboard.mqtt import AttributePublisher
from tbspark.thingsboard.rest import TbRestClient
from tbspark.thingsboard.rulechain import (
    build_rule_chain,
    chain_name,
    metadata_matches,
)

if TYPE_CHECKING:
    from tbspark.scenario import AggregationSection, DeviceSpec, Scenario

Progress = Callable[[str, int, int], None]  # (stage, done so far, total)
KINDS = ("rule_chain", "device_profiles", "devices", "attributes", "assets", "gateway")
REST_WORKERS = 8
MQTT_SESSIONS = 64  # attribute sessions open at once


@dataclass
class ProvisionReport:
    scenario: str
    tb_url: str
    dry_run: bool
    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    existing: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    plan: list[str] = field(default_factory=list)
    record_path: str | None = None
    elapsed_s: float = 0.0
    delivery: dict | None = None  # delivery.DeliveryCheck.as_dict() when the probe ran

    @property
    def changed(self) -> bool:
        return any(self.created.values()) or any(self.updated.values())


def _token() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(20))


def _eid(entity: dict) -> str:
    return entity["id"]["id"]


def _ref(kind: str, uuid: str) -> dict:
    return {"entityType": kind, "id": uuid}


def _pmap(fn: Callable[[Any], Any], items: list, workers: int, stage: str,
          progress: Progress | None) -> list:
    if not items:
        return []
    out = []
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        for i, result in enumerate(pool.map(fn, items), 1):
            out.append(result)
            if progress and (i % 100 == 0 or i == len(items)):
                progress(stage, i, len(items))
    return out


def provision(scenario: Scenario, conn: Connection, state: StateDir, dry_run: bool = False,
              progress: Progress | None = None,
              check_delivery: bool | None = None) -> ProvisionReport:
    """``check_delivery``: send a probe message through the chain and look for it in Kafka
    (tbspark/delivery.py); None = on for a real ThingsBoard (``platform.kind: thingsboard``),
    whose Kafka node may not reach the address it was given, off for the embedded platform,
    whose stack tbspark wires itself. A failed probe raises KafkaError after the record is
    written."""
    if check_delivery is None:
        check_delivery = getattr(scenario.platform, "kind", "embedded") == "thingsboard"
    t0 = time.monotonic()
    report = ProvisionReport(scenario.name, conn.tb_url, dry_run)
    specs = scenario.expand_devices()
    agg = scenario.aggregation
    with TbRestClient(conn.tb_url, conn.username, conn.password, pool_size=REST_WORKERS * 2) as tb:
        tb.login()
        chain_id = _rule_chain(tb, scenario, conn, report)
        profiles = _profiles(tb, sorted({s.type for s in specs}), chain_id, report)
        last = ProvisionRecord.previous(state, scenario.name)
        previous = dict(last.devices) if last else {}
        with AttributePublisher(conn.mqtt_host, conn.mqtt_port, parallel=MQTT_SESSIONS) as mqtt:
            devices = _devices(tb, mqtt, specs, profiles, previous, report, progress)
            existing_names = {n for n, d in devices.items() if not d["new"]}
            _attributes(tb, mqtt, specs, devices, existing_names, report, progress)
        assets = _assets(tb, scenario.zones(), agg.asset_type, report)
        gateway = _gateway(tb, agg, report) if agg.sink == "gateway" else None
        check = None
        if check_delivery and not dry_run:
            dtype = sorted(profiles)[0]
            check = delivery.probe(tb, conn, scenario, profiles[dtype], dtype, _token)
            report.delivery = check.as_dict()
    report.elapsed_s = time.monotonic() - t0
    if dry_run:
        return report
    record = ProvisionRecord(
        scenario=scenario.name, complete=True, tb_url=conn.tb_url,
        created_at_ms=int(time.time() * 1000),
        devices={s.name: DeviceRecord(devices[s.name]["id"], devices[s.name]["token"], s.type, s.zone,
                                      devices[s.name]["attrs"]) for s in specs},
        assets=assets, rule_chain_id=chain_id, rule_chain_name=chain_name(scenario),
        device_profiles=profiles, gateway=gateway)
    state.ensure()
    record.save(state.provision_file)
    report.record_path = str(state.provision_file)
    if check is not None and check.ok is False:
        bootstrap = conn.kafka_bootstrap_for_platform
        raise KafkaError(f"provisioned, but the platform does not deliver to Kafka: {check.detail}",
                         f"its Kafka node was given bootstrap {bootstrap!r}; set TB_KAFKA_BOOTSTRAP "
                         "(or --platform-kafka-bootstrap) to an address the ThingsBoard server "
                         "can reach and provision again (docs/thingsboard.md, 'Kafka address of "
                         "the platform')")
    return report


def _replicated(bootstrap: str, topic: str) -> bool:
    """Whether the scenario's topic is replicated (then its producers are idempotent). Asked of the
    brokers only when the bootstrap lists several (a cluster; one address is the single local
    broker, not worth a round trip); False when Kafka cannot be asked from here (e.g. a broker only
    ThingsBoard's containers reach)."""
    from tbspark.kafka_topics import is_replicated

    if "," not in bootstrap:
        return False
    try:
        return is_replicated(bootstrap, topic, timeout_s=5.0)
    except Exception:  # noqa: BLE001 — unreachable: keep the single-broker chain
        return False


def _rule_chain(tb: TbRestClient, scenario: Scenario, conn: Connection, report: ProvisionReport) -> str:
    wanted = build_rule_chain(scenario, conn.kafka_bootstrap_for_platform,
                              replicated=_replicated(conn.kafka_bootstrap, scenario.kafka.topic))
    name = wanted["ruleChain"]["name"]
    chain = tb.get_rule_chain_by_name(name)
    if chain is None:
        report.created["rule_chain"] += 1
        report.plan.append(f"create rule chain {name!r} (Kafka {conn.kafka_bootstrap_for_platform})")
        if report.dry_run:
            return "(new)"
        chain = tb.save_rule_chain(wanted["ruleChain"])
    elif metadata_matches(wanted["metadata"], tb.get_rule_chain_metadata(_eid(chain))):
        report.existing["rule_chain"] += 1
        return _eid(chain)
    else:
        report.updated["rule_chain"] += 1
        report.plan.append(f"update rule chain {name!r}")
        if report.dry_run:
            return _eid(chain)
    tb.save_rule_chain_metadata({**wanted["metadata"], "ruleChainId": chain["id"]})
    return _eid(chain)


def _profiles(tb: TbRestClient, types: list[str], chain_id: str,
              report: ProvisionReport) -> dict[str, str]:
    out: dict[str, str] = {}
    for dtype in types:
        prof = tb.get_device_profile_by_name(dtype)
        if prof is None:
            report.created["device_profiles"] += 1
            report.plan.append(f"create device profile {dtype!r} → rule chain")
            if report.dry_run:
                out[dtype] = "(new)"
                continue
            try:
                prof = tb.get_or_create_device_profile(dtype)
            except TbApiError as exc:
                raise TbApiError(exc.status, f"the server refused device type {dtype!r}: "
                                 f"{exc.api_message}", exc.error_code, exc.method, exc.path,
                                 hint="use another device type in the scenario") from exc
        elif (prof.get("defaultRuleChainId") or {}).get("id") == chain_id:
            report.existing["device_profiles"] += 1
            out[dtype] = _eid(prof)
            continue
        else:
            report.existing["device_profiles"] += 1
            report.updated["device_profiles"] += 1
            report.plan.append(f"point device profile {dtype!r} at the rule chain")
            if report.dry_run:
                out[dtype] = _eid(prof)
                continue
        if (prof.get("defaultRuleChainId") or {}).get("id") != chain_id:
            prof["defaultRuleChainId"] = _ref("RULE_CHAIN", chain_id)
            prof = tb.save_device_profile(prof)
        out[dtype] = _eid(prof)
    return out


def _fingerprint(attrs: dict) -> str:
    return hashlib.sha1(json.dumps(attrs, sort_keys=True).encode()).hexdigest()[:16]


def _wait_all(futures: list, stage: str, progress: Progress | None) -> None:
    for i, fut in enumerate(futures, 1):
        fut.result()  # the first failure (refused token, lost platform) is raised here
        if progress and (i % 100 == 0 or i == len(futures)):
            progress(stage, i, len(futures))


def _devices(tb: TbRestClient, mqtt: AttributePublisher, specs: list[DeviceSpec],
             profiles: dict[str, str], previous: dict[str, DeviceRecord], report: ProvisionReport, progress: Progress | None) -> dict[str, dict]:
    """name → {"id", "token", "attrs", "new"}. Lists the tenant's devices once instead of one lookup
    each; a new device gets its token chosen here and its client attributes published right
    after it is created (same worker), so creation and attribute sessions overlap."""
    wanted = {s.name for s in specs}
    existing = {d["name"]: d for d in tb.iter_tenant_devices() if d.get("name") in wanted}
    missing = [s for s in specs if s.name not in existing]
    retype = [s for s in specs if s.name in existing and existing[s.name].get("type") != s.type]
    report.created["devices"] += len(missing)
    report.existing["devices"] += len(specs) - len(missing)
    report.updated["devices"] += len(retype)
    report.created["attributes"] += len(missing)
    if missing:
        report.plan.append(f"create {len(missing)} devices ({', '.join(s.name for s in missing[:3])}"
                           f"{', …' if len(missing) > 3 else ''}) and publish their client "
                           "attributes over MQTT")
    if retype:
        report.plan.append(f"change the type of {len(retype)} devices")
    if report.dry_run:
        plan = {}
        for s in specs:
            dev_id = _eid(existing[s.name]) if s.name in existing else "(new)"
            prev = previous.get(s.name)
            plan[s.name] = {"id": dev_id, "token": "", "new": s.name not in existing,
                            "attrs": prev.attrs if prev is not None and prev.id == dev_id else None}
        return plan

    def create(spec: DeviceSpec) -> tuple[str, dict]:
        token = _token()
        body = {"name": spec.name, "type": spec.type,
                "deviceProfileId": _ref("DEVICE_PROFILE", profiles[spec.type])}
        try:
            dev = tb.save_device(body, access_token=token)
        except TbApiError as exc:
            if not (exc.status == 400 and "already exists" in exc.api_message):
                raise TbApiError(exc.status, f"the server refused device {spec.name!r} of type "
                                 f"{spec.type!r}: {exc.api_message}", exc.error_code, exc.method,
                                 exc.path, hint="check the scenario's device names and types") from exc
            dev = tb.get_device_by_name(spec.name)  # created meanwhile (a retried POST)
            if dev is None:
                raise
            token = tb.get_device_credentials(_eid(dev))["credentialsId"]
        # Client attributes can only be written by the device itself (§5.2): over MQTT, on
        # the publisher's loop while this worker goes on creating devices.
        pending.append(mqtt.submit(token, dict(spec.attributes)))
        return spec.name, {"id": _eid(dev), "token": token, "attrs": _fingerprint(spec.attributes),
                           "new": True}

    pending: list = []
    out: dict[str, dict] = dict(_pmap(create, missing, REST_WORKERS, "devices", progress))
    _wait_all(pending, "attributes", progress)

    def retyped(spec: DeviceSpec) -> None:
        dev = dict(existing[spec.name])
        dev["type"] = spec.type
        dev["deviceProfileId"] = _ref("DEVICE_PROFILE", profiles[spec.type])
        tb.save_device(dev)

    _pmap(retyped, retype, REST_WORKERS, "device types", progress)
    need_token = []
    for s in specs:
        if s.name in existing:
            dev_id = _eid(existing[s.name])
            prev = previous.get(s.name)
            same = prev is not None and prev.id == dev_id
            out[s.name] = {"id": dev_id, "token": prev.token if same else None,
                           "attrs": prev.attrs if same else None, "new": False}
            if not out[s.name]["token"]:
                need_token.append(s.name)

    def token_of(name: str) -> tuple[str, str]:
        return name, tb.get_device_credentials(out[name]["id"])["credentialsId"]

    for name, token in _pmap(token_of, need_token, REST_WORKERS, "tokens", progress):
        out[name]["token"] = token
    return out


def _attributes(tb: TbRestClient, mqtt: AttributePublisher, specs: list[DeviceSpec], devices: dict[str, dict],
                existing_names: set[str], report: ProvisionReport,
                progress: Progress | None) -> None:
    """Client attributes of devices that already existed: unchanged when the last record's
    fingerprint matches, else checked over REST and republished over MQTT where they differ."""
    old = [s for s in specs if s.name in existing_names]
    unknown = [s for s in old if devices[s.name]["attrs"] != _fingerprint(s.attributes)]

    def stale(spec: DeviceSpec) -> bool:
        have = tb.get_attributes("DEVICE", devices[spec.name]["id"], "CLIENT_SCOPE",
                                 list(spec.attributes))
        return any(have.get(k) != v for k, v in spec.attributes.items())

    if report.dry_run:
        todo = unknown
        report.existing["attributes"] += len(old) - len(unknown)
        if todo:
            report.plan.append(f"check (and republish if they differ) the client attributes of "
                               f"{len(todo)} existing devices")
        return
    flags = _pmap(stale, unknown, REST_WORKERS, "attribute check", progress)
    todo = [spec for spec, is_stale in zip(unknown, flags) if is_stale]
    report.updated["attributes"] += len(todo)
    report.existing["attributes"] += len(old) - len(todo)
    _wait_all([mqtt.submit(devices[s.name]["token"], dict(s.attributes)) for s in todo],
              "attributes", progress)
    for spec in old:
        devices[spec.name]["attrs"] = _fingerprint(spec.attributes)


def _assets(tb: TbRestClient, zones: list[str], asset_type: str,
            report: ProvisionReport) -> dict[str, str]:
    out: dict[str, str] = {}
    for zone in zones:
        asset = tb.get_asset_by_name(zone)
        if asset is not None:
            report.existing["assets"] += 1
        else:
            report.created["assets"] += 1
            report.plan.append(f"create asset {zone!r} of type {asset_type!r}")
            if report.dry_run:
                out[zone] = "(new)"
                continue
            asset = tb.get_or_create_asset(zone, asset_type)
        out[zone] = _eid(asset)
    return out


def _gateway(tb: TbRestClient, agg: AggregationSection, report: ProvisionReport) -> GatewayRecord:
    name = agg.gateway_device
    dev = tb.get_device_by_name(name)
    if dev is None:
        report.created["gateway"] += 1
        report.plan.append(f"create gateway device {name!r}")
        if report.dry_run:
            return GatewayRecord(name, "(new)", "")
        dev = tb.save_device({"name": name, "type": "gateway",
                              "additionalInfo": {"gateway": True}}, access_token=_token())
    elif not (dev.get("additionalInfo") or {}).get("gateway"):
        report.updated["gateway"] += 1
        report.plan.append(f"flag device {name!r} as a gateway")
        if report.dry_run:
            return GatewayRecord(name, _eid(dev), "")
        dev["additionalInfo"] = {**(dev.get("additionalInfo") or {}), "gateway": True}
        dev = tb.save_device(dev)
    else:
        report.existing["gateway"] += 1
        if report.dry_run:
            return GatewayRecord(name, _eid(dev), "")
    token = tb.get_device_credentials(_eid(dev))["credentialsId"]
    return GatewayRecord(name, _eid(dev), token)
