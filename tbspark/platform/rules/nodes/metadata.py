"""Originator attributes (TbGetAttributesNode): client/shared/server attributes and latest time series
of the message originator into metadata (``cs_``/``shared_``/``ss_`` prefixes) or into the data."""

from __future__ import annotations

import json
import weakref

from tbspark.platform import values
from tbspark.platform.rules.nodes import PKG, Node, NodeConfigError, compile_pattern, register

_SCOPES = (("clientAttributeNames", "CLIENT_SCOPE", "cs_"),
           ("sharedAttributeNames", "SHARED_SCOPE", "shared_"),
           ("serverAttributeNames", "SERVER_SCOPE", "ss_"))


class AttributeCache:
    """Client/shared/server attributes per (entity, scope), all keys, shared by every originator-
    attributes node of one store. Kept right by the store's attribute change hook (writes and deletes
    of every scope, reset), which runs on the event loop once the write's transaction ended: a read
    after an acknowledged attribute write never sees the old value. Only loop-thread code uses it."""

    MAX_ENTRIES = 200_000  # (entity, scope) pairs; past it the cache starts over

    def __init__(self, store) -> None:
        self.store = store
        self._data: dict[tuple[str, str], dict] = {}
        self._by_entity: dict[str, set[str]] = {}
        self.hits = self.misses = 0
        # Nodes keeping values rendered from this cache: told ``forget(entity_id)`` (None: all) whenever
        # an entity's entries are dropped, in the same hook, so what they keep is never older.
        self._dependents: "weakref.WeakSet" = weakref.WeakSet()
        store.add_attribute_change_listener(self._invalidate)

    def add_dependent(self, node) -> None:
        self._dependents.add(node)

    def get(self, entity_type: str, entity_id: str, scope: str) -> dict:
        """``{key: (kind, value, last_update_ts)}`` of every attribute of the scope."""
        found = self._data.get((entity_id, scope))
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        found = self.store.get_attributes(entity_type, entity_id, scope, None)
        if len(self._data) >= self.MAX_ENTRIES:
            self._data.clear()
            self._by_entity.clear()
        self._data[(entity_id, scope)] = found
        self._by_entity.setdefault(entity_id, set()).add(scope)
        return found

    def _invalidate(self, entity_id, scope, keys) -> None:
        for node in list(self._dependents):
            node.forget(entity_id)
        if entity_id is None:
            self._data.clear()
            self._by_entity.clear()
            return
        scopes = self._by_entity.get(entity_id)
        if not scopes:
            return
        if scope is None:
            for sc in scopes:
                self._data.pop((entity_id, sc), None)
            del self._by_entity[entity_id]
        else:
            self._data.pop((entity_id, scope), None)
            scopes.discard(scope)
            if not scopes:
                del self._by_entity[entity_id]


_caches: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def attribute_cache(store) -> AttributeCache | None:
    """The store's shared cache; None for a store without the change hook (then read every time)."""
    if not hasattr(store, "add_attribute_change_listener"):
        return None
    cache = _caches.get(store)
    if cache is None:
        cache = _caches[store] = AttributeCache(store)
    return cache


def as_text(kind: str, value) -> str:
    """KvEntry.getValueAsString(): Java renderings, JSON as its text."""
    if kind == values.DOUBLE:
        return values.java_double(float(value))
    if kind == values.BOOLEAN:
        return "true" if value else "false"
    return str(value)


def as_data(kind: str, value):
    return json.loads(value) if kind == values.JSON and isinstance(value, str) else value


