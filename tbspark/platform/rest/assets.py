"""/api/asset*, /api/tenant/asset*: assets (zones get one each), paging and lookups (§4, §4.1)."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from tbspark.platform import errors
from tbspark.platform.rest.common import (
    PAGE_PARAMS, Param, eid, entity_profile, entity_sort, entity_types, id_from, json_object, ok_empty, ok_json,
    one_by_name, owned, platform, required_name, required_query, route, tenant_admin, tenant_infos_page, tenant_page,
)
from tbspark.platform.store import NULL_UUID, Asset
from tbspark.platform.store.models import new_id, now_ms


def asset_json(a: Asset) -> dict:
    return {"id": eid("ASSET", a.id), "createdTime": a.created_time, "tenantId": eid("TENANT", a.tenant_id),
            "customerId": eid("CUSTOMER", a.customer_id), "name": a.name, "type": a.type, "label": a.label,
            "assetProfileId": eid("ASSET_PROFILE", a.profile_id), "externalId": a.fields.get("externalId"),
            "version": a.version, "additionalInfo": a.additional_info}


def _info(a: Asset) -> dict:
    return {**asset_json(a), "customerTitle": None, "customerIsPublic": False, "assetProfileName": a.type}


def _own_asset(request: web.Request, raw_id: str) -> Asset:
    return owned(request, raw_id, platform(request).store.asset_by_id, "Asset")


@route("POST", "/api/asset", "Create or update an asset", "asset", body="json",
       params=[Param("nameConflictPolicy", enum=["FAIL", "UNIQUIFY"]), Param("uniquifySeparator"),
               Param("uniquifyStrategy", enum=["RANDOM", "INCREMENTAL"])])
async def save_asset(request: web.Request) -> web.Response:
    principal = tenant_admin(request)
    store = platform(request).store
    body = await json_object(request)
    name = required_name(body, "Asset")
    profile = entity_profile(body, principal.tenant_id, "asset", store.asset_profile,
                             store.find_or_create_asset_profile, store.default_asset_profile)
    extra = {"externalId": body["externalId"]} if body.get("externalId") else {}
    asset_id = id_from(body, "id")
    if asset_id:
        old = _own_asset(request, asset_id)
        a = replace(old, name=name, type=profile.name, profile_id=profile.id, label=body.get("label"),
                    additional_info=body.get("additionalInfo"), fields=extra)
        version = body.get("version")
        a = await store.save_asset(a, expected_version=version if isinstance(version, int) else None)
        return ok_json(asset_json(a))
    if request.query.get("nameConflictPolicy", "FAIL").upper() == "UNIQUIFY":
        import secrets
        sep = request.query.get("uniquifySeparator", "_")
        base = name
        while store.asset_by_name(principal.tenant_id, name) is not None:
            name = f"{base}{sep}{secrets.token_hex(3)}"
    if store.asset_by_name(principal.tenant_id, name) is not None:
        raise errors.BadRequest("Asset with such name already exists!")
    a = Asset(new_id(), principal.tenant_id, NULL_UUID, name, profile.name, profile.id, now_ms(),
              label=body.get("label"), additional_info=body.get("additionalInfo"), fields=extra)
    return ok_json(asset_json(await store.save_asset(a)))


@route("GET", "/api/asset/types", "Asset types (profile names) in use", "asset")
async def asset_types(request: web.Request) -> web.Response:
    return entity_types(request, platform(request).store.assets, "ASSET")


@route("GET", "/api/asset/info/{assetId}", "An asset with its profile name", "asset")
async def asset_info(request: web.Request) -> web.Response:
    return ok_json(_info(_own_asset(request, request.match_info["assetId"])))


@route("GET", "/api/asset/{assetId}", "An asset by id", "asset")
async def get_asset(request: web.Request) -> web.Response:
    return ok_json(asset_json(_own_asset(request, request.match_info["assetId"])))


@route("DELETE", "/api/asset/{assetId}", "Delete an asset", "asset")
async def delete_asset(request: web.Request) -> web.Response:
    a = _own_asset(request, request.match_info["assetId"])
    await platform(request).store.delete_asset(a.id)
    return ok_empty()


_SORT = entity_sort("assetProfileName")


@route("GET", "/api/tenant/assets", "Tenant assets (paged), or one asset by name", "asset",
       params=[*PAGE_PARAMS, Param("type", description="Asset profile name"),
               Param("assetName", description="Exact asset name (returns one Asset)")])
async def tenant_assets(request: web.Request) -> web.Response:
    store = platform(request).store
    return tenant_page(request, "assetName", store.asset_by_name, store.assets, _SORT, asset_json)


@route("GET", "/api/tenant/asset", "One tenant asset by name (TB ≥ 4.3.1.2 path)", "asset",
       params=[Param("assetName", required=True)])
async def tenant_asset(request: web.Request) -> web.Response:
    name = required_query(request, "assetName")
    return one_by_name(request, name, platform(request).store.asset_by_name, asset_json)


@route("GET", "/api/tenant/assetInfos", "Tenant asset infos (paged)", "asset",
       params=[*PAGE_PARAMS, Param("type"), Param("assetProfileId")])
async def tenant_asset_infos(request: web.Request) -> web.Response:
    return tenant_infos_page(request, "assetProfileId", platform(request).store.assets, _SORT, _info)
