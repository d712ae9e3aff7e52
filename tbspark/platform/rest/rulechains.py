"""/api/ruleChain*: rule-chain storage (§8.1). Chains are validated by the rule engine on save
(connections that loop → ThingsBoard's 400; a known node's configuration the platform cannot execute
→ 400 naming it; node types it does not execute are saved, as ThingsBoard saves them); executing
them is platform/rules/."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from tbspark.platform import errors
from tbspark.platform.rest.common import (
    PAGE_PARAMS, Param, eid, id_from, json_object, ok_empty, ok_json, page, parse_uuid, platform, required_name, route,
    tenant_admin,
)
from tbspark.platform.store import RuleChain
from tbspark.platform.store.models import new_id, now_ms

SWITCH = "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode"
SAVE_TS = "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode"
SAVE_ATTRS = "org.thingsboard.rule.engine.telemetry.TbMsgAttributesNode"
RPC_CALL = "org.thingsboard.rule.engine.rpc.TbSendRPCRequestNode"


def root_chain_metadata() -> dict:
    """ThingsBoard's stock root chain without its log nodes: switch → save ts / save client attributes /
    RPC call request (server-side RPC goes through the chain, as on ThingsBoard)."""
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
            {"type": RPC_CALL, "name": "RPC Call Request", "configurationVersion": 0,
             "configuration": {"timeoutInSeconds": 60}, "additionalInfo": {"layoutX": 824, "layoutY": 260}},
        ],
        "connections": [{"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"},
                        {"fromIndex": 0, "toIndex": 2, "type": "Post attributes"},
                        {"fromIndex": 0, "toIndex": 3, "type": "RPC Request to Device"}],
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
        raise errors.NotFound(f"Rule chain with id [{cid}] is not found")
    return rc


def _validate(request: web.Request, meta: dict) -> None:
    engine = platform(request).engine
    if engine is None:
        return
    problems = engine.validate_chain(meta)
    if problems:
        raise errors.BadRequest("; ".join(problems))


@route("POST", "/api/ruleChain", "Create or update a rule chain", "ruleChain", body="json")
async def save_rule_chain(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    body = await json_object(request)
    name = required_name(body, "Rule chain")
    rtype = body.get("type") or "CORE"
    if rtype not in ("CORE", "EDGE"):
        raise errors.BadRequest(f"No enum constant org.thingsboard.server.common.data.rule.RuleChainType.{rtype}")
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
        raise errors.BadRequest("Rule chain id should be specified!")
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
        raise errors.BadRequest("Only CORE rule chains can be root")
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


def _fresh_metadata(md: dict, chain_id: str) -> dict:
    """An exported chain's metadata for another chain: new node ids, no version (resetRuleNodeIds)."""
    out = {k: v for k, v in md.items() if k not in ("version", "ruleChainId")}
    out["nodes"] = [{k: v for k, v in n.items() if k not in ("id", "ruleChainId", "createdTime")}
                    if isinstance(n, dict) else n for n in md.get("nodes") or []]
    out["ruleChainId"] = {"entityType": "RULE_CHAIN", "id": chain_id}
    return out


@route("POST", "/api/ruleChains/import", "Import chains exported by /api/ruleChains/export", "ruleChain",
       body="json", params=[Param("overwrite", "boolean")])
async def import_chains(request: web.Request) -> web.Response:
    """ThingsBoard's importTenantRuleChains: every chain is created (or, with ``overwrite``, replaces
    the tenant's chain of the same type and name), never as root; then each metadata is saved under
    its chain's new id. Metadata are checked first, so a loop refuses the whole import."""
    principal = tenant_admin(request)
    body = await json_object(request)
    chains, metas = body.get("ruleChains"), body.get("metadata") or []
    if not isinstance(chains, list) or not all(isinstance(c, dict) for c in chains):
        raise errors.BadRequest("ruleChains must be a list of rule chains")
    if not isinstance(metas, list) or not all(isinstance(m, dict) for m in metas):
        raise errors.BadRequest("metadata must be a list of rule chain metadata")
    for md in metas:
        _validate(request, md)
    overwrite = request.query.get("overwrite", "false").lower() == "true"
    store = platform(request).store
    new_ids: dict[str, str] = {}
    results = []
    for raw in chains:
        old_id = id_from(raw, "id")
        rtype = raw.get("type") or "CORE"
        name = raw.get("name")
        result: dict = {}
        existing = None
        if overwrite:
            existing = next((rc for rc in sorted(store.rule_chains(principal.tenant_id), key=lambda r: r.created_time)
                             if rc.type == rtype and rc.name == name), None)
        try:
            required_name(raw, "Rule chain")
            if rtype not in ("CORE", "EDGE"):
                raise errors.BadRequest(f"No enum constant org.thingsboard.server.common.data.rule.RuleChainType.{rtype}")
            fields = dict(name=name, type=rtype, debug_mode=bool(raw.get("debugMode")),
                          configuration=raw.get("configuration"), additional_info=raw.get("additionalInfo"))
            if existing is not None:
                rc = await store.save_rule_chain(replace(existing, **fields))
                result["updated"] = True
            else:
                rc = await store.save_rule_chain(RuleChain(new_id(), principal.tenant_id, created_time=now_ms(),
                                                           **fields))
            if old_id:
                new_ids[old_id] = rc.id
            results.append({"ruleChainId": eid("RULE_CHAIN", rc.id), "ruleChainName": rc.name, **result})
        except errors.PlatformError as exc:
            results.append({"ruleChainId": None, "ruleChainName": name, "error": exc.message})
    for md in metas:
        old_id = id_from(md, "ruleChainId")
        cid = new_ids.get(old_id) if old_id else None
        if cid is not None:
            await store.save_rule_chain_metadata(cid, _fresh_metadata(md, cid))
    return ok_json(results)
