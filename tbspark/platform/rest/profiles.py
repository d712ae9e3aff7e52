"""/api/deviceProfile*, /api/assetProfile*: profiles, defaults, and a profile's defaultRuleChainId (§3.5, §4)."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from tbspark.platform.rest import errors
from tbspark.platform.rest.common import (
    PAGE_PARAMS, Param, eid, id_from, json_object, ok_empty, ok_json, page, parse_uuid, platform, route, tenant_admin,
)
from tbspark.platform.store import AssetProfile, DeviceProfile
from tbspark.platform.store.models import new_id, now_ms

# Fields ThingsBoard has that we keep as sent (read-modify-write round-trips them).
_DEVICE_EXTRA = ("image", "type", "transportType", "provisionType", "provisionDeviceKey", "defaultDashboardId",
                 "defaultQueueName", "defaultEdgeRuleChainId", "firmwareId", "softwareId", "externalId", "profileData")
_ASSET_EXTRA = ("image", "defaultDashboardId", "defaultQueueName", "defaultEdgeRuleChainId", "externalId")
_DEVICE_DEFAULTS = {"type": "DEFAULT", "transportType": "DEFAULT", "provisionType": "DISABLED"}


def device_profile_json(p: DeviceProfile) -> dict:
    out = {"id": eid("DEVICE_PROFILE", p.id), "createdTime": p.created_time, "tenantId": eid("TENANT", p.tenant_id),
           "name": p.name, "description": p.description, "default": p.is_default,
           "defaultRuleChainId": eid("RULE_CHAIN", p.default_rule_chain_id), "version": p.version}
    for k in _DEVICE_EXTRA:
        out[k] = p.fields.get(k, _DEVICE_DEFAULTS.get(k))
    return out


def device_profile_info_json(p: DeviceProfile) -> dict:
    return {"id": eid("DEVICE_PROFILE", p.id), "tenantId": eid("TENANT", p.tenant_id), "name": p.name,
            "image": p.fields.get("image"), "defaultDashboardId": p.fields.get("defaultDashboardId"),
            "type": p.fields.get("type", "DEFAULT"), "transportType": p.fields.get("transportType", "DEFAULT")}


def asset_profile_json(p: AssetProfile) -> dict:
    out = {"id": eid("ASSET_PROFILE", p.id), "createdTime": p.created_time, "tenantId": eid("TENANT", p.tenant_id),
           "name": p.name, "description": p.description, "default": p.is_default,
           "defaultRuleChainId": eid("RULE_CHAIN", p.default_rule_chain_id), "version": p.version}
    for k in _ASSET_EXTRA:
        out[k] = p.fields.get(k)
    return out


def asset_profile_info_json(p: AssetProfile) -> dict:
    return {"id": eid("ASSET_PROFILE", p.id), "tenantId": eid("TENANT", p.tenant_id), "name": p.name,
            "image": p.fields.get("image"), "defaultDashboardId": p.fields.get("defaultDashboardId")}


_SORT = {"createdTime": lambda p: p.created_time, "name": lambda p: p.name, "type": lambda p: "DEFAULT",
         "transportType": lambda p: p.fields.get("transportType", "DEFAULT"), "description": lambda p: p.description,
         "isDefault": lambda p: str(p.is_default)}


def _chain_ref(request: web.Request, body: dict, tenant_id: str) -> str | None:
    chain_id = id_from(body, "defaultRuleChainId")
    if chain_id:
        rc = platform(request).store.rule_chain(chain_id)
        if rc is None or rc.tenant_id != tenant_id:
            raise errors.bad_request("Can't assign non-existent rule chain!")
    return chain_id


def _version(body: dict, current: int) -> int:
    v = body.get("version")
    if isinstance(v, int) and v != current:
        raise errors.conflict("Profile")
    return current + 1


# -- device profiles --------------------------------------------------------------------------------

def _own_device_profile(request: web.Request, raw_id: str) -> DeviceProfile:
    principal = tenant_admin(request)
    pid = parse_uuid(raw_id)
    p = platform(request).store.device_profile(pid)
    if p is None or p.tenant_id != principal.tenant_id:
        raise errors.not_found(f"Device profile with id [{pid}] is not found")
    return p


@route("POST", "/api/deviceProfile", "Create or update a device profile", "deviceProfile", body="json")
async def save_device_profile(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    store = platform(request).store
    body = await json_object(request)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise errors.bad_request("Device profile name should be specified!")
    chain_id = _chain_ref(request, body, principal.tenant_id)
    fields = {k: body[k] for k in _DEVICE_EXTRA if body.get(k) is not None}
    pid = id_from(body, "id")
    if pid:
        old = _own_device_profile(request, pid)
        p = replace(old, name=name, description=body.get("description"), default_rule_chain_id=chain_id,
                    fields={**old.fields, **fields}, version=_version(body, old.version))
    else:
        if store.device_profile_by_name(principal.tenant_id, name):
            raise errors.bad_request("Device profile with such name already exists!")
        p = DeviceProfile(new_id(), principal.tenant_id, name, now_ms(), description=body.get("description"),
                          default_rule_chain_id=chain_id, fields={**_DEVICE_DEFAULTS, **fields})
    p = await store.save_device_profile(p)
    if body.get("default") is True and not p.is_default:
        p = await store.set_default_device_profile(principal.tenant_id, p.id)
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
    principal = tenant_admin(request)
    p = _own_device_profile(request, request.match_info["deviceProfileId"])
    p = await platform(request).store.set_default_device_profile(principal.tenant_id, p.id)
    return ok_json(device_profile_json(p))


@route("GET", "/api/deviceProfiles", "Device profiles (paged)", "deviceProfile", params=PAGE_PARAMS)
async def device_profiles(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    items = platform(request).store.device_profiles(principal.tenant_id)
    return page(request, items, _SORT, lambda p: (p.name,), device_profile_json)


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
    principal = tenant_admin(request)
    profiles = sorted(platform(request).store.device_profiles(principal.tenant_id), key=lambda p: p.name)
    return ok_json([{"id": eid("DEVICE_PROFILE", p.id), "name": p.name} for p in profiles])


# -- asset profiles ---------------------------------------------------------------------------------

def _own_asset_profile(request: web.Request, raw_id: str) -> AssetProfile:
    principal = tenant_admin(request)
    pid = parse_uuid(raw_id)
    p = platform(request).store.asset_profile(pid)
    if p is None or p.tenant_id != principal.tenant_id:
        raise errors.not_found(f"Asset profile with id [{pid}] is not found")
    return p


@route("POST", "/api/assetProfile", "Create or update an asset profile", "assetProfile", body="json")
async def save_asset_profile(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    store = platform(request).store
    body = await json_object(request)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise errors.bad_request("Asset profile name should be specified!")
    chain_id = _chain_ref(request, body, principal.tenant_id)
    fields = {k: body[k] for k in _ASSET_EXTRA if body.get(k) is not None}
    pid = id_from(body, "id")
    if pid:
        old = _own_asset_profile(request, pid)
        p = replace(old, name=name, description=body.get("description"), default_rule_chain_id=chain_id,
                    fields={**old.fields, **fields}, version=_version(body, old.version))
    else:
        if any(x.name == name for x in store.asset_profiles(principal.tenant_id)):
            raise errors.bad_request("Asset profile with such name already exists!")
        p = AssetProfile(new_id(), principal.tenant_id, name, now_ms(), description=body.get("description"),
                         default_rule_chain_id=chain_id, fields=fields)
    p = await store.save_asset_profile(p)
    if body.get("default") is True and not p.is_default:
        p = await store.set_default_asset_profile(principal.tenant_id, p.id)
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
    principal = tenant_admin(request)
    p = _own_asset_profile(request, request.match_info["assetProfileId"])
    p = await platform(request).store.set_default_asset_profile(principal.tenant_id, p.id)
    return ok_json(asset_profile_json(p))


@route("GET", "/api/assetProfiles", "Asset profiles (paged)", "assetProfile", params=PAGE_PARAMS)
async def asset_profiles(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    items = platform(request).store.asset_profiles(principal.tenant_id)
    return page(request, items, _SORT, lambda p: (p.name,), asset_profile_json)


@route("GET", "/api/assetProfileInfos", "Asset profile infos (paged)", "assetProfile", params=PAGE_PARAMS)
async def asset_profile_infos(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    items = platform(request).store.asset_profiles(principal.tenant_id)
    return page(request, items, _SORT, lambda p: (p.name,), asset_profile_info_json)


@route("GET", "/api/assetProfileInfo/default", "The default asset profile", "assetProfile")
async def default_asset_profile_info(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    return ok_json(asset_profile_info_json(platform(request).store.default_asset_profile(principal.tenant_id)))


@route("GET", "/api/assetProfile/names", "Names of the asset profiles", "assetProfile",
       params=[Param("activeOnly", "boolean")])
async def asset_profile_names(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    profiles = sorted(platform(request).store.asset_profiles(principal.tenant_id), key=lambda p: p.name)
    return ok_json([{"id": eid("ASSET_PROFILE", p.id), "name": p.name} for p in profiles])
