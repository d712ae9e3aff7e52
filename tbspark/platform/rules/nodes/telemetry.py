"""Save time series and save attributes nodes: the writes a PUBACK waits for (store commits them
in groups, so a batch of messages costs one transaction)."""

from __future__ import annotations

import time

from tbspark.platform import values
from tbspark.platform.rules.msg import POST_ATTRIBUTES, POST_TELEMETRY
from tbspark.platform.rules.nodes import PKG, Node, NodeConfigError, gather_light, register

_SCOPES = ("CLIENT_SCOPE", "SHARED_SCOPE", "SERVER_SCOPE")


_KIND_OF = {bool: values.BOOLEAN, float: values.DOUBLE}
_I64 = (-(2**63), 2**63 - 1)


def _typed_items(data: dict):
    for k, v in data.items():
        t = type(v)
        if t is int and _I64[0] <= v <= _I64[1]:
            yield k, values.LONG, v  # the common case, without a call
        elif t in _KIND_OF:
            yield k, _KIND_OF[t], v
        else:
            kind, val = values.typed(v)
            if kind is not None:
                yield k, kind, val


def _unsupported(m, wanted: str):
    m.metadata["error"] = f"IllegalArgumentException: Unsupported msg type: {m.type}"
    return ("Failure", m)


@register
class TbMsgTimeseriesNode(Node):
    TYPE = PKG + "telemetry.TbMsgTimeseriesNode"
    CURRENT_VERSION = 1

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.use_server_ts = bool(self.config.get("useServerTs", False))
        settings = self.config.get("processingSettings") or {}
        self.mode = settings.get("type", "ON_EVERY_MESSAGE") if isinstance(settings, dict) else None
        if self.mode not in ("ON_EVERY_MESSAGE", "WEBSOCKETS_ONLY", "DEDUPLICATE", "ADVANCED"):
            raise NodeConfigError(f"processingSettings.type {self.mode!r} is not known")
        try:  # seconds; metadata "TTL" overrides it per message; 0 = kept (tenant default, which is 0)
            self.default_ttl = max(int(self.config.get("defaultTTL") or 0), 0)
        except (TypeError, ValueError):
            raise NodeConfigError("defaultTTL must be a number of seconds") from None

    def shares_input(self) -> bool:
        # A leaf only reads: its rows are built before the store await, and with no Failure
        # connection nobody would see an "error" it wrote, so it writes none (see process).
        return self.routed is not None and not self.routed

    async def process(self, msgs):
        out = []
        groups: dict = {}  # originator → (its rows, its messages), in arrival order
        now = int(time.time() * 1000)
        # A leaf never marks errors on messages: it may share them with another branch.
        tag = not self.shares_input()
        use_server_ts = self.use_server_ts
        i64_min, i64_max = _I64
        LONG, DOUBLE, BOOLEAN, typed = values.LONG, values.DOUBLE, values.BOOLEAN, values.typed  # noqa: N806
        # The metadata "ts" text of the previous message and its value: a batch's messages mostly
        # share the millisecond they arrived in, so most need a text comparison, not a parse.
        last_md_ts, last_ts = None, 0
        for m in msgs:
            if m.type != POST_TELEMETRY:
                out.append(_unsupported(m, POST_TELEMETRY) if tag else ("Failure", m))
                continue
            data = m.data
            if not isinstance(data, dict):
                if tag:
                    m.metadata["error"] = "Message data is not a JSON object"
                out.append(("Failure", m))
                continue
            if use_server_ts:
                ts = now
            else:
                md_ts = m.metadata.get("ts")
                if md_ts is not None and md_ts == last_md_ts:
                    ts = last_ts
                else:
                    ts = int(md_ts or m.ts or now)
                    if md_ts:
                        last_md_ts, last_ts = md_ts, ts
            origin = m.originator
            md_ttl = m.metadata.get("TTL")
            if md_ttl or self.default_ttl:  # points that expire: grouped apart, by TTL
                try:
                    ttl = int(md_ttl) if md_ttl else self.default_ttl
                except ValueError:
                    if tag:
                        m.metadata["error"] = f"NumberFormatException: For input string: \"{md_ttl}\""
                    out.append(("Failure", m))
                    continue
                if ttl > 0:
                    origin = (origin[0], origin[1], ttl)
            group = groups.get(origin)
            if group is None:
                rows = []
                groups[origin] = (rows, [m])
            else:
                rows = group[0]
                group[1].append(m)
            append = rows.append
            for k, v in data.items():  # _typed_items, inlined: this loop runs once per point
                t = type(v)
                if t is int and i64_min <= v <= i64_max:
                    append((ts, k, LONG, v))
                elif t is float:
                    append((ts, k, DOUBLE, v))
                elif t is bool:
                    append((ts, k, BOOLEAN, v))
                else:
                    kind, val = typed(v)
                    if kind is not None:
                        append((ts, k, kind, val))
        ok = 0  # successes of a leaf, counted instead of listed
        if self.mode != "WEBSOCKETS_ONLY" and groups:
            many = getattr(self.store, "save_timeseries_many", None)
            if many is not None:  # every entity of the batch in one write (one commit awaited)
                items = [(e[0], e[1], g[0]) if len(e) == 2 else (e[0], e[1], g[0], e[2])
                         for e, g in groups.items() if g[0]]
                try:
                    results = await many(items)
                except Exception as exc:  # the commit failed: nothing of this batch is saved
                    results = [exc] * len(groups)
                else:
                    if len(items) != len(groups):  # entities with no points to save: nothing failed
                        it = iter(results)
                        results = [next(it) if g[0] else None for g in groups.values()]
            else:
                save = self.store.save_timeseries
                results = await gather_light([save(e[0], e[1], g[0]) if len(e) == 2 else save(e[0], e[1], g[0], ttl_s=e[2])
                                              for e, g in groups.items()])
            if not tag and results.count(None) == len(results):
                ok = len(msgs) - len(out)  # every grouped message saved (the rest are in ``out``)
            else:
                for group, res in zip(groups.values(), results):
                    ms = group[1]
                    if isinstance(res, BaseException):
                        for m in ms:
                            if tag:
                                m.metadata["error"] = f"{type(res).__name__}: {res}"
                            out.append(("Failure", m))
                    elif tag:
                        out.extend([("Success", m) for m in ms])
                    else:
                        ok += len(ms)
        elif tag:
            out.extend(("Success", m) for g in groups.values() for m in g[1])
        else:
            ok = len(msgs) - len(out)
        if ok:
            # A leaf (no connection out): its successes lead nowhere, so they are counted, not listed.
            self.resume_count("Success", ok)
        return out


