"""The platform's entities as plain dataclasses (what the store keeps; REST renders them as TB JSON)."""

from __future__ import annotations

import secrets
import string
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

NULL_UUID = "13814000-1dd2-11b2-8080-808080808080"  # ThingsBoard's "no customer"
_TOKEN_ALPHABET = string.ascii_letters + string.digits


def new_id() -> str:
    return str(uuid.uuid4())


def now_ms() -> int:
    return int(time.time() * 1000)


def random_token(length: int = 20) -> str:
    """ThingsBoard's random access token: 20 alphanumeric characters."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))


class _Doc:
    """Round-trip through the store's JSON ``doc`` column."""

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_doc(cls, doc: dict[str, Any]):
        names = cls.__dataclass_fields__  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in doc.items() if k in names})


@dataclass
class Tenant(_Doc):
    id: str
    title: str
    created_time: int


@dataclass
class User(_Doc):
    id: str
    tenant_id: str  # NULL_UUID for the sysadmin
    customer_id: str
    email: str
    authority: str  # SYS_ADMIN | TENANT_ADMIN | CUSTOMER_USER
    password_hash: str
    created_time: int
    first_name: str | None = None
    last_name: str | None = None
    enabled: bool = True
    additional_info: dict | None = None


@dataclass
class _Profile(_Doc):
    """ThingsBoard keeps device and asset profiles alike; only the kind (the subclass) tells them apart."""

    id: str
    tenant_id: str
    name: str
    created_time: int
    is_default: bool = False
    default_rule_chain_id: str | None = None
    description: str | None = None
    version: int = 1
    # Every other TB field (type, transportType, provisionType, profileData, image, defaultQueueName, …)
    # kept as sent so a read-modify-write round-trips.
    fields: dict = field(default_factory=dict)


@dataclass
class DeviceProfile(_Profile):
    pass


@dataclass
class AssetProfile(_Profile):
    pass


@dataclass
class Device(_Doc):
    id: str
    tenant_id: str
    customer_id: str
    name: str
    type: str
    profile_id: str
    additional_info: dict | None
    token: str
    created_time: int
    label: str | None = None
    version: int = 1
    credentials_row_id: str = ""
    device_data: dict | None = None
    fields: dict = field(default_factory=dict)  # firmwareId, softwareId, externalId as sent


@dataclass
class Asset(_Doc):
    id: str
    tenant_id: str
    customer_id: str
    name: str
    type: str
    profile_id: str
    created_time: int
    label: str | None = None
    additional_info: dict | None = None
    version: int = 1
    fields: dict = field(default_factory=dict)


@dataclass
class RuleChain(_Doc):
    id: str
    tenant_id: str
    name: str
    created_time: int
    type: str = "CORE"
    root: bool = False
    debug_mode: bool = False
    configuration: Any = None
    additional_info: Any = None
    first_rule_node_id: str | None = None
    version: int = 1
    metadata_version: int = 1
    metadata: dict | None = None  # TB RuleChainMetaData JSON as saved (node ids filled in)
