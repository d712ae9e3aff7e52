"""Entity storage: tenants, users, device and asset profiles (devices and assets: devices.py).

All entities live in memory (dicts, the hot-path caches) and in SQLite's ``entity`` table as JSON docs;
a change is applied to memory only after its transaction committed. Name clashes are caught by the
UNIQUE (kind, tenant, name) constraint, so two concurrent creates cannot both win.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from typing import Any, Callable, Iterable

from tbspark.platform.errors import BadRequest, NotFound
from tbspark.platform.store.models import (
    NULL_UUID, Asset, AssetProfile, Device, DeviceProfile, Tenant, User, new_id, now_ms,
)

KIND_OF = {Tenant: "tenant", User: "user", DeviceProfile: "device_profile", AssetProfile: "asset_profile",
           Device: "device", Asset: "asset"}


def put(conn: sqlite3.Connection, obj: Any, name: str) -> None:
    conn.execute(
        "INSERT INTO entity(id, kind, tenant_id, name, doc) VALUES (?,?,?,?,?) "
        "ON CONFLICT(id) DO UPDATE SET name=excluded.name, doc=excluded.doc",
        (obj.id, KIND_OF.get(type(obj), getattr(obj, "_kind", "rule_chain")), obj.tenant_id, name,
         json.dumps(obj.to_doc())),
    )


class EntityStore:
    """Mixin of :class:`Store`; needs ``self._writer`` and ``self._chain_listeners``."""

    def _load_entities(self, conn: sqlite3.Connection) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.users: dict[str, User] = {}
        self._users_by_email: dict[str, User] = {}
        self._device_profiles: dict[str, DeviceProfile] = {}
        self._asset_profiles: dict[str, AssetProfile] = {}
        self._devices: dict[str, Device] = {}
        self._devices_by_name: dict[tuple[str, str], Device] = {}
        self._devices_by_token: dict[str, Device] = {}
        self._assets: dict[str, Asset] = {}
        self._assets_by_name: dict[tuple[str, str], Asset] = {}
        loaders = {"tenant": (Tenant, self._cache_tenant), "user": (User, self._cache_user),
                   "device_profile": (DeviceProfile, self._cache_device_profile),
                   "asset_profile": (AssetProfile, self._cache_asset_profile),
                   "device": (Device, self._cache_device), "asset": (Asset, self._cache_asset)}
        for kind, doc in conn.execute("SELECT kind, doc FROM entity"):
            if kind in loaders:
                cls, cache = loaders[kind]
                cache(cls.from_doc(json.loads(doc)))

    # -- write helpers ---------------------------------------------------------------------------

    def _write_sync(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return self._writer.run(fn)

    async def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        fut = self._writer.submit(fn, small=True)
        return fut.result() if fut.done() else await asyncio.wrap_future(fut)

    @staticmethod
    def _unique(fn: Callable[[sqlite3.Connection], Any], message: str) -> Callable[[sqlite3.Connection], Any]:
        def run(conn: sqlite3.Connection) -> Any:
            try:
                return fn(conn)
            except sqlite3.IntegrityError as exc:
                raise BadRequest(message) from exc
        return run

    # -- caches ----------------------------------------------------------------------------------

    def _cache_tenant(self, t: Tenant) -> None:
        self.tenants[t.id] = t

    def _cache_user(self, u: User) -> None:
        old = self.users.get(u.id)
        if old:
            self._users_by_email.pop(old.email, None)
        self.users[u.id] = u
        self._users_by_email[u.email] = u

    def _cache_device_profile(self, p: DeviceProfile) -> None:
        self._device_profiles[p.id] = p

    def _cache_asset_profile(self, p: AssetProfile) -> None:
        self._asset_profiles[p.id] = p

    def _cache_device(self, d: Device) -> None:
        self._uncache_device(d.id)
        self._devices[d.id] = d
        self._devices_by_name[(d.tenant_id, d.name)] = d
        self._devices_by_token[d.token] = d

    def _uncache_device(self, device_id: str) -> None:
        old = self._devices.pop(device_id, None)
        if old:
            self._devices_by_name.pop((old.tenant_id, old.name), None)
            self._devices_by_token.pop(old.token, None)

    def _cache_asset(self, a: Asset) -> None:
        old = self._assets.pop(a.id, None)
        if old:
            self._assets_by_name.pop((old.tenant_id, old.name), None)
        self._assets[a.id] = a
        self._assets_by_name[(a.tenant_id, a.name)] = a

    # -- tenants and users -----------------------------------------------------------------------

    def create_tenant(self, title: str) -> Tenant:
        t = Tenant(new_id(), title, now_ms())
        dp = DeviceProfile(new_id(), t.id, "default", now_ms(), is_default=True,
                           description="Default device profile", fields=_default_profile_fields())
        ap = AssetProfile(new_id(), t.id, "default", now_ms(), is_default=True, description="Default asset profile")

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO entity(id, kind, tenant_id, name, doc) VALUES (?,?,?,?,?)",
                         (t.id, "tenant", NULL_UUID, t.id, json.dumps(t.to_doc())))
            put(conn, dp, dp.name)
            put(conn, ap, ap.name)
        self._write_sync(fn)
        self._cache_tenant(t)
        self._cache_device_profile(dp)
        self._cache_asset_profile(ap)
        return t

    def save_user(self, user: User) -> User:
        self._write_sync(self._unique(lambda c: put(c, user, user.email), "User with email already exists!"))
        self._cache_user(user)
        return user

    def user_by_email(self, email: str) -> User | None:
        return self._users_by_email.get(email)

    # -- device profiles -------------------------------------------------------------------------

    async def _set_default(self, profiles: list, profile_id: str, cache: Callable[[Any], None]) -> None:
        """One transaction flips every profile of the tenant, so exactly one stays the default."""
        changed = [replace(p, is_default=(p.id == profile_id)) for p in profiles]

        def fn(conn: sqlite3.Connection) -> None:
            for p in changed:
                put(conn, p, p.name)
        await self._write(fn)
        for p in changed:
            cache(p)

    async def _delete_profile(self, profiles: dict, profile_id: str, entities: Iterable, kind: str) -> None:
        """``kind`` ("device" or "asset") words TB's refusals; ``entities`` are all of that kind."""
        if profiles[profile_id].is_default:
            raise BadRequest(f"Deletion of Default {kind.capitalize()} Profile is prohibited!")
        if any(e.profile_id == profile_id for e in entities):
            raise BadRequest(f"The {kind} profile referenced by the {kind}s cannot be deleted!")
        await self._write(lambda c: c.execute("DELETE FROM entity WHERE id=?", (profile_id,)))
        profiles.pop(profile_id, None)

    def device_profile(self, profile_id: str) -> DeviceProfile | None:
        return self._device_profiles.get(profile_id)

    def device_profiles(self, tenant_id: str) -> list[DeviceProfile]:
        return [p for p in self._device_profiles.values() if p.tenant_id == tenant_id]

    def device_profile_by_name(self, tenant_id: str, name: str) -> DeviceProfile | None:
        for p in self._device_profiles.values():
            if p.tenant_id == tenant_id and p.name == name:
                return p
        return None

    def default_device_profile(self, tenant_id: str) -> DeviceProfile:
        for p in self._device_profiles.values():
            if p.tenant_id == tenant_id and p.is_default:
                return p
        return self.find_or_create_device_profile(tenant_id, "default")

    def find_or_create_device_profile(self, tenant_id: str, name: str) -> DeviceProfile:
        """ThingsBoard's findOrCreateDeviceProfile (§3.3): a new profile per unseen device type."""
        found = self.device_profile_by_name(tenant_id, name)
        if found:
            return found
        p = DeviceProfile(new_id(), tenant_id, name, now_ms(), description="Default device profile",
                          fields=_default_profile_fields())

        def fn(conn: sqlite3.Connection) -> DeviceProfile:
            row = conn.execute("SELECT doc FROM entity WHERE kind='device_profile' AND tenant_id=? AND name=?",
                               (tenant_id, name)).fetchone()
            if row:
                return DeviceProfile.from_doc(json.loads(row[0]))
            put(conn, p, name)
            return p
        saved = self._write_sync(fn)
        self._cache_device_profile(saved)
        return saved

    async def save_device_profile(self, p: DeviceProfile) -> DeviceProfile:
        old = self._device_profiles.get(p.id)
        if old and old.tenant_id != p.tenant_id:
            raise NotFound(f"Device profile with id [{p.id}] is not found")
        await self._write(self._unique(lambda c: put(c, p, p.name), "Device profile with such name already exists!"))
        self._cache_device_profile(p)
        if old is None or old.default_rule_chain_id != p.default_rule_chain_id:
            self._notify_chains(None)
        return p

    async def set_default_device_profile(self, tenant_id: str, profile_id: str) -> DeviceProfile:
        await self._set_default(self.device_profiles(tenant_id), profile_id, self._cache_device_profile)
        return self._device_profiles[profile_id]

    async def delete_device_profile(self, profile_id: str) -> None:
        await self._delete_profile(self._device_profiles, profile_id, self._devices.values(), "device")
        self._notify_chains(None)

    # -- asset profiles --------------------------------------------------------------------------

    def asset_profile(self, profile_id: str) -> AssetProfile | None:
        return self._asset_profiles.get(profile_id)

    def asset_profiles(self, tenant_id: str) -> list[AssetProfile]:
        return [p for p in self._asset_profiles.values() if p.tenant_id == tenant_id]

    def find_or_create_asset_profile(self, tenant_id: str, name: str) -> AssetProfile:
        for p in self.asset_profiles(tenant_id):
            if p.name == name:
                return p
        p = AssetProfile(new_id(), tenant_id, name, now_ms(), description="Default asset profile")
        self._write_sync(lambda c: put(c, p, name))
        self._cache_asset_profile(p)
        return p

    def default_asset_profile(self, tenant_id: str) -> AssetProfile:
        for p in self.asset_profiles(tenant_id):
            if p.is_default:
                return p
        return self.find_or_create_asset_profile(tenant_id, "default")

    async def save_asset_profile(self, p: AssetProfile) -> AssetProfile:
        await self._write(self._unique(lambda c: put(c, p, p.name), "Asset profile with such name already exists!"))
        self._cache_asset_profile(p)
        return p

    async def set_default_asset_profile(self, tenant_id: str, profile_id: str) -> AssetProfile:
        await self._set_default(self.asset_profiles(tenant_id), profile_id, self._cache_asset_profile)
        return self._asset_profiles[profile_id]

    async def delete_asset_profile(self, profile_id: str) -> None:
        await self._delete_profile(self._asset_profiles, profile_id, self._assets.values(), "asset")


def _default_profile_fields() -> dict:
    return {"type": "DEFAULT", "transportType": "DEFAULT", "provisionType": "DISABLED",
            "profileData": {"configuration": {"type": "DEFAULT"}, "transportConfiguration": {"type": "DEFAULT"},
                            "provisionConfiguration": {"type": "DISABLED", "provisionDeviceSecret": None},
                            "alarms": None}}
