"""/api/deviceProfile*, /api/assetProfile*: profiles, defaults, and a profile's defaultRuleChainId (§3.5, §4)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

from aiohttp import web

from tbspark.platform import errors
from tbspark.platform.rest.common import (
    PAGE_PARAMS, Param, eid, id_from, json_object, ok_empty, ok_json, owned, page, platform, required_name, route,
    tenant_admin,
)
from tbspark.platform.store import AssetProfile, DeviceProfile
from tbspark.platform.store.models import new_id, now_ms

# Fields ThingsBoard has that we keep as sent (read-modify-write round-trips them).
_DEVICE_EXTRA = ("image", "type", "transportType", "provisionType", "provisionDeviceKey", "defaultDashboardId",
                 "defaultQueueName", "defaultEdgeRuleChainId", "firmwareId", "softwareId", "externalId", "profileData")
_ASSET_EXTRA = ("image", "defaultDashboardId", "defaultQueueName", "defaultEdgeRuleChainId", "externalId")
_DEVICE_DEFAULTS = {"type": "DEFAULT", "transportType": "DEFAULT", "provisionType": "DISABLED"}


def _profile_json(p: DeviceProfile | AssetProfile, entity_type: str, extra: tuple[str, ...],
                  defaults: dict) -> dict:
    out = {"id": eid(entity_type, p.id), "createdTime": p.created_time, "tenantId": eid("TENANT", p.tenant_id),
           "name": p.name, "description": p.description, "default": p.is_default,
           "defaultRuleChainId": eid("RULE_CHAIN", p.default_rule_chain_id), "version": p.version}
    for k in extra:
        out[k] = p.fields.get(k, defaults.get(k))
    return out


def _profile_info_json(p: DeviceProfile | AssetProfile, entity_type: str) -> dict:
    return {"id": eid(entity_type, p.id), "tenantId": eid("TENANT", p.tenant_id), "name": p.name,
            "image": p.fields.get("image"), "defaultDashboardId": p.fields.get("defaultDashboardId")}


def device_profile_json(p: DeviceProfile) -> dict:
    return _profile_json(p, "DEVICE_PROFILE", _DEVICE_EXTRA, _DEVICE_DEFAULTS)


def device_profile_info_json(p: DeviceProfile) -> dict:
    return {**_profile_info_json(p, "DEVICE_PROFILE"),
            "type": p.fields.get("type", "DEFAULT"), "transportType": p.fields.get("transportType", "DEFAULT")}


def asset_profile_json(p: AssetProfile) -> dict:
    return _profile_json(p, "ASSET_PROFILE", _ASSET_EXTRA, {})


def asset_profile_info_json(p: AssetProfile) -> dict:
    return _profile_info_json(p, "ASSET_PROFILE")


_SORT = {"createdTime": lambda p: p.created_time, "name": lambda p: p.name, "type": lambda p: "DEFAULT",
         "transportType": lambda p: p.fields.get("transportType", "DEFAULT"), "description": lambda p: p.description,
         "isDefault": lambda p: str(p.is_default)}


def _chain_ref(request: web.Request, body: dict, tenant_id: str) -> str | None:
    chain_id = id_from(body, "defaultRuleChainId")
    if chain_id:
        rc = platform(request).store.rule_chain(chain_id)
        if rc is None or rc.tenant_id != tenant_id:
            raise errors.BadRequest("Can't assign non-existent rule chain!")
    return chain_id


def _version(body: dict, current: int) -> int:
    v = body.get("version")
    if isinstance(v, int) and v != current:
        raise errors.Conflict("Profile")
    return current + 1


async def _save_profile(request: web.Request, what: str, profile_type: type, extra: tuple[str, ...],
                        defaults: dict, own: Callable, exists: Callable[[str, str], Any], save: Callable,
                        set_default: Callable) -> Any:
    """Create or update a device or asset profile from the body; ``what`` names it in TB's messages."""
    principal = tenant_admin(request)
    body = await json_object(request)
    name = required_name(body, what)
    chain_id = _chain_ref(request, body, principal.tenant_id)
    fields = {k: body[k] for k in extra if body.get(k) is not None}
    pid = id_from(body, "id")
    if pid:
        old = own(request, pid)
        p = replace(old, name=name, description=body.get("description"), default_rule_chain_id=chain_id,
                    fields={**old.fields, **fields}, version=_version(body, old.version))
    else:
        if exists(principal.tenant_id, name):
            raise errors.BadRequest(f"{what} with such name already exists!")
        p = profile_type(new_id(), principal.tenant_id, name, now_ms(), description=body.get("description"),
                         default_rule_chain_id=chain_id, fields={**defaults, **fields})
    p = await save(p)
    if body.get("default") is True and not p.is_default:
        p = await set_default(principal.tenant_id, p.id)
    return p


async def _make_default(request: web.Request, raw_id: str, own: Callable, set_default: Callable,
                        render: Callable) -> web.Response:
    principal = tenant_admin(request)
    p = own(request, raw_id)
    p = await set_default(principal.tenant_id, p.id)
    return ok_json(render(p))


def _profiles_page(request: web.Request, items_of: Callable[[str], list], render: Callable) -> web.Response:
    principal = tenant_admin(request)
    return page(request, items_of(principal.tenant_id), _SORT, lambda p: (p.name,), render)


def _names(request: web.Request, items_of: Callable[[str], list], entity_type: str) -> web.Response:
    principal = tenant_admin(request)
    profiles = sorted(items_of(principal.tenant_id), key=lambda p: p.name)
    return ok_json([{"id": eid(entity_type, p.id), "name": p.name} for p in profiles])


# -- device profiles --------------------------------------------------------------------------------

