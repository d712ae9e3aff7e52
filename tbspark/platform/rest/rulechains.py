"""/api/ruleChain*: rule-chain storage (§8.1). Chains are validated by the rule engine on save
(unsupported node types → 400 naming them); executing them is platform/rules/."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from tbspark.platform.rest import errors
from tbspark.platform.rest.common import (
    PAGE_PARAMS, Param, eid, id_from, json_object, ok_empty, ok_json, page, parse_uuid, platform, required_name, route,
    tenant_admin,
)
from tbspark.platform.store import RuleChain
from tbspark.platform.store.models import new_id, now_ms

SWITCH = "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode"
SAVE_TS = "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode"
SAVE_ATTRS = "org.thingsboard.rule.engine.telemetry.TbMsgAttributesNode"


def root_chain_metadata() -> dict:
    """ThingsBoard's stock root chain, reduced to what stores data: switch → save ts / save client attributes."""
    return {
        "firstNodeIndex": 0,
        "nodes": [
            {"type": SWITCH, "name": "Message Type Switch", "configurationVersion": 0,
             "configuration": {"version": 0}, "additionalInfo": {"layoutX": 347, "layoutY": 149}},
            {"type": SAVE_TS, "name": "Save Timeseries", "configurationVersion": 1,
             "configuration": {"defaultTTL": 0, "useServerTs": False, "processingSettings": {"type": "ON_EVERY_MESSAGE"}},
             "additionalInfo": {"layoutX": 824, "layoutY": 156}},
            {"type": SAVE_ATTRS, "name": "Save Client Attributes", "configurationVersion": 3,
             "configuration": {"processingSettings": {"type": "ON_EVERY_MESSAGE"}, "scope": "CLIENT_SCOPE",
                               "notifyDevice": False, "sendAttributesUpdatedNotification": False,
                               "updateAttributesOnlyOnValueChange": True},
             "additionalInfo": {"layoutX": 824, "layoutY": 52}},
        ],
        "connections": [{"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"},
                        {"fromIndex": 0, "toIndex": 2, "type": "Post attributes"}],
        "ruleChainConnections": None,
    }


def rule_chain_json(rc: RuleChain) -> dict:
    return {"id": eid("RULE_CHAIN", rc.id), "createdTime": rc.created_time, "tenantId": eid("TENANT", rc.tenant_id),
            "name": rc.name, "type": rc.type, "firstRuleNodeId": eid("RULE_NODE", rc.first_rule_node_id),
            "root": rc.root, "debugMode": rc.debug_mode, "configuration": rc.configuration,
            "additionalInfo": rc.additional_info, "externalId": None, "version": rc.version}


def _own_chain(request: web.Request, raw_id: str) -> RuleChain:
    principal = tenant_admin(request)
    cid = parse_uuid(raw_id)
    rc = platform(request).store.rule_chain(cid)
    if rc is None or rc.tenant_id != principal.tenant_id:
        raise errors.not_found(f"Rule chain with id [{cid}] is not found")
    return rc


def _validate(request: web.Request, meta: dict) -> None:
    engine = platform(request).engine
    if engine is None:
        return
    problems = engine.validate_chain(meta)
    if problems:
        raise errors.bad_request("; ".join(problems))


