"""Filter and switch nodes: message type switch/filter, device profile switch, originator type switch,
check fields presence, and the stock root chain's device-profile node (alarm rules not evaluated)."""

from __future__ import annotations

from tbspark.platform.rules.msg import RELATION_OF_TYPE
from tbspark.platform.rules.nodes import PKG, Node, NodeConfigError, StepNode, register


@register
class TbMsgTypeSwitchNode(StepNode):
    TYPE = PKG + "filter.TbMsgTypeSwitchNode"

    def step(self, m) -> str:
        return RELATION_OF_TYPE.get(m.type, "Other")

    def process(self, msgs):
        return [(RELATION_OF_TYPE.get(m.type, "Other"), m) for m in msgs]


@register
class TbMsgTypeFilterNode(Node):
    TYPE = PKG + "filter.TbMsgTypeFilterNode"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        types = self.config.get("messageTypes") or []
        if not isinstance(types, list):
            raise NodeConfigError("messageTypes must be a list of message types")
        self.types = set(types)

    def process(self, msgs):
        return [("True" if m.type in self.types else "False", m) for m in msgs]


@register
class TbDeviceTypeSwitchNode(Node):
    """Device profile switch: relation = the originator device's profile name."""
    TYPE = PKG + "filter.TbDeviceTypeSwitchNode"

    def process(self, msgs):
        out = []
        for m in msgs:
            if m.originator[0] != "DEVICE":
                out.append(("Failure", m))
                m.metadata["error"] = f"Unsupported originator type: {m.originator[0]}!"
                continue
            name = m.metadata.get("deviceType")
            if name is None:
                dev = self.store.device_by_id(m.originator[1])
                name = dev.type if dev is not None else None
            out.append((name, m) if name else ("Failure", m))
        return out


@register
class TbOriginatorTypeSwitchNode(Node):
    TYPE = PKG + "filter.TbOriginatorTypeSwitchNode"
    _NAMES = {"DEVICE": "Device", "ASSET": "Asset", "CUSTOMER": "Customer", "TENANT": "Tenant",
              "RULE_CHAIN": "Rule chain", "USER": "User", "ENTITY_VIEW": "Entity View"}

    def process(self, msgs):
        return [(self._NAMES.get(m.originator[0], m.originator[0]), m) for m in msgs]


@register
class TbDeviceProfileNode(Node):
    """The stock root chain's first node (≤4.2). Alarm rules are not evaluated; messages pass."""
    TYPE = PKG + "profile.TbDeviceProfileNode"

    def process(self, msgs):
        return [("Success", m) for m in msgs]


@register
class TbCheckMessageNode(StepNode):
    TYPE = PKG + "filter.TbCheckMessageNode"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.data_names = list(self.config.get("messageNames") or [])
        self.md_names = list(self.config.get("metadataNames") or [])
        self.check_all = bool(self.config.get("checkAllKeys", True))
        if not self.data_names and not self.md_names:
            raise NodeConfigError("at least one of messageNames / metadataNames must be given")

    def step(self, m) -> str:
        data = m.data
        if not isinstance(data, dict):
            m.metadata["error"] = "Message data is not a JSON object"
            return "Failure"
        md = m.metadata
        if self.check_all:
            for k in self.data_names:
                if k not in data:
                    return "False"
            for k in self.md_names:
                if k not in md:
                    return "False"
            return "True"
        for k in self.data_names:
            if k in data:
                return "True"
        for k in self.md_names:
            if k in md:
                return "True"
        return "False"
