"""Devices (+ their access tokens) and assets: in-memory caches over the store's ``entity`` table.

Lookups by token, id and name are dict hits (the MQTT transport's hot path); a change reaches the
caches only after its transaction committed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any, Callable

from tbspark.platform.errors import BadRequest, Conflict
from tbspark.platform.store.entities import put
from tbspark.platform.store.models import NULL_UUID, Asset, Device, DeviceProfile, new_id, now_ms, random_token


class DeviceStore:
    """Mixin of :class:`Store`; the caches themselves are built by ``EntityStore._load_entities``."""

    # -- devices ---------------------------------------------------------------------------------

    def device_by_token(self, token: str) -> Device | None:
        return self._devices_by_token.get(token)

    def device_by_id(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def device_by_name(self, tenant_id: str, name: str) -> Device | None:
        return self._devices_by_name.get((tenant_id, name))

    def devices(self, tenant_id: str) -> list[Device]:
        return [d for d in self._devices.values() if d.tenant_id == tenant_id]

    def _device_write(self, d: Device, token_changed: bool) -> Callable[[sqlite3.Connection], None]:
        def fn(conn: sqlite3.Connection) -> None:
            try:
                put(conn, d, d.name)
            except sqlite3.IntegrityError as exc:
                raise BadRequest("Device with such name already exists!") from exc
            if token_changed:
                conn.execute("DELETE FROM credentials WHERE device_id=?", (d.id,))
                try:
                    conn.execute("INSERT INTO credentials(token, device_id) VALUES (?,?)", (d.token, d.id))
                except sqlite3.IntegrityError as exc:
                    raise BadRequest("Device credentials are already assigned to another device!") from exc
        return fn

    def new_device(self, tenant_id: str, name: str, profile: DeviceProfile, token: str | None = None,
                   additional_info: dict | None = None, **extra: Any) -> Device:
        return Device(id=new_id(), tenant_id=tenant_id, customer_id=NULL_UUID, name=name, type=profile.name,
                      profile_id=profile.id, additional_info=additional_info, token=token or random_token(),
                      created_time=now_ms(), credentials_row_id=new_id(), **extra)

    def get_or_create_device(self, tenant_id: str, name: str, type: str,
                             additional_info: dict | None = None) -> tuple[Device, bool]:
        """The gateway's device-on-connect (§7.3): existing device by name, or a new one (blocking)."""
        found = self._devices_by_name.get((tenant_id, name))
        if found:
            return found, False
        profile = self.find_or_create_device_profile(tenant_id, type or "default")
        d = self.new_device(tenant_id, name, profile, additional_info=additional_info)
        try:
            self._write_sync(self._device_write(d, True))
        except Exception:
            again = self._devices_by_name.get((tenant_id, name))
            if again:
                return again, False
            raise
        self._cache_device(d)
        return d, True

    async def save_device(self, d: Device, expected_version: int | None = None) -> Device:
        """Create or update (same id); bumps ``version``; a stale ``expected_version`` → 409."""
        old = self._devices.get(d.id)
        if old is not None:
            if expected_version is not None and expected_version != old.version:
                raise Conflict("Device")
            d = replace(d, version=old.version + 1)
        await self._write(self._device_write(d, old is None or old.token != d.token))
        self._cache_device(d)
        return d

    async def delete_device(self, device_id: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM entity WHERE id=?", (device_id,))
            conn.execute("DELETE FROM credentials WHERE device_id=?", (device_id,))
        await self._write(fn)
        self._uncache_device(device_id)

    # -- assets ----------------------------------------------------------------------------------

    def asset_by_id(self, asset_id: str) -> Asset | None:
        return self._assets.get(asset_id)

    def asset_by_name(self, tenant_id: str, name: str) -> Asset | None:
        return self._assets_by_name.get((tenant_id, name))

    def assets(self, tenant_id: str) -> list[Asset]:
        return [a for a in self._assets.values() if a.tenant_id == tenant_id]

    async def save_asset(self, a: Asset, expected_version: int | None = None) -> Asset:
        old = self._assets.get(a.id)
        if old is not None:
            if expected_version is not None and expected_version != old.version:
                raise Conflict("Asset")
            a = replace(a, version=old.version + 1)
        await self._write(self._unique(lambda c: put(c, a, a.name), "Asset with such name already exists!"))
        self._cache_asset(a)
        return a

    async def delete_asset(self, asset_id: str) -> None:
        await self._write(lambda c: c.execute("DELETE FROM entity WHERE id=?", (asset_id,)))
        old = self._assets.pop(asset_id, None)
        if old:
            self._assets_by_name.pop((old.tenant_id, old.name), None)
