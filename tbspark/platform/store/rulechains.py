"""Rule-chain storage (§8.1): chains, their metadata with node ids, the tenant's root chain.

Executing chains is the rule engine's job (platform/rules/); it reads them through
``root_rule_chain_id`` / ``rule_chain_metadata`` and hears about changes via chain listeners.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from dataclasses import replace
from typing import Any, Callable

from tbspark.platform.errors import BadRequest, Conflict
from tbspark.platform.rules.validate import cycle_error
from tbspark.platform.store.models import RuleChain, new_id, now_ms

PKG = "org.thingsboard.rule.engine."
RPC_NODE = PKG + "rpc.TbSendRPCRequestNode"
# The root chain the platform created before server-side RPC went through the chain: message type
# switch → save time series / save client attributes. Loaded, it gets ThingsBoard's RPC call request
# node, without which RPC would now go nowhere.
_LEGACY_ROOT = ([PKG + "filter.TbMsgTypeSwitchNode", PKG + "telemetry.TbMsgTimeseriesNode",
                 PKG + "telemetry.TbMsgAttributesNode"],
                {(0, 1, "Post telemetry"), (0, 2, "Post attributes")})


def _put_chain(conn: sqlite3.Connection, rc: RuleChain) -> None:
    # Chain names are not unique in ThingsBoard, so the unique-name column holds the id.
    conn.execute(
        "INSERT INTO entity(id, kind, tenant_id, name, doc) VALUES (?,'rule_chain',?,?,?) "
        "ON CONFLICT(id) DO UPDATE SET doc=excluded.doc",
        (rc.id, rc.tenant_id, rc.id, json.dumps(rc.to_doc())),
    )


class RuleChainStore:
    """Mixin of :class:`Store`."""

    def _load_rule_chains(self, conn: sqlite3.Connection) -> None:
        self._rule_chains: dict[str, RuleChain] = {}
        self._chain_listeners: list[Callable[[str | None], Any]] = []
        upgraded = []
        for (doc,) in conn.execute("SELECT doc FROM entity WHERE kind='rule_chain'"):
            rc = RuleChain.from_doc(json.loads(doc))
            if rc.root and _is_legacy_root(rc.metadata):
                rc = replace(rc, metadata=_with_rpc_node(rc.metadata))
                upgraded.append(rc)
            self._rule_chains[rc.id] = rc
        for rc in upgraded:
            _put_chain(conn, rc)
        if upgraded and conn.in_transaction:
            conn.commit()

    def add_chain_listener(self, cb: Callable[[str | None], Any]) -> None:
        """``cb(chain_id)`` after a chain's metadata changed; ``cb(None)`` when the root chain or a
        profile's defaultRuleChainId changed (routing may differ for every device)."""
        self._chain_listeners.append(cb)

    def _notify_chains(self, chain_id: str | None) -> None:
        for cb in list(self._chain_listeners):
            try:
                cb(chain_id)
            except Exception:  # a listener's bug must not fail the REST call that saved the chain
                import logging
                logging.getLogger(__name__).exception("chain listener failed")

    def rule_chain(self, chain_id: str) -> RuleChain | None:
        return self._rule_chains.get(chain_id)

    def rule_chains(self, tenant_id: str) -> list[RuleChain]:
        return [rc for rc in self._rule_chains.values() if rc.tenant_id == tenant_id]

    def root_rule_chain_id(self, tenant_id: str) -> str | None:
        for rc in self._rule_chains.values():
            if rc.tenant_id == tenant_id and rc.root and rc.type == "CORE":
                return rc.id
        return None

    def rule_chain_metadata(self, chain_id: str) -> dict | None:
        rc = self._rule_chains.get(chain_id)
        if rc is None:
            return None
        if rc.metadata is None:
            return {"ruleChainId": {"entityType": "RULE_CHAIN", "id": rc.id}, "version": rc.metadata_version,
                    "firstNodeIndex": None, "nodes": [], "connections": [], "ruleChainConnections": None}
        return copy.deepcopy(rc.metadata)

    async def save_rule_chain(self, rc: RuleChain, expected_version: int | None = None) -> RuleChain:
        old = self._rule_chains.get(rc.id)
        if old is not None:
            if expected_version is not None and expected_version != old.version:
                raise Conflict("Rule chain")
            rc = replace(rc, version=old.version + 1, root=old.root, metadata=old.metadata,
                         metadata_version=old.metadata_version, first_rule_node_id=old.first_rule_node_id)
        await self._write(lambda c: _put_chain(c, rc))
        self._rule_chains[rc.id] = rc
        return rc

    def save_rule_chain_sync(self, rc: RuleChain) -> RuleChain:
        self._writer.run(lambda c: _put_chain(c, rc))
        self._rule_chains[rc.id] = rc
        return rc

    def _apply_metadata(self, rc: RuleChain, meta: dict) -> RuleChain:
        """Fill in node ids (kept when given) and the chain's first node, as ThingsBoard stores them."""
        expected = meta.get("version")
        if expected is not None and expected != rc.metadata_version:
            raise Conflict("Rule chain metadata")
        nodes = []
        ts = now_ms()
        for node in meta.get("nodes") or []:
            if not isinstance(node, dict) or not node.get("type"):
                raise BadRequest("Rule node type should be specified!")
            n = dict(node)
            nid = (n.get("id") or {}).get("id") if isinstance(n.get("id"), dict) else None
            n["id"] = {"entityType": "RULE_NODE", "id": nid or new_id()}
            n.setdefault("createdTime", ts)
            n["ruleChainId"] = {"entityType": "RULE_CHAIN", "id": rc.id}
            n.setdefault("name", "")
            n.setdefault("debugMode", False)
            n.setdefault("singletonMode", False)
            n.setdefault("queueName", None)
            n.setdefault("configurationVersion", 0)
            n.setdefault("configuration", {})
            n.setdefault("additionalInfo", None)
            n.setdefault("externalId", None)
            nodes.append(n)
        first = meta.get("firstNodeIndex")
        if first is not None and not (isinstance(first, int) and 0 <= first < len(nodes)):
            raise BadRequest("Invalid firstNodeIndex")
        loop = cycle_error(meta.get("connections"))  # RuleChainDataValidator: no chain may loop
        if loop is not None:
            raise BadRequest(loop)
        connections = []
        for conn_info in meta.get("connections") or []:
            try:
                fi, ti, typ = conn_info["fromIndex"], conn_info["toIndex"], conn_info["type"]
            except (KeyError, TypeError):
                raise BadRequest("Rule chain connection must have fromIndex, toIndex and type") from None
            if not (isinstance(fi, int) and isinstance(ti, int) and 0 <= fi < len(nodes) and 0 <= ti < len(nodes)):
                raise BadRequest("Rule chain connection refers to a node index out of range")
            connections.append({"fromIndex": fi, "toIndex": ti, "type": typ})
        version = rc.metadata_version + 1
        stored = {"ruleChainId": {"entityType": "RULE_CHAIN", "id": rc.id}, "version": version,
                  "firstNodeIndex": first, "nodes": nodes, "connections": connections,
                  "ruleChainConnections": meta.get("ruleChainConnections")}
        first_id = nodes[first]["id"]["id"] if first is not None else None
        return replace(rc, metadata=stored, metadata_version=version, first_rule_node_id=first_id,
                       version=rc.version + 1)

    async def save_rule_chain_metadata(self, chain_id: str, meta: dict) -> dict:
        rc = self._apply_metadata(self._rule_chains[chain_id], meta)
        await self._write(lambda c: _put_chain(c, rc))
        self._rule_chains[rc.id] = rc
        self._notify_chains(rc.id)
        return copy.deepcopy(rc.metadata)

    def save_rule_chain_metadata_sync(self, chain_id: str, meta: dict) -> dict:
        rc = self._apply_metadata(self._rule_chains[chain_id], meta)
        self._writer.run(lambda c: _put_chain(c, rc))
        self._rule_chains[rc.id] = rc
        self._notify_chains(rc.id)
        return copy.deepcopy(rc.metadata)

    async def set_root_rule_chain(self, tenant_id: str, chain_id: str) -> RuleChain:
        changed = [replace(rc, root=(rc.id == chain_id)) for rc in self.rule_chains(tenant_id)
                   if rc.root or rc.id == chain_id]

        def fn(conn: sqlite3.Connection) -> None:
            for rc in changed:
                _put_chain(conn, rc)
        await self._write(fn)
        for rc in changed:
            self._rule_chains[rc.id] = rc
        self._notify_chains(None)
        return self._rule_chains[chain_id]

    async def delete_rule_chain(self, chain_id: str) -> None:
        rc = self._rule_chains[chain_id]
        if rc.root:
            raise BadRequest("Deletion of Root Tenant Rule Chain is prohibited!")
        if any(p.default_rule_chain_id == chain_id for p in self._device_profiles.values()):
            # ThingsBoard: the fk_default_rule_chain_device_profile constraint, turned into this 400.
            raise BadRequest("The rule chain referenced by the device profiles cannot be deleted!")
        await self._write(lambda conn: conn.execute("DELETE FROM entity WHERE id=?", (chain_id,)))
        self._rule_chains.pop(chain_id, None)
        self._notify_chains(None)


def _is_legacy_root(meta: dict | None) -> bool:
    if not meta or not isinstance(meta.get("nodes"), list):
        return False
    types, conns = _LEGACY_ROOT
    return ([n.get("type") for n in meta["nodes"]] == types and meta.get("firstNodeIndex") == 0
            and {(c.get("fromIndex"), c.get("toIndex"), c.get("type")) for c in meta.get("connections") or []} == conns)


def _with_rpc_node(meta: dict) -> dict:
    meta = copy.deepcopy(meta)
    chain_id = meta.get("ruleChainId")
    meta["nodes"].append({"id": {"entityType": "RULE_NODE", "id": new_id()}, "createdTime": now_ms(),
                          "ruleChainId": chain_id, "type": RPC_NODE, "name": "RPC Call Request",
                          "debugMode": False, "singletonMode": False, "queueName": None,
                          "configurationVersion": 0, "configuration": {"timeoutInSeconds": 60},
                          "additionalInfo": {"layoutX": 824, "layoutY": 260}, "externalId": None})
    meta["connections"].append({"fromIndex": 0, "toIndex": len(meta["nodes"]) - 1, "type": "RPC Request to Device"})
    return meta
