"""/api/device*, /api/tenant/device*: devices and their access-token credentials (§3.1–3.4)."""

from __future__ import annotations

import secrets
from dataclasses import replace

from aiohttp import web

from tbspark.platform import errors, values
from tbspark.platform.rest.common import (
    PAGE_PARAMS, Param, eid, entity_profile, entity_sort, entity_types, id_from, json_object, ok_empty, ok_json,
    one_by_name, owned, parse_uuid, platform, required_name, required_query, route, stored, tenant_admin,
    tenant_infos_page, tenant_page,
)
from tbspark.platform.store import Device

DEFAULT_DEVICE_DATA = {"configuration": {"type": "DEFAULT"}, "transportConfiguration": {"type": "DEFAULT"}}


def device_json(d: Device) -> dict:
    return {
        "id": eid("DEVICE", d.id), "createdTime": d.created_time,
        "tenantId": eid("TENANT", d.tenant_id), "customerId": eid("CUSTOMER", d.customer_id),
        "name": d.name, "type": d.type, "label": d.label,
        "deviceProfileId": eid("DEVICE_PROFILE", d.profile_id),
        "deviceData": d.device_data or DEFAULT_DEVICE_DATA,
        "firmwareId": d.fields.get("firmwareId"), "softwareId": d.fields.get("softwareId"),
        "externalId": d.fields.get("externalId"), "version": d.version, "additionalInfo": d.additional_info,
    }


def credentials_json(d: Device) -> dict:
    return {"id": {"id": d.credentials_row_id}, "createdTime": d.created_time, "deviceId": eid("DEVICE", d.id),
            "credentialsType": "ACCESS_TOKEN", "credentialsId": d.token, "credentialsValue": None, "version": 1}


def _own_device(request: web.Request, device_id: str) -> Device:
    return owned(request, device_id, platform(request).store.device_by_id, "Device")


def _unique_name(store, tenant_id: str, name: str, request: web.Request) -> str:
    if request.query.get("nameConflictPolicy", "FAIL").upper() != "UNIQUIFY":
        return name
    sep = request.query.get("uniquifySeparator", "_")
    candidate, n = name, 0
    while store.device_by_name(tenant_id, candidate) is not None:
        n += 1
        if request.query.get("uniquifyStrategy", "RANDOM").upper() == "INCREMENTAL":
            candidate = f"{name}{sep}{n}"
        else:
            candidate = f"{name}{sep}{secrets.token_hex(3)}"
    return candidate


def _checked(body: dict) -> tuple[str, str | None]:
    """The name and label of a device body as ThingsBoard's Device accepts them (checked live on
    4.3.1.3): Jackson coerces a number or a boolean label to its text, refuses an object or an array
    for a String field (500, errorCode 2), and both are at most 255 long."""
    name = required_name(body, "Device")
    label = body.get("label")
    if isinstance(label, bool):
        label = "true" if label else "false"
    elif isinstance(label, (int, float)):
        label = repr(label)
    elif isinstance(label, (dict, list)):
        kind, token = ("Object", "START_OBJECT") if isinstance(label, dict) else ("Array", "START_ARRAY")
        raise errors.PlatformError("JSON parse error: Cannot deserialize value of type "
                                   f"`java.lang.String` from {kind} value (token `JsonToken.{token}`)")
    try:
        values.check_name(name)
        if label is not None:
            values.check_name(label, "label")
    except values.ValidationError as exc:
        raise errors.BadRequest(str(exc)) from None
    return name, label


async def _save(request: web.Request, body: dict, token: str | None) -> Device:
    principal = tenant_admin(request)
    store = platform(request).store
    name, label = _checked(body)
    profile = entity_profile(body, principal.tenant_id, "device", store.device_profile,
                             store.find_or_create_device_profile, store.default_device_profile)
    info = body.get("additionalInfo")
    extra = {k: body.get(k) for k in ("firmwareId", "softwareId", "externalId") if body.get(k) is not None}
    device_id = id_from(body, "id")
    if device_id:
        old = _own_device(request, device_id)
        d = replace(old, name=name, type=profile.name, profile_id=profile.id, label=label,
                    additional_info=info, device_data=body.get("deviceData") or old.device_data, fields=extra)
        version = body.get("version")
        return await stored(store.save_device(d, expected_version=version if isinstance(version, int) else None))
    name = _unique_name(store, principal.tenant_id, name, request)
    if store.device_by_name(principal.tenant_id, name) is not None:
        raise errors.BadRequest("Device with such name already exists!")
    if token is not None and not token.strip():
        token = None
    d = store.new_device(principal.tenant_id, name, profile, token=token, additional_info=info,
                         label=label, device_data=body.get("deviceData"), fields=extra)
    d = await stored(store.save_device(d))
    devstate = platform(request).devstate
    if devstate is not None:  # ENTITY_CREATED into its chain; `active` = false from now on
        devstate.on_created(d, principal.user)
    return d


@route("POST", "/api/device", "Create or update a device", "device", body="json",
       params=[Param("accessToken", description="Access token for a new device (random if absent)"),
               Param("nameConflictPolicy", enum=["FAIL", "UNIQUIFY"]), Param("uniquifySeparator"),
               Param("uniquifyStrategy", enum=["RANDOM", "INCREMENTAL"])])
