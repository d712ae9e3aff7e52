"""Script nodes (filter, switch, transform, log) on the embedded V8 (rules/script.py), with
ThingsBoard's return conventions: a filter returns a boolean, a switch a relation name or an array of
them, a transform ``{msg, metadata, msgType}`` or an array of such objects, a log a string. A script
error, a time-out or a result of the wrong type sends the message to Failure, as on ThingsBoard."""

from __future__ import annotations

import json
import logging

from tbspark.platform.rules.nodes import PKG, Node, NodeConfigError, register
from tbspark.platform.rules.script import SCRIPT_TIMEOUT_MS, Script, json_type

log = logging.getLogger(__name__)

# TbLogNodeConfiguration's default script (JS and TBEL alike): ThingsBoard logs such a node's
# messages without running the script, and so does the platform.
STANDARD_LOG_SCRIPT = ("return '\\nIncoming message:\\n' + JSON.stringify(msg) + "
                       "'\\nIncoming metadata:\\n' + JSON.stringify(metadata);")


def _text(value) -> str:
    """A metadata value as ThingsBoard's Map<String, String> conversion leaves it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class ScriptNode(Node):
    """A node running its configured script: ``scriptLang`` JS (``jsScript``) or TBEL (``tbelScript``);
    no ``scriptLang`` means JS, as ThingsBoard reads configurations saved before TBEL existed."""

    JS_FIELD = "jsScript"
    TBEL_FIELD = "tbelScript"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        lang = self.config.get("scriptLang") or "JS"
        if lang not in ("JS", "TBEL"):
            raise NodeConfigError(f"scriptLang must be JS or TBEL, not {lang!r}")
        self.lang = lang
        body = self.config.get(self.TBEL_FIELD if lang == "TBEL" else self.JS_FIELD)
        if not isinstance(body, str):
            raise NodeConfigError(f"{self.TBEL_FIELD if lang == 'TBEL' else self.JS_FIELD} (the script) is missing")
        self.body = body
        self.script: Script | None = None
        self.timeout_ms = SCRIPT_TIMEOUT_MS

    def _script(self) -> Script:
        if self.script is None:
            self.script = Script(self.body, self.lang, self.timeout_ms)
        return self.script

    async def run(self, msgs) -> list:
        args = [(m.data_json(), json.dumps(m.metadata, ensure_ascii=False), m.type) for m in msgs]
        return await self._script().run(args)

    @staticmethod
    def fail(m, reason: str):
        m.metadata["error"] = reason
        return ("Failure", m)

    async def close(self) -> None:
        if self.script is not None:
            self.script.close()

    def counters(self) -> dict:
        return {"script_timeouts": self.script.timeouts} if self.script is not None else {}


def _wrong(value) -> str:
    return f"ClassCastException: Wrong result type: {json_type(value)}"


@register
class TbJsFilterNode(ScriptNode):
    TYPE = PKG + "filter.TbJsFilterNode"

    async def process(self, msgs):
        out = []
        for m, (ok, value) in zip(msgs, await self.run(msgs)):
            if not ok:
                out.append(self.fail(m, value))
            elif isinstance(value, bool):
                out.append(("True" if value else "False", m))
            else:
                out.append(self.fail(m, _wrong(value)))
        return out


@register
class TbJsSwitchNode(ScriptNode):
    TYPE = PKG + "filter.TbJsSwitchNode"

    async def process(self, msgs):
        out = []
        for m, (ok, value) in zip(msgs, await self.run(msgs)):
            if not ok:
                out.append(self.fail(m, value))
            elif isinstance(value, str):
                out.append((value, m))
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                relations = list(dict.fromkeys(value))  # a set on ThingsBoard: each relation once
                # Every relation after the first gets its own copy: a later node may change it.
                out.extend((rel, m if i == 0 else m.copy()) for i, rel in enumerate(relations))
            else:
                bad = next((v for v in value if not isinstance(v, str)), None) if isinstance(value, list) else value
                out.append(self.fail(m, _wrong(bad)))
        return out


@register
class TbTransformMsgNode(ScriptNode):
    """``{msg, metadata, msgType}`` replaces what it names (absent parts stay); an array makes one
    message per element, each sent on Success; an empty array is a Failure, as on ThingsBoard."""
    TYPE = PKG + "transform.TbTransformMsgNode"
    MULTIPLIES = True  # one message in, several out: the engine counts executions per message

    async def process(self, msgs):
        out = []
        for m, (ok, value) in zip(msgs, await self.run(msgs)):
            if not ok:
                out.append(self.fail(m, value))
                continue
            parts = value if isinstance(value, list) else [value]
            if not parts:
                out.append(self.fail(m, "RuntimeException: Message or messages list are empty!"))
                continue
            bad = [p for p in parts if not isinstance(p, dict)]
            if bad:
                out.append(self.fail(m, _wrong(bad[0])))
                continue
            for i, part in enumerate(parts):
                target = m if i == len(parts) - 1 else m.copy()
                if "msg" in part:
                    target.data = part["msg"]
                if "metadata" in part:
                    md = part["metadata"]
                    target.metadata = {str(k): _text(v) for k, v in md.items()} if isinstance(md, dict) else {}
                mtype = part.get("msgType")
                if mtype:
                    target.type = _text(mtype)
                out.append(("Success", target))
        return out


@register
class TbLogNode(ScriptNode):
    """Logs the script's string at INFO (logger ``tbspark.platform.rules.nodes.script``); the default
    script is not run, the message is logged as ThingsBoard's TbLogNode logs it."""
    TYPE = PKG + "action.TbLogNode"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.standard = self.body == STANDARD_LOG_SCRIPT

    def process(self, msgs):
        if self.standard:
            if log.isEnabledFor(logging.INFO):
                for m in msgs:
                    log.info("\nIncoming message:\n%s\nIncoming metadata:\n%s", m.data_json(),
                             json.dumps(m.metadata, ensure_ascii=False, separators=(",", ":")))
            return [("Success", m) for m in msgs]
        return self._scripted(msgs)

    async def _scripted(self, msgs):
        out = []
        for m, (ok, value) in zip(msgs, await self.run(msgs)):
            if not ok:
                out.append(self.fail(m, value))
            elif isinstance(value, str):
                log.info("%s", value)
                out.append(("Success", m))
            else:
                out.append(self.fail(m, _wrong(value)))
        return out