@register
class TbGetAttributesNode(Node):
    TYPE = PKG + "metadata.TbGetAttributesNode"
    CURRENT_VERSION = 1

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        cfg = self.config
        self.scopes = []
        for field, scope, prefix in _SCOPES:
            names = cfg.get(field) or []
            if not isinstance(names, list):
                raise NodeConfigError(f"{field} must be a list of attribute names")
            if names:
                self.scopes.append((scope, prefix, [compile_pattern(n) for n in names]))
        self.latest = [compile_pattern(n) for n in (cfg.get("latestTsKeyNames") or [])]
        self.fail_if_absent = bool(cfg.get("tellFailureIfAbsent", True))
        self.latest_with_ts = bool(cfg.get("getLatestValueWithTs", False))
        # Version 0 had a boolean fetchToData; its upgrade forces METADATA when that is absent (§8.1).
        if self.version >= 1 and "fetchTo" in cfg:
            self.fetch_to = cfg["fetchTo"]
        else:
            self.fetch_to = "DATA" if cfg.get("fetchToData") else "METADATA"
        if self.fetch_to not in ("DATA", "METADATA"):
            raise NodeConfigError(f"fetchTo must be DATA or METADATA, not {self.fetch_to!r}")
        self._attrs = attribute_cache(self.store) if self.scopes else None
        # Names without ${...}/$[...] are the same for every message: then the rendered metadata of an
        # originator is memoized against the cached attribute dict it came from (replaced, never
        # mutated, when the attributes change), so a repeat originator costs one dict update.
        raw_names = [n for field, _s, _p in _SCOPES for n in (cfg.get(field) or [])]
        self._static = None
        if all("$" not in str(n) for n in raw_names):
            self._static = [(scope, prefix, tuple(p(None) for p in patterns))
                            for scope, prefix, patterns in self.scopes]
        # originator id → (attribute dicts, metadata pairs, missing keys), rendered on the static path
        # and dropped by the cache's change hook (forget): valid as long as it is here.
        self._rendered: dict = {}
        if self._static is not None and self._attrs is not None:
            self._attrs.add_dependent(self)

    MAX_RENDERED = 200_000

    def forget(self, entity_id: str | None) -> None:
        """The attribute cache dropped ``entity_id`` (None: everything): its rendering goes too."""
        if entity_id is None:
            self._rendered.clear()
        else:
            self._rendered.pop(entity_id, None)

    def _render(self, etype: str, eid: str) -> tuple:
        """(attribute dicts it was rendered from, metadata pairs, missing keys) of one originator."""
        shared = self._attrs
        sources, pairs, missing = [], [], []
        for scope, prefix, keys in self._static:
            found = shared.get(etype, eid, scope)
            sources.append(found)
            for k in keys:
                entry = found.get(k)
                if entry is None:
                    missing.append(prefix + k)
                else:
                    pairs.append((prefix + k, as_text(entry[0], entry[1])))
        return sources, pairs, missing

    def fusable(self) -> bool:
        # The static path: fixed names, the shared cache, metadata only (step below).
        return self._static is not None and self._attrs is not None and not self.latest \
            and self.fetch_to == "METADATA"

    def step(self, m) -> str:
        """One message on the static path."""
        rendered = self._rendered
        etype, eid = m.originator
        memo = rendered.get(eid)
        if memo is None:
            if len(rendered) >= self.MAX_RENDERED:
                rendered.clear()
            memo = rendered[eid] = self._render(etype, eid)
        md = m.metadata
        md.update(memo[1])
        if memo[2] and self.fail_if_absent:
            md["error"] = ("RuntimeException: The following attribute/telemetry keys is not "
                           f"present in the DB: {list(memo[2])}")
            return "Failure"
        return "Success"

    def process(self, msgs):
        if self.fusable():
            step = self.step
            return [(step(m), m) for m in msgs]
        out = []
        cache: dict = {}  # one store read per originator, scope and key set within the batch
        shared = self._attrs
        for m in msgs:
            to_data = self.fetch_to == "DATA"
            if to_data and not isinstance(m.data, dict):
                m.metadata["error"] = "Message data is not a JSON object"
                out.append(("Failure", m))
                continue
            missing = []
            etype, eid = m.originator
            for scope, prefix, patterns in self.scopes:
                keys = tuple(p(m) for p in patterns)
                ck = (etype, eid, scope, keys)
                if shared is not None:
                    found = shared.get(etype, eid, scope)
                else:
                    found = cache.get(ck)
                    if found is None:
                        found = cache[ck] = self.store.get_attributes(etype, eid, scope, list(keys))
                for k in keys:
                    entry = found.get(k)
                    if entry is None:
                        missing.append(prefix + k)
                        continue
                    kind, value = entry[0], entry[1]
                    if to_data:
                        m.data[prefix + k] = as_data(kind, value)
                    else:
                        m.metadata[prefix + k] = as_text(kind, value)
            if self.latest:
                keys = [p(m) for p in self.latest]
                found = self.store.latest(eid, keys)
                for k in keys:
                    entry = found.get(k)
                    if entry is None:
                        missing.append(k)
                        continue
                    ts, kind, value = entry
                    if self.latest_with_ts:
                        v = {"ts": ts, "value": as_data(kind, value)}
                        if to_data:
                            m.data[k] = v
                        else:
                            m.metadata[k] = json.dumps(v, separators=(",", ":"))
                    elif to_data:
                        m.data[k] = as_data(kind, value)
                    else:
                        m.metadata[k] = as_text(kind, value)
            if missing and self.fail_if_absent:
                m.metadata["error"] = ("RuntimeException: The following attribute/telemetry keys is not "
                                       f"present in the DB: {missing}")
                out.append(("Failure", m))
            else:
                out.append(("Success", m))
        return out
