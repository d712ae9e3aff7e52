"""Rule chains as ThingsBoard saves them: script nodes, cycles, a chain still used by a profile."""

from __future__ import annotations

from tests.differential.exchanges import exchange
from tests.differential.harness import Target, Transcript

PKG = "org.thingsboard.rule.engine"


def _node(cls: str, name: str, config: dict) -> dict:
    return {"type": f"{PKG}.{cls}", "name": name, "debugMode": False, "singletonMode": False,
            "configurationVersion": 0, "configuration": config, "additionalInfo": {"layoutX": 0, "layoutY": 0}}


JS_FILTER = _node("filter.TbJsFilterNode", "JS filter", {"scriptLang": "JS", "jsScript": "return msg.t > 20;"})
LOG = _node("action.TbLogNode", "Log", {"scriptLang": "TBEL", "tbelScript": "return '' + msg;", "jsScript": ""})
SWITCH = _node("filter.TbMsgTypeSwitchNode", "Switch", {"version": 0})


@exchange
def rule_chains(t: Target, tr: Transcript) -> None:
    s = t.session()
    u = tr.unique
    made: list[str] = []

    def chain(name: str) -> dict:
        c = s.post(f"{t.url}/api/ruleChain", json={"name": f"tbdiff-{u}-{name}", "type": "CORE"}, timeout=30).json()
        made.append(c["id"]["id"])
        return c

    def save(c: dict, nodes: list, connections: list):
        return s.post(f"{t.url}/api/ruleChain/metadata", json={"ruleChainId": c["id"], "firstNodeIndex": 0,
                                                               "nodes": nodes, "connections": connections},
                      timeout=30)

    def shape(b):
        return {"nodes": sorted(n["type"].rsplit(".", 1)[1] for n in b["nodes"]), "connections": len(b.get("connections") or [])}

    scripts = chain("scripts")
    tr.http("script nodes saved", save(scripts, [JS_FILTER, LOG], [{"fromIndex": 0, "toIndex": 1, "type": "True"}]),
            shape)
    loop = chain("loop")
    tr.http("cycle refused", save(loop, [SWITCH, JS_FILTER], [{"fromIndex": 0, "toIndex": 1, "type": "Post telemetry"},
                                                              {"fromIndex": 1, "toIndex": 0, "type": "True"}]), shape)
    tr.http("self loop refused", save(loop, [SWITCH], [{"fromIndex": 0, "toIndex": 0, "type": "Other"}]), shape)
    used = chain("used")
    tr.http("plain chain saved", save(used, [SWITCH], []), shape)
    r = s.post(f"{t.url}/api/deviceProfile", json={
        "name": f"tbdiff-{u}-chainprof", "type": "DEFAULT", "transportType": "DEFAULT", "provisionType": "DISABLED",
        "profileData": {"configuration": {"type": "DEFAULT"}, "transportConfiguration": {"type": "DEFAULT"}},
        "defaultRuleChainId": used["id"]}, timeout=30)
    prof = r.json()
    tr.http("delete a chain a profile uses", s.delete(f"{t.url}/api/ruleChain/{used['id']['id']}", timeout=30))
    s.delete(f"{t.url}/api/deviceProfile/{prof['id']['id']}", timeout=30)
    for cid in made:
        s.delete(f"{t.url}/api/ruleChain/{cid}", timeout=30)
    tr.add("cleaned up", chains_left=[c for c in made if s.get(f"{t.url}/api/ruleChain/{c}", timeout=30).ok])