async def save_device(request: web.Request) -> web.Response:
    body = await json_object(request)
    return ok_json(device_json(await _save(request, body, request.query.get("accessToken"))))


@route("POST", "/api/device-with-credentials", "Create a device together with its credentials", "device", body="json")
async def save_device_with_credentials(request: web.Request) -> web.Response:
    body = await json_object(request)
    device, creds = body.get("device"), body.get("credentials") or {}
    if not isinstance(device, dict):
        raise errors.BadRequest("Device should be specified!")
    if creds.get("credentialsType", "ACCESS_TOKEN") != "ACCESS_TOKEN":
        raise errors.BadRequest("Only ACCESS_TOKEN credentials are supported by the embedded platform")
    return ok_json(device_json(await _save(request, device, creds.get("credentialsId"))))


@route("GET", "/api/device/types", "Device types (profile names) in use", "device")
async def device_types(request: web.Request) -> web.Response:
    return entity_types(request, platform(request).store.devices, "DEVICE")


@route("GET", "/api/device/info/{deviceId}", "A device with profile name and customer", "device")
async def device_info(request: web.Request) -> web.Response:
    d = _own_device(request, request.match_info["deviceId"])
    return ok_json(_info(d, platform(request).store))


def _info(d: Device, store) -> dict:
    # "active" is the device's SERVER_SCOPE attribute, as ThingsBoard's device_info_view reads it.
    active = store.get_attributes("DEVICE", d.id, "SERVER_SCOPE", ["active"]).get("active")
    return {**device_json(d), "customerTitle": None, "customerIsPublic": False, "deviceProfileName": d.type,
            "active": bool(active[1]) if active is not None else False}


@route("GET", "/api/device/{deviceId}", "A device by id", "device")
async def get_device(request: web.Request) -> web.Response:
    return ok_json(device_json(_own_device(request, request.match_info["deviceId"])))


@route("DELETE", "/api/device/{deviceId}", "Delete a device", "device")
async def delete_device(request: web.Request) -> web.Response:
    d = _own_device(request, request.match_info["deviceId"])
    await stored(platform(request).store.delete_device(d.id))
    if platform(request).devstate is not None:
        platform(request).devstate.on_deleted(d.id)
    return ok_empty()


@route("GET", "/api/device/{deviceId}/credentials", "A device's credentials (access token)", "device")
async def get_credentials(request: web.Request) -> web.Response:
    return ok_json(credentials_json(_own_device(request, request.match_info["deviceId"])))


@route("POST", "/api/device/credentials", "Update a device's credentials (access token)", "device", body="json")
async def save_credentials(request: web.Request) -> web.Response:
    body = await json_object(request)
    device_id = id_from(body, "deviceId")
    if not device_id:
        raise errors.BadRequest("Device credentials should be assigned to device!")
    d = _own_device(request, device_id)
    if body.get("credentialsType", "ACCESS_TOKEN") != "ACCESS_TOKEN":
        raise errors.BadRequest("Only ACCESS_TOKEN credentials are supported by the embedded platform")
    token = body.get("credentialsId")
    if not isinstance(token, str) or not token.strip():
        raise errors.BadRequest("Device credentials id should be specified!")
    other = platform(request).store.device_by_token(token)
    if other is not None and other.id != d.id:
        raise errors.BadRequest("Device credentials are already assigned to another device!")
    d = await platform(request).store.save_device(replace(d, token=token))
    return ok_json(credentials_json(d))


_SORT = entity_sort("deviceProfileName")


@route("GET", "/api/tenant/devices", "Tenant devices (paged), or one device by name", "device",
       params=[*PAGE_PARAMS, Param("type", description="Device profile name"),
               Param("deviceName", description="Exact device name (returns one Device)")])
async def tenant_devices(request: web.Request) -> web.Response:
    store = platform(request).store
    return tenant_page(request, "deviceName", store.device_by_name, store.devices, _SORT, device_json)


@route("GET", "/api/tenant/device", "One tenant device by name (TB ≥ 4.3.1.2 path)", "device",
       params=[Param("deviceName", required=True, description="Exact device name")])
async def tenant_device(request: web.Request) -> web.Response:
    name = required_query(request, "deviceName")
    return one_by_name(request, name, platform(request).store.device_by_name, device_json)


@route("GET", "/api/tenant/deviceInfos", "Tenant device infos (paged)", "device",
       params=[*PAGE_PARAMS, Param("type"), Param("deviceProfileId")])
async def tenant_device_infos(request: web.Request) -> web.Response:
    store = platform(request).store
    return tenant_infos_page(request, "deviceProfileId", store.devices, _SORT, lambda d: _info(d, store))


@route("GET", "/api/devices", "Devices by ids", "device",
       params=[Param("deviceIds", required=True, description="Comma-separated device ids")])
async def devices_by_ids(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    raw = request.query.get("deviceIds")
    if raw is None:
        raise errors.BadRequest("Required request parameter 'deviceIds' for method parameter type String[] is not present")
    store = platform(request).store
    out = []
    for part in raw.split(","):
        if part.strip():
            d = store.device_by_id(parse_uuid(part.strip()))
            if d is not None and d.tenant_id == principal.tenant_id:
                out.append(device_json(d))
    return ok_json(out)
