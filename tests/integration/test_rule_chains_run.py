"""ThingsBoard's own rule chains and script nodes running on the platform process, over MQTT: the
shipped chains carry telemetry, attributes and RPC; RPC goes through the device's chain (no RPC node,
no delivery); a looping script or an exponentially fanning chain costs a bounded time, and the
platform keeps serving."""

from __future__ import annotations

import copy
import json
import time
import uuid

import pytest
import requests

from tests.integration.test_mqtt import Endpoint, Rest, unique, wait_for
from tests.integration.test_rpc import close, paho_client, subscribe

pytest.importorskip("py_mini_racer")

from tests.fixtures.tb_chains import shipped_chain  # ThingsBoard's files with TB_SOURCE, else the same shape

PKG = "org.thingsboard.rule.engine."


@pytest.fixture(scope="module")
def ep(platform) -> Endpoint:
    return Endpoint(platform.url, platform.mqtt_host, platform.mqtt_port)


@pytest.fixture(scope="module")
def rest(ep) -> Rest:
    return Rest(ep.url)


def chain_from(rest: Rest, rule_chain: dict, metadata: dict) -> str:
    """A chain saved with the two calls ThingsBoard's UI makes on import."""
    body = {k: v for k, v in rule_chain.items() if k not in ("id", "firstRuleNodeId", "externalId")}
    body.update(name=f"rules {uuid.uuid4().hex[:8]} {rule_chain['name']}", root=False)
    r = rest.post("/api/ruleChain", body)
    assert r.status_code == 200, r.text
    cid = r.json()["id"]["id"]
    md = dict(copy.deepcopy(metadata), ruleChainId={"entityType": "RULE_CHAIN", "id": cid})
    r = rest.post("/api/ruleChain/metadata", md)
    assert r.status_code == 200, r.text
    return cid


def device_on(rest: Rest, chain_id: str) -> tuple[str, str]:
    """A device whose profile's default chain is ``chain_id``: (device id, token)."""
    name = unique("rules profile")
    r = rest.post("/api/deviceProfile", {
        "name": name, "type": "DEFAULT", "transportType": "DEFAULT",
        "profileData": {"configuration": {"type": "DEFAULT"}, "transportConfiguration": {"type": "DEFAULT"}},
        "defaultRuleChainId": {"entityType": "RULE_CHAIN", "id": chain_id}})
    assert r.status_code == 200, r.text
    token = uuid.uuid4().hex
    return rest.device(unique("rules dev"), name, token), token


def twoway(rest: Rest, dev_id: str, ms: int):
    return rest.post(f"/api/rpc/twoway/{dev_id}", {"method": "ping", "params": {"n": 1},
                                                    "expirationTime": int(time.time() * 1000) + ms})


@pytest.mark.parametrize("name", ["root_rule_chain.json", "edge_root_rule_chain.json", "rule_chain_template.json"])
def test_thingsboards_shipped_chain_carries_telemetry_attributes_and_rpc(ep, rest, name):
    data = shipped_chain(name)
    dev_id, token = device_on(rest, chain_from(rest, data["ruleChain"], data["metadata"]))
    cl = paho_client(ep, token)
    try:
        cl.publish("v1/devices/me/telemetry", json.dumps({"windSpeed": 7.5}), qos=1).wait_for_publish(10)
        cl.publish("v1/devices/me/attributes", json.dumps({"firmware": "v1.2"}), qos=1).wait_for_publish(10)
        assert wait_for(lambda: rest.latest_values(dev_id, "windSpeed"), what="telemetry saved") == {"windSpeed": 7.5}
        assert wait_for(lambda: rest.attrs(dev_id, "CLIENT_SCOPE"), what="attributes saved") == {"firmware": "v1.2"}
        # the chain's RPC call request node delivers server-side RPC; the device's answer comes back
        subscribe(cl, "v1/devices/me/rpc/request/+")
        cl.on_message = lambda c, u, m: c.publish(m.topic.replace("request", "response"), b'{"pong": 1}', qos=1)
        r = twoway(rest, dev_id, 5000)
        assert (r.status_code, r.json()) == (200, {"pong": 1})
    finally:
        close(cl)


def test_rpc_goes_through_the_chain_and_a_chain_without_the_rpc_node_drops_it(ep, rest):
    data = shipped_chain("rule_chain_template.json")
    meta = copy.deepcopy(data["metadata"])
    meta["connections"] = [c for c in meta["connections"] if c["type"] != "RPC Request to Device"]
    dev_id, token = device_on(rest, chain_from(rest, data["ruleChain"], meta))
    cl = paho_client(ep, token)
    try:
        subscribe(cl, "v1/devices/me/rpc/request/+")
        r = twoway(rest, dev_id, 600)
        assert (r.status_code, r.text) == (504, "")
        # the telemetry path of the same chain works: the session was there to receive RPC
        cl.publish("v1/devices/me/telemetry", '{"t": 1}', qos=1).wait_for_publish(10)
        wait_for(lambda: rest.latest_values(dev_id, "t"), what="telemetry saved")
        assert cl.received == []  # the request never reached the device
    finally:
        close(cl)


def script_chain(body: str) -> dict:
    """switch → JS filter (``body``) → save time series on True."""
    return {"firstNodeIndex": 0, "connections": [{"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"},
                                                  {"fromIndex": 1, "toIndex": 2, "type": "True"}],
            "nodes": [{"type": PKG + "filter.TbMsgTypeSwitchNode", "name": "switch", "configuration": {"version": 0}},
                      {"type": PKG + "filter.TbJsFilterNode", "name": "filter",
                       "configuration": {"scriptLang": "JS", "jsScript": body}},
                      {"type": PKG + "telemetry.TbMsgTimeseriesNode", "name": "save", "configurationVersion": 1,
                       "configuration": {"defaultTTL": 0, "useServerTs": False,
                                         "processingSettings": {"type": "ON_EVERY_MESSAGE"}}}]}


