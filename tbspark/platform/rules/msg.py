"""TbMsg: the message that flows through rule chains (type, originator, data, string metadata)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

POST_TELEMETRY = "POST_TELEMETRY_REQUEST"
POST_ATTRIBUTES = "POST_ATTRIBUTES_REQUEST"
TO_SERVER_RPC = "TO_SERVER_RPC_REQUEST"
ENTITY_CREATED = "ENTITY_CREATED"
CONNECT_EVENT = "CONNECT_EVENT"
DISCONNECT_EVENT = "DISCONNECT_EVENT"
TO_DEVICE_RPC = "RPC_CALL_FROM_SERVER_TO_DEVICE"  # server-side RPC from REST (TbMsgType, 3.6+)

# TbMsgType → the relation name the message type switch emits (TbMsgType.getRuleNodeConnection()).
RELATION_OF_TYPE = {
    POST_TELEMETRY: "Post telemetry",
    POST_ATTRIBUTES: "Post attributes",
    TO_SERVER_RPC: "RPC Request from Device",
    "TO_DEVICE_RPC_REQUEST": "RPC Request to Device",
    TO_DEVICE_RPC: "RPC Request to Device",
    "ATTRIBUTES_UPDATED": "Attributes Updated",
    "ATTRIBUTES_DELETED": "Attributes Deleted",
    "TIMESERIES_UPDATED": "Timeseries Updated",
    "ACTIVITY_EVENT": "Activity Event",
    "INACTIVITY_EVENT": "Inactivity Event",
    CONNECT_EVENT: "Connect Event",
    DISCONNECT_EVENT: "Disconnect Event",
    ENTITY_CREATED: "Entity Created",
    "ENTITY_UPDATED": "Entity Updated",
    "ENTITY_DELETED": "Entity Deleted",
}

_COMPACT = (",", ":")
_ENCODE = json.JSONEncoder(separators=_COMPACT, ensure_ascii=False).encode

try:
    from orjson import dumps as _fast_dumps
except ImportError:  # optional: data_bytes falls back to the json module
    _fast_dumps = None
# orjson output that may differ from the json module's (exponents, small floats as 0.0000…, NaN and
# infinities as null, escapes): such data (rare in telemetry) is encoded by the json module instead.
_MAY_DIFFER = re.compile(rb"0\.0000|[0-9][eE]|null|\\u")
# Value types whose orjson text is the json module's text (no floats, nulls or nested values): a flat
# object of these needs no scan of the output, only a look for escapes.
_PLAIN = frozenset((str, int, bool))


@dataclass(slots=True)
class TbMsg:
    type: str
    originator: tuple[str, str]  # (entity type, id), e.g. ("DEVICE", "<uuid>")
    data: Any                    # parsed JSON (dict for telemetry/attributes), values already typed
    metadata: dict[str, str]
    tenant_id: str | None = None
    customer_id: str | None = None
    chain_id: str | None = None  # None = resolve from the originator's profile, else root
    profile_id: str | None = None
    ts: int = 0                  # creation time, epoch ms
    id: str | None = None        # assigned lazily; nothing in the hot path needs one
    # Node executions so far of this message and every copy made of it, one shared box ([count]);
    # only kept on chains whose static bound exceeds the per-message cap (engine.Chain.counted).
    execs: list | None = None

    def copy(self) -> "TbMsg":
        data = self.data
        if isinstance(data, dict):
            data = dict(data)
        elif isinstance(data, list):
            data = list(data)
        return TbMsg(self.type, self.originator, data, dict(self.metadata), self.tenant_id,
                     self.customer_id, self.chain_id, self.profile_id, self.ts, None, self.execs)

    def data_json(self) -> str:
        """Data as ThingsBoard serializes it: compact JSON text (a string payload stays as is)."""
        if isinstance(self.data, str):
            return self.data
        return _ENCODE(self.data)

    def data_bytes(self) -> bytes:
        """``data_json()`` as UTF-8, byte for byte (orjson when installed and its text is the same)."""
        data = self.data
        if _fast_dumps is not None and type(data) is dict:
            try:
                out = _fast_dumps(data)
            except TypeError:  # integers beyond 64 bits, non-text keys, lone surrogates
                pass
            else:
                # ``out.find`` rather than ``b"\\" in out``: bytes.__contains__ first tries the needle as
                # an integer and swallows a TypeError, ~0.4 µs per call here.
                if out.find(b"\\") < 0:
                    for v in data.values():
                        t = type(v)
                        if t is float:
                            # orjson writes a float as Python's repr does (shortest digits,
                            # positional) from 1e-4 up to 1e16; outside, or 0.0, NaN, infinities:
                            # the scan below decides.
                            if not 1e-4 <= abs(v) < 1e16:
                                break
                        elif t is not str and t is not int and t is not bool:
                            break
                    else:  # only text, integers, booleans, floats in range: the json module's text
                        return out
                if not _MAY_DIFFER.search(out):
                    return out
        return self.data_json().encode("utf-8")
