"""Saving rule chains as ThingsBoard does (RuleChainDataValidator, BaseRuleChainService): its own
shipped chains save through the two calls its UI makes and through /api/ruleChains/import, node types
and all; connections that loop are refused with its messages; a chain a device profile uses cannot
be deleted. Runs against a real ThingsBoard too (TB_URL), with the same assertions."""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from tests.fixtures.tb_chains import SHIPPED, shipped_chain

SWITCH = "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode"


def shipped(name: str) -> dict:
    return shipped_chain(name)  # ThingsBoard's own file with TB_SOURCE, else one of the same shape


def save_chain(http, url, rule_chain: dict, unique: str) -> str:
    body = {k: v for k, v in rule_chain.items() if k not in ("id", "firstRuleNodeId", "externalId")}
    body["name"] = f"rules {unique} {rule_chain['name']}"
    body["root"] = False  # as ThingsBoard's UI imports a chain
    r = http.post(f"{url}/api/ruleChain", json=body)
    assert r.status_code == 200, r.text
    return r.json()["id"]["id"]


def save_metadata(http, url, chain_id: str, metadata: dict):
    body = copy.deepcopy(metadata)
    body["ruleChainId"] = {"entityType": "RULE_CHAIN", "id": chain_id}
    return http.post(f"{url}/api/ruleChain/metadata", json=body)


@pytest.mark.parametrize("name", SHIPPED)
def test_thingsboards_shipped_chains_save_through_the_ui_calls(target, http, unique, name):
    data = shipped(name)
    cid = save_chain(http, target.url, data["ruleChain"], unique)
    try:
        r = save_metadata(http, target.url, cid, data["metadata"])
        assert r.status_code == 200, r.text
        stored = http.get(f"{target.url}/api/ruleChain/{cid}/metadata").json()
        assert [n["type"] for n in stored["nodes"]] == [n["type"] for n in data["metadata"]["nodes"]]
        assert stored["firstNodeIndex"] == data["metadata"]["firstNodeIndex"]
        assert {(c["fromIndex"], c["toIndex"], c["type"]) for c in stored["connections"]} == \
            {(c["fromIndex"], c["toIndex"], c["type"]) for c in data["metadata"]["connections"]}
        got = http.get(f"{target.url}/api/ruleChain/{cid}").json()
        assert got["type"] == data["ruleChain"].get("type", "CORE") and got["root"] is False
    finally:
        http.delete(f"{target.url}/api/ruleChain/{cid}")


def test_import_endpoint_creates_chains_with_their_metadata(target, http, unique):
    chains, metas = [], []
    for name in ("root_rule_chain.json", "rule_chain_template.json"):
        data = shipped(name)
        old_id = str(uuid.uuid4())
        rc = dict(data["ruleChain"], id={"entityType": "RULE_CHAIN", "id": old_id},
                  name=f"rules {unique} import {data['ruleChain']['name']}")
        chains.append(rc)
        metas.append(dict(data["metadata"], ruleChainId={"entityType": "RULE_CHAIN", "id": old_id}))
    r = http.post(f"{target.url}/api/ruleChains/import", json={"ruleChains": chains, "metadata": metas})
    assert r.status_code == 200, r.text
    results = r.json()
    try:
        assert [x["ruleChainName"] for x in results] == [c["name"] for c in chains]
        assert not any("error" in x for x in results)
        for x, rc, md in zip(results, chains, metas):
            new_id = x["ruleChainId"]["id"]
            assert new_id != rc["id"]["id"]
            got = http.get(f"{target.url}/api/ruleChain/{new_id}").json()
            assert got["root"] is False and got["name"] == rc["name"]
            stored = http.get(f"{target.url}/api/ruleChain/{new_id}/metadata").json()
            assert [n["type"] for n in stored["nodes"]] == [n["type"] for n in md["nodes"]]
    finally:
        for x in results:
            if x.get("ruleChainId"):
                http.delete(f"{target.url}/api/ruleChain/{x['ruleChainId']['id']}")


def loop_metadata(conns) -> dict:
    nodes = [{"type": SWITCH, "name": f"switch {i}", "configurationVersion": 0, "configuration": {"version": 0}}
             for i in range(3)]
    return {"firstNodeIndex": 0, "nodes": nodes,
            "connections": [{"fromIndex": a, "toIndex": b, "type": t} for a, b, t in conns]}


@pytest.mark.parametrize("conns, message", [
    ([(0, 1, "Post telemetry"), (1, 1, "Other")], "Can't create the relation to yourself."),
    ([(0, 1, "Post telemetry"), (1, 2, "Post telemetry"), (2, 0, "Other")],
     "Can't create circling relations in rule chain."),
])
def test_connections_that_loop_are_refused_at_save(target, http, unique, conns, message):
    cid = save_chain(http, target.url, {"name": "loop", "type": "CORE"}, unique)
    try:
        r = save_metadata(http, target.url, cid, loop_metadata(conns))
        assert r.status_code == 400
        body = r.json()
        assert body["message"] == message and body["errorCode"] == 31
        assert http.get(f"{target.url}/api/ruleChain/{cid}/metadata").json()["nodes"] == []  # nothing saved
    finally:
        http.delete(f"{target.url}/api/ruleChain/{cid}")


def test_deleting_a_chain_a_device_profile_uses_is_refused(target, http, unique):
    cid = save_chain(http, target.url, {"name": "in use", "type": "CORE"}, unique)
    r = http.post(f"{target.url}/api/deviceProfile", json={
        "name": f"rules {unique} profile", "type": "DEFAULT", "transportType": "DEFAULT",
        "profileData": {"configuration": {"type": "DEFAULT"}, "transportConfiguration": {"type": "DEFAULT"}},
        "defaultRuleChainId": {"entityType": "RULE_CHAIN", "id": cid}})
    assert r.status_code == 200, r.text
    profile = r.json()
    try:
        r = http.delete(f"{target.url}/api/ruleChain/{cid}")
        assert r.status_code == 400
        assert r.json()["message"] == "The rule chain referenced by the device profiles cannot be deleted!"
        assert http.get(f"{target.url}/api/ruleChain/{cid}").status_code == 200  # still there
        assert http.get(f"{target.url}/api/deviceProfile/{profile['id']['id']}").json()["defaultRuleChainId"]["id"] == cid
    finally:
        http.delete(f"{target.url}/api/deviceProfile/{profile['id']['id']}")
        assert http.delete(f"{target.url}/api/ruleChain/{cid}").status_code == 200  # unused now: deleted
