"""Copy / rename / delete key nodes (configuration version 2 and the older ``fromMetadata`` form)."""

from __future__ import annotations

import json
import re

from tbspark.platform.rules.nodes import PKG, NodeConfigError, StepNode, register


def _source(config: dict, key: str) -> str:
    """``copyFrom``/``renameIn``/``deleteFrom`` (v2) or ``fromMetadata`` (v0) → "DATA" | "METADATA"."""
    if key in config:
        value = config[key]
        if value not in ("DATA", "METADATA"):
            raise NodeConfigError(f"{key} must be DATA or METADATA, not {value!r}")
        return value
    return "METADATA" if config.get("fromMetadata") else "DATA"


def _regexes(config: dict) -> list[re.Pattern]:
    keys = config.get("keys") or []
    if not isinstance(keys, list):
        raise NodeConfigError("keys must be a list of regular expressions")
    try:
        return [re.compile(k) for k in keys]
    except re.error as exc:
        raise NodeConfigError(f"invalid key pattern: {exc}") from exc


def _text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _matches(patterns, key: str) -> bool:
    for p in patterns:
        if p.fullmatch(key):
            return True
    return False


def _literals(patterns) -> list | None:
    """The keys themselves, in config order, when every pattern is a plain name (the usual case)."""
    names = list(dict.fromkeys(p.pattern for p in patterns))
    return names if all(re.escape(n) == n for n in names) else None


class _KeysNode(StepNode):
    SOURCE_FIELD = ""  # the config field naming DATA or METADATA (version 2; fromMetadata before)

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.source = _source(self.config, self.SOURCE_FIELD)

    def _target(self, m):
        """The dict the node edits: the metadata, or the message data (None, with an error noted,
        when the data is not a JSON object)."""
        if self.source == "METADATA":
            return m.metadata
        if isinstance(m.data, dict):
            return m.data
        m.metadata["error"] = "Message data is not a JSON object"
        return None


@register
class TbCopyKeysNode(_KeysNode):
    TYPE = PKG + "transform.TbCopyKeysNode"
    SOURCE_FIELD = "copyFrom"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.patterns = _regexes(self.config)
        self.literal = _literals(self.patterns)

    def step(self, m) -> str:
        data = m.data
        if not isinstance(data, dict):
            m.metadata["error"] = "Message data is not a JSON object"
            return "Failure"
        if self.source == "METADATA":  # metadata → data, as strings
            md = m.metadata
            literal = self.literal
            if literal is not None:
                for k in literal:
                    if k in md:
                        data[k] = md[k]
                return "Success"
            for k, v in list(md.items()):
                if _matches(self.patterns, k):
                    data[k] = v
        else:  # data → metadata, non-text values as JSON text
            for k, v in data.items():
                if _matches(self.patterns, k):
                    m.metadata[k] = _text(v)
        return "Success"


@register
class TbRenameKeysNode(_KeysNode):
    TYPE = PKG + "transform.TbRenameKeysNode"
    SOURCE_FIELD = "renameIn"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        mapping = self.config.get("renameKeysMapping")
        if not isinstance(mapping, dict) or not mapping:
            raise NodeConfigError("renameKeysMapping must be a non-empty object {old: new}")
        self.mapping = mapping

    def step(self, m) -> str:
        target = self._target(m)
        if target is None:
            return "Failure"
        for old, new in self.mapping.items():
            if old in target:
                target[new] = target.pop(old)
        return "Success"


@register
class TbDeleteKeysNode(_KeysNode):
    TYPE = PKG + "transform.TbDeleteKeysNode"
    SOURCE_FIELD = "deleteFrom"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.patterns = _regexes(self.config)

    def step(self, m) -> str:
        target = self._target(m)
        if target is None:
            return "Failure"
        for k in [k for k in target if _matches(self.patterns, k)]:
            del target[k]
        return "Success"
