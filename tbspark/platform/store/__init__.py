"""The embedded platform's storage: SQLite (WAL), one batched writer, in-memory entity caches."""

from tbspark.platform.store.models import (  # noqa: F401
    NULL_UUID, Asset, AssetProfile, Device, DeviceProfile, RuleChain, Tenant, User,
)
from tbspark.platform.store.store import Store  # noqa: F401