@route("POST", "/api/ruleChain", "Create or update a rule chain", "ruleChain", body="json")
async def save_rule_chain(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    body = await json_object(request)
    name = required_name(body, "Rule chain")
    rtype = body.get("type") or "CORE"
    if rtype not in ("CORE", "EDGE"):
        raise errors.bad_request(f"No enum constant org.thingsboard.server.common.data.rule.RuleChainType.{rtype}")
    cid = id_from(body, "id")
    store = platform(request).store
    if cid:
        old = _own_chain(request, cid)
        rc = replace(old, name=name, type=rtype, debug_mode=bool(body.get("debugMode")),
                     configuration=body.get("configuration"), additional_info=body.get("additionalInfo"))
        version = body.get("version")
        rc = await store.save_rule_chain(rc, expected_version=version if isinstance(version, int) else None)
    else:
        rc = RuleChain(new_id(), principal.tenant_id, name, now_ms(), type=rtype,
                       debug_mode=bool(body.get("debugMode")), configuration=body.get("configuration"),
                       additional_info=body.get("additionalInfo"))
        rc = await store.save_rule_chain(rc)
    return ok_json(rule_chain_json(rc))


@route("POST", "/api/ruleChain/device/default", "Create a chain from the root-chain template", "ruleChain",
       body="json")
async def save_default_chain(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    body = await json_object(request)
    name = required_name(body, "Rule chain")
    store = platform(request).store
    rc = await store.save_rule_chain(RuleChain(new_id(), principal.tenant_id, name, now_ms()))
    await store.save_rule_chain_metadata(rc.id, root_chain_metadata())
    return ok_json(rule_chain_json(store.rule_chain(rc.id)))


@route("POST", "/api/ruleChain/metadata", "Save a chain's nodes and connections", "ruleChain", body="json",
       params=[Param("updateRelated", "boolean")])
async def save_metadata(request: web.Request) -> web.Response:
    body = await json_object(request)
    cid = id_from(body, "ruleChainId")
    if not cid:
        raise errors.bad_request("Rule chain id should be specified!")
    rc = _own_chain(request, cid)
    _validate(request, body)
    return ok_json(await platform(request).store.save_rule_chain_metadata(rc.id, body))


@route("GET", "/api/ruleChain/{ruleChainId}", "A rule chain", "ruleChain")
async def get_rule_chain(request: web.Request) -> web.Response:
    return ok_json(rule_chain_json(_own_chain(request, request.match_info["ruleChainId"])))


@route("GET", "/api/ruleChain/{ruleChainId}/metadata", "A rule chain's nodes and connections", "ruleChain")
async def get_metadata(request: web.Request) -> web.Response:
    rc = _own_chain(request, request.match_info["ruleChainId"])
    return ok_json(platform(request).store.rule_chain_metadata(rc.id))


@route("DELETE", "/api/ruleChain/{ruleChainId}", "Delete a rule chain", "ruleChain")
async def delete_rule_chain(request: web.Request) -> web.Response:
    rc = _own_chain(request, request.match_info["ruleChainId"])
    await platform(request).store.delete_rule_chain(rc.id)
    return ok_empty()


@route("POST", "/api/ruleChain/{ruleChainId}/root", "Make a chain the tenant's root chain", "ruleChain")
async def set_root(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    rc = _own_chain(request, request.match_info["ruleChainId"])
    if rc.type != "CORE":
        raise errors.bad_request("Only CORE rule chains can be root")
    return ok_json(rule_chain_json(await platform(request).store.set_root_rule_chain(principal.tenant_id, rc.id)))


_SORT = {"createdTime": lambda r: r.created_time, "name": lambda r: r.name, "root": lambda r: str(r.root)}


@route("GET", "/api/ruleChains", "Rule chains (paged)", "ruleChain",
       params=[*PAGE_PARAMS, Param("type", enum=["CORE", "EDGE"])])
async def rule_chains(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    rtype = request.query.get("type") or "CORE"
    items = [rc for rc in platform(request).store.rule_chains(principal.tenant_id) if rc.type == rtype]
    return page(request, items, _SORT, lambda r: (r.name,), rule_chain_json)


@route("GET", "/api/ruleChains/export", "Export chains with their metadata", "ruleChain",
       params=[Param("limit", "integer", True)])
async def export_chains(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    store = platform(request).store
    chains = sorted(store.rule_chains(principal.tenant_id), key=lambda r: r.created_time)
    return ok_json({"ruleChains": [rule_chain_json(rc) for rc in chains],
                    "metadata": [store.rule_chain_metadata(rc.id) for rc in chains]})