@register
class TbMsgAttributesNode(Node):
    TYPE = PKG + "telemetry.TbMsgAttributesNode"
    CURRENT_VERSION = 3

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.scope = self.config.get("scope", "SERVER_SCOPE")
        if self.scope not in _SCOPES:
            raise NodeConfigError(f"scope must be one of {', '.join(_SCOPES)}, not {self.scope!r}")

    async def process(self, msgs):
        out, jobs, owners = [], [], []
        now = int(time.time() * 1000)
        for m in msgs:
            if m.type != POST_ATTRIBUTES:
                out.append(_unsupported(m, POST_ATTRIBUTES))
                continue
            if not isinstance(m.data, dict):
                m.metadata["error"] = "Message data is not a JSON object"
                out.append(("Failure", m))
                continue
            scope = m.metadata.get("scope") or self.scope
            kv = {k: (kind, v) for k, kind, v in _typed_items(m.data)}
            jobs.append(self.store.save_attributes(m.originator[0], m.originator[1], scope, kv, now))
            owners.append(m)
        results = await gather_light(jobs)
        for m, res in zip(owners, results):
            if isinstance(res, BaseException):
                m.metadata["error"] = f"{type(res).__name__}: {res}"
                out.append(("Failure", m))
            else:
                out.append(("Success", m))
        return out