def test_js_filter_decides_what_is_saved(ep, rest):
    dev_id, token = device_on(rest, chain_from(rest, {"name": "filter"}, script_chain("return msg.t > 20;")))
    cl = paho_client(ep, token)
    try:
        for t in (25, 5, 30, 1):
            cl.publish("v1/devices/me/telemetry", json.dumps({"ts": 1000 + t, "values": {"t": t}}), qos=1).wait_for_publish(10)
        wait_for(lambda: rest.latest_values(dev_id, "t"), what="telemetry saved")
        hist = rest.get(f"/api/plugins/telemetry/DEVICE/{dev_id}/values/timeseries", keys="t", startTs=0,
                        endTs=10_000, limit=10)
        assert sorted(p["value"] for p in hist["t"]) == ["25", "30"]
    finally:
        close(cl)


def assert_serving_while(ep: Endpoint, publish_done) -> int:
    """REST answers quickly (< 1 s each) until ``publish_done()``; returns how many answers."""
    answers = 0
    deadline = time.monotonic() + 30
    while not publish_done():
        t0 = time.monotonic()
        assert requests.get(ep.url + "/tbspark/health", timeout=5).status_code == 200
        assert time.monotonic() - t0 < 1.0, "REST stalled while the chain ran"
        answers += 1
        assert time.monotonic() < deadline, "the PUBACK never came"
    return answers


def test_a_looping_script_is_stopped_and_the_platform_keeps_serving(ep, rest):
    dev_id, token = device_on(rest, chain_from(rest, {"name": "loop"}, script_chain("while (true) {} return true;")))
    ok_id, ok_token = device_on(rest, chain_from(rest, {"name": "fine"}, script_chain("return true;")))
    cl, ok = paho_client(ep, token), paho_client(ep, ok_token)
    try:
        t0 = time.monotonic()
        info = cl.publish("v1/devices/me/telemetry", '{"t": 1}', qos=1)
        assert_serving_while(ep, info.is_published)
        assert time.monotonic() - t0 < 10  # one batch call and three single calls of 1 s at most
        ok.publish("v1/devices/me/telemetry", '{"t": 2}', qos=1).wait_for_publish(10)
        assert wait_for(lambda: rest.latest_values(ok_id, "t"), what="the other device's telemetry") == {"t": 2}
        assert rest.latest_values(dev_id, "t") == {}  # the looping filter let nothing through
    finally:
        close(cl)
        close(ok)


def test_a_chain_that_fans_out_exponentially_is_capped(ep, rest):
    n = 40  # every switch sends telemetry to the next two: fib(40) ≈ 10^8 node runs uncapped
    nodes = [{"type": PKG + "filter.TbMsgTypeSwitchNode", "name": f"s{i}", "configuration": {"version": 0}}
             for i in range(n)]
    conns = [{"fromIndex": i, "toIndex": j, "type": "Post telemetry"} for i in range(n) for j in (i + 1, i + 2) if j < n]
    dev_id, token = device_on(rest, chain_from(rest, {"name": "fan-out"},
                                               {"firstNodeIndex": 0, "nodes": nodes, "connections": conns}))
    cl = paho_client(ep, token)
    try:
        t0 = time.monotonic()
        info = cl.publish("v1/devices/me/telemetry", '{"t": 1}', qos=1)
        assert_serving_while(ep, info.is_published)
        assert time.monotonic() - t0 < 5
    finally:
        close(cl)


def test_a_root_chain_saved_before_rpc_went_through_chains_gets_the_rpc_node(tmp_path):
    """State directories made before this change have a root chain without the RPC call request node;
    loaded, it gets one, or server-side RPC to their devices would now go nowhere."""
    from tbspark.platform.store import RuleChain, Store
    from tbspark.platform.store.models import new_id, now_ms

    legacy = {"firstNodeIndex": 0, "nodes": [
        {"type": PKG + "filter.TbMsgTypeSwitchNode", "name": "Message Type Switch", "configuration": {"version": 0}},
        {"type": PKG + "telemetry.TbMsgTimeseriesNode", "name": "Save Timeseries", "configuration": {}},
        {"type": PKG + "telemetry.TbMsgAttributesNode", "name": "Save Client Attributes", "configuration": {}}],
        "connections": [{"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"},
                        {"fromIndex": 0, "toIndex": 2, "type": "Post attributes"}]}
    store = Store(tmp_path / "platform.db")
    rc = store.save_rule_chain_sync(RuleChain(new_id(), new_id(), "Root Rule Chain", now_ms(), root=True))
    other = store.save_rule_chain_sync(RuleChain(new_id(), rc.tenant_id, "not root", now_ms()))
    store.save_rule_chain_metadata_sync(rc.id, legacy)
    store.save_rule_chain_metadata_sync(other.id, legacy)
    store.close()
    for _ in range(2):  # upgraded once, and stored: a second load finds nothing to do
        store = Store(tmp_path / "platform.db")
        try:
            meta = store.rule_chain_metadata(rc.id)
            assert [n["type"].rsplit(".", 1)[-1] for n in meta["nodes"]][-1] == "TbSendRPCRequestNode"
            assert len(meta["nodes"]) == 4
            assert {"fromIndex": 0, "toIndex": 3, "type": "RPC Request to Device"} in meta["connections"]
            assert len(store.rule_chain_metadata(other.id)["nodes"]) == 3  # only the root chain
        finally:
            store.close()