def _own_device_profile(request: web.Request, raw_id: str) -> DeviceProfile:
    return owned(request, raw_id, platform(request).store.device_profile, "Device profile")


@route("POST", "/api/deviceProfile", "Create or update a device profile", "deviceProfile", body="json")
async def save_device_profile(request: web.Request) -> web.Response:
    store = platform(request).store
    p = await _save_profile(request, "Device profile", DeviceProfile, _DEVICE_EXTRA, _DEVICE_DEFAULTS,
                            _own_device_profile, store.device_profile_by_name, store.save_device_profile,
                            store.set_default_device_profile)
    return ok_json(device_profile_json(p))


@route("GET", "/api/deviceProfile/{deviceProfileId}", "A device profile", "deviceProfile",
       params=[Param("inlineImages", "boolean")])
async def get_device_profile(request: web.Request) -> web.Response:
    return ok_json(device_profile_json(_own_device_profile(request, request.match_info["deviceProfileId"])))


@route("DELETE", "/api/deviceProfile/{deviceProfileId}", "Delete a device profile", "deviceProfile")
async def delete_device_profile(request: web.Request) -> web.Response:
    p = _own_device_profile(request, request.match_info["deviceProfileId"])
    await platform(request).store.delete_device_profile(p.id)
    return ok_empty()


@route("POST", "/api/deviceProfile/{deviceProfileId}/default", "Make a profile the tenant default", "deviceProfile")
async def default_device_profile(request: web.Request) -> web.Response:
    return await _make_default(request, request.match_info["deviceProfileId"], _own_device_profile,
                               platform(request).store.set_default_device_profile, device_profile_json)


@route("GET", "/api/deviceProfiles", "Device profiles (paged)", "deviceProfile", params=PAGE_PARAMS)
async def device_profiles(request: web.Request) -> web.Response:
    return _profiles_page(request, platform(request).store.device_profiles, device_profile_json)


@route("GET", "/api/deviceProfileInfos", "Device profile infos (paged)", "deviceProfile",
       params=[*PAGE_PARAMS, Param("transportType")])
async def device_profile_infos(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    items = platform(request).store.device_profiles(principal.tenant_id)
    if request.query.get("transportType"):
        items = [p for p in items if p.fields.get("transportType", "DEFAULT") == request.query["transportType"]]
    return page(request, items, _SORT, lambda p: (p.name,), device_profile_info_json)


@route("GET", "/api/deviceProfileInfo/default", "The default device profile", "deviceProfile")
async def default_device_profile_info(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    return ok_json(device_profile_info_json(platform(request).store.default_device_profile(principal.tenant_id)))


@route("GET", "/api/deviceProfile/names", "Names of the device profiles", "deviceProfile",
       params=[Param("activeOnly", "boolean")])
async def device_profile_names(request: web.Request) -> web.Response:
    return _names(request, platform(request).store.device_profiles, "DEVICE_PROFILE")


# -- asset profiles ---------------------------------------------------------------------------------

def _own_asset_profile(request: web.Request, raw_id: str) -> AssetProfile:
    return owned(request, raw_id, platform(request).store.asset_profile, "Asset profile")


@route("POST", "/api/assetProfile", "Create or update an asset profile", "assetProfile", body="json")
async def save_asset_profile(request: web.Request) -> web.Response:
    store = platform(request).store
    p = await _save_profile(request, "Asset profile", AssetProfile, _ASSET_EXTRA, {}, _own_asset_profile,
                            lambda tenant_id, name: any(x.name == name for x in store.asset_profiles(tenant_id)),
                            store.save_asset_profile, store.set_default_asset_profile)
    return ok_json(asset_profile_json(p))


@route("GET", "/api/assetProfile/{assetProfileId}", "An asset profile", "assetProfile")
async def get_asset_profile(request: web.Request) -> web.Response:
    return ok_json(asset_profile_json(_own_asset_profile(request, request.match_info["assetProfileId"])))


@route("DELETE", "/api/assetProfile/{assetProfileId}", "Delete an asset profile", "assetProfile")
async def delete_asset_profile(request: web.Request) -> web.Response:
    p = _own_asset_profile(request, request.match_info["assetProfileId"])
    await platform(request).store.delete_asset_profile(p.id)
    return ok_empty()


@route("POST", "/api/assetProfile/{assetProfileId}/default", "Make an asset profile the default", "assetProfile")
async def default_asset_profile(request: web.Request) -> web.Response:
    return await _make_default(request, request.match_info["assetProfileId"], _own_asset_profile,
                               platform(request).store.set_default_asset_profile, asset_profile_json)


@route("GET", "/api/assetProfiles", "Asset profiles (paged)", "assetProfile", params=PAGE_PARAMS)
async def asset_profiles(request: web.Request) -> web.Response:
    return _profiles_page(request, platform(request).store.asset_profiles, asset_profile_json)


@route("GET", "/api/assetProfileInfos", "Asset profile infos (paged)", "assetProfile", params=PAGE_PARAMS)
async def asset_profile_infos(request: web.Request) -> web.Response:
    return _profiles_page(request, platform(request).store.asset_profiles, asset_profile_info_json)


@route("GET", "/api/assetProfileInfo/default", "The default asset profile", "assetProfile")
async def default_asset_profile_info(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    return ok_json(asset_profile_info_json(platform(request).store.default_asset_profile(principal.tenant_id)))


@route("GET", "/api/assetProfile/names", "Names of the asset profiles", "assetProfile",
       params=[Param("activeOnly", "boolean")])
async def asset_profile_names(request: web.Request) -> web.Response:
    return _names(request, platform(request).store.asset_profiles, "ASSET_PROFILE")
