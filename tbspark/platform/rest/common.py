"""What every REST resource module shares: route registration (which also feeds the OpenAPI
document), the caller's principal, query-parameter parsing, JSON bodies (read within a deadline),
store writes, paging and entity ids."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

from aiohttp import web

from tbspark.platform import errors, values
from tbspark.platform.rest.errors import json_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PLATFORM_KEY = web.AppKey("platform", object)
PRINCIPAL_KEY = web.RequestKey("principal", object)  # the verified caller (auth.Principal)


@dataclass
class Param:
    """One documented query parameter (name, type, required, description)."""

    name: str
    type: str = "string"
    required: bool = False
    description: str = ""
    enum: list[str] | None = None


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    params: list[Param] = field(default_factory=list)
    body: str | None = None  # "json" | "text" | None
    auth: bool = True


ROUTES: list[Route] = []


def route(method: str, path: str, summary: str, tag: str, params: Iterable[Param] = (),
          body: str | None = None, auth: bool = True) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        ROUTES.append(Route(method, path, fn, summary, tag, list(params), body, auth))
        return fn
    return deco


def register(app: web.Application) -> None:
    # Literal paths first, so /api/device/types is not taken for /api/device/{deviceId}.
    for r in sorted(ROUTES, key=lambda r: "{" in r.path):
        app.router.add_route(r.method, r.path, r.handler)


def platform(request: web.Request) -> Any:
    return request.app[PLATFORM_KEY]


def tenant_admin(request: web.Request):
    """The caller, who must be a tenant administrator (a sysadmin gets TB's 403)."""
    principal = request.get(PRINCIPAL_KEY)
    if principal is None:
        raise errors.AuthFailed()
    if principal.authority != "TENANT_ADMIN":
        raise errors.Forbidden()
    return principal


# -- parameters -------------------------------------------------------------------------------------

def parse_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise errors.BadRequest(f"Invalid UUID string: {value}") from None


def q_int(request: web.Request, name: str, default: int | None = None, required: bool = False,
          minimum: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        if required:
            raise errors.BadRequest(f"Required request parameter '{name}' for method parameter type "
                                    f"{'int' if default is None else 'long'} is not present")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.BadRequest(f"Failed to convert value of type 'java.lang.String' to required type 'long'; "
                                f"For input string: \"{raw}\"") from None
    if not -(2**63) <= value < 2**63:
        raise errors.BadRequest(f"Failed to convert value of type 'java.lang.String' to required type 'long'; "
                                f"For input string: \"{raw}\"")
    if minimum is not None and value < minimum:
        raise errors.BadRequest(f"Parameter '{name}' must be at least {minimum}")
    return value


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def q_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """Spring's lenient boolean conversion: tb-rest-client sends Python's ``True``."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise errors.BadRequest(f"Failed to convert value of type 'java.lang.String' to required type 'boolean'; "
                            f"Invalid boolean value [{raw}]")


def q_keys(request: web.Request, name: str = "keys") -> list[str] | None:
    """``key=a&key=b`` (4.3+, wins) or ``keys=a,b``; None when neither is given."""
    repeated = request.query.getall("key", [])
    if repeated:
        return [k.strip() for k in repeated if k.strip()]
    raw = request.query.get(name)
    if raw is None:
        return None
    return [k.strip() for k in raw.split(",") if k.strip()]


# -- bodies -----------------------------------------------------------------------------------------

def body_deadline(timeout_s: float):
    """Middleware: a request's body must arrive within ``timeout_s`` of its headers, else 408 and the
    connection is closed (a client that announces a body and never sends it holds nothing). The body
    is read here once; handlers' ``request.text()`` then reads aiohttp's copy."""
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            try:
                async with asyncio.timeout(timeout_s):
                    await request.read()
            except TimeoutError:
                resp = json_error(408, f"Request body not received within {timeout_s:g} s",
                                  errors.BAD_REQUEST_PARAMS)
                # Answer, then close at once: aiohttp would otherwise linger to read the rest.
                await resp.prepare(request)
                await resp.write_eof()
                request.protocol.force_close()
                return resp
        return await handler(request)
    return middleware


async def stored(write: Awaitable[Any]) -> Any:
    """Await a store write; a storage failure (disk full, database locked) becomes ThingsBoard's 500
    with its cause instead of a traceback (the writer logs the outage once)."""
    try:
        return await write
    except sqlite3.OperationalError as exc:
        raise errors.StoreFailed(exc) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Jackson refuses NaN and Infinity too


def _unreadable(message: str) -> errors.PlatformError:
    """Spring's HttpMessageNotReadableException / HttpMediaTypeNotSupportedException: ThingsBoard
    4.3.1.3 answers them 500 with errorCode 2 (checked live, tests/differential)."""
    return errors.PlatformError(message)


async def json_body(request: web.Request) -> Any:
    """An entity controller's ``@RequestBody``: JSON only; TB's 500 (errorCode 2) on anything else."""
    ctype = request.headers.get("Content-Type", "")
    if ctype and "json" not in ctype.lower():
        shown = ctype if "charset" in ctype.lower() else f"{ctype};charset=UTF-8"  # as Spring shows it
        raise _unreadable(f"Content-Type '{shown}' is not supported")
    try:
        text = await request.text()  # UnicodeDecodeError (a ValueError) on bytes that are not UTF-8
    except ValueError:
        raise _unreadable("JSON parse error: the body is not UTF-8") from None
    if not text.strip():
        raise _unreadable("Required request body is missing")
    try:
        body = json.loads(text, parse_constant=_no_constant)  # Jackson refuses NaN/Infinity (live)
    except ValueError as exc:
        raise _unreadable(f"JSON parse error: {exc}") from None
    except RecursionError:  # nested thousands deep (tests/fuzz)
        raise _unreadable("JSON parse error: nested too deeply") from None
    if "\\u" in text:
        try:  # ThingsBoard stores a lone surrogate; a UTF-8 store cannot (docs/thingsboard.md)
            values.check_text(body)
        except ValueError as exc:
            raise _unreadable(f"JSON parse error: {exc}") from None
    return body


async def json_object(request: web.Request) -> dict:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise _unreadable(f"JSON parse error: Cannot deserialize an object from {type(body).__name__} value")
    return body


def ok_json(data: Any) -> web.Response:
    return web.Response(text=json.dumps(data), content_type="application/json")


def ok_empty() -> web.Response:
    return web.Response(status=200)


# -- ids and paging ---------------------------------------------------------------------------------

def eid(entity_type: str, value: str | None) -> dict | None:
    return {"entityType": entity_type, "id": value} if value else None


def required_name(body: dict, what: str) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise errors.BadRequest(f"{what} name should be specified!")
    return name


def id_from(body: dict, field_name: str, entity_type: str | None = None) -> str | None:
    """The uuid of an ``{"entityType","id"}`` field, or None when absent/null."""
    v = body.get(field_name)
    if v is None:
        return None
    if isinstance(v, dict):
        raw = v.get("id")
        if raw is None:
            return None
        return parse_uuid(raw)
    if isinstance(v, str):
        return parse_uuid(v)
    raise errors.BadRequest(f"Invalid {field_name}")


PAGE_PARAMS = [
    Param("pageSize", "integer", True, "Maximum amount of entities in one page"),
    Param("page", "integer", True, "Sequence number of page starting from 0"),
    Param("textSearch", description="Case-insensitive substring of the name or label"),
    Param("sortProperty", description="Property to sort by"),
    Param("sortOrder", enum=["ASC", "DESC"], description="Sort order"),
]


def require_paging(request: web.Request, lookup: str) -> None:
    """TB ≤ 4.3.1.1: without pageSize+page (and without the by-name parameter) no handler matches."""
    if "pageSize" in request.query and "page" in request.query:
        return
    actual = ", ".join(f"{k}={{{v}}}" for k, v in request.query.items())
    raise errors.BadRequest(f'Parameter conditions "pageSize, page" OR "{lookup}" not met for actual request '
                            f"parameters: {actual}")


def _page_int(request: web.Request, name: str) -> int:
    """pageSize / page: Spring's ``int`` parameters (required; its conversion message)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        raise errors.BadRequest(f"Required request parameter '{name}' for method parameter type int is not present")
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not -(2**31) <= value < 2**31:
        raise errors.BadRequest(f"Method parameter '{name}': Failed to convert value of type 'java.lang.String' "
                                f"to required type 'int'; For input string: \"{raw}\"")
    return value


def page(request: web.Request, items: list, sort_keys: dict[str, Callable[[Any], Any]],
         text_of: Callable[[Any], Iterable[str | None]], render: Callable[[Any], dict]) -> web.Response:
    """PageData<T> over an in-memory list (§2.2)."""
    page_size = _page_int(request, "pageSize")
    page_no = _page_int(request, "page")
    if page_size < 1:
        raise errors.BadRequest(f"Incorrect page link page size '{page_size}'. Page size must be greater than zero.")
    if page_no < 0:
        raise errors.BadRequest(f"Incorrect page link page '{page_no}'. Page must be positive integer.")
    text = request.query.get("textSearch")
    if text:
        low = text.lower()
        items = [i for i in items if any(isinstance(t, str) and low in t.lower() for t in text_of(i))]
    prop = request.query.get("sortProperty")
    order = request.query.get("sortOrder")
    # As ThingsBoard 4.3.1.3 (checked live, tests/differential): sortOrder is read only together
    # with a sortProperty, and an unknown property reaches the database, which fails.
    if prop:
        if order is not None and order.upper() not in ("ASC", "DESC"):
            raise errors.BadRequest(f"Unsupported sort order '{order}'! Only 'ASC' or 'DESC' types are allowed.")
        if prop not in sort_keys:
            raise errors.PlatformError("Database error", error_code=errors.DATABASE)
        keyf = sort_keys[prop]
        items = sorted(items, key=lambda i: (keyf(i) is None, keyf(i) or ""),
                       reverse=(order or "ASC").upper() == "DESC")
    else:
        items = sorted(items, key=lambda i: i.id)
    total = len(items)
    start = page_no * page_size
    chunk = items[start:start + page_size] if start < total else []
    total_pages = (total + page_size - 1) // page_size if page_size else 0
    return ok_json({"data": [render(i) for i in chunk], "totalPages": total_pages,
                    "totalElements": total, "hasNext": start + page_size < total})


# -- tenant entities (devices, assets, profiles) --------------------------------------------------

def entity_profile(body: dict, tenant_id: str, kind: str, by_id: Callable[[str], Any],
                   find_or_create: Callable[[str, str], Any], default_of: Callable[[str], Any]) -> Any:
    """A saved device's or asset's profile: the one named by id, else one per ``type`` (made on first
    use, like TB's findOrCreate), else the tenant default."""
    profile_id = id_from(body, f"{kind}ProfileId")
    if profile_id:
        profile = by_id(profile_id)
        if profile is None or profile.tenant_id != tenant_id:
            raise errors.BadRequest(f"{kind.capitalize()} is referencing non existing {kind} profile!")
    elif isinstance(body.get("type"), str) and body["type"].strip():
        profile = find_or_create(tenant_id, body["type"])
    else:
        profile = default_of(tenant_id)
    return profile


def owned(request: web.Request, raw_id: str, lookup: Callable[[str], Any], what: str) -> Any:
    """The caller's own entity by id; another tenant's is answered like a missing one (TB's 404)."""
    principal = tenant_admin(request)
    item_id = parse_uuid(raw_id)
    item = lookup(item_id)
    if item is None or item.tenant_id != principal.tenant_id:
        raise errors.NotFound(f"{what} with id [{item_id}] is not found")
    return item


def required_query(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if value is None:
        raise errors.BadRequest(f"Required request parameter '{name}' for method parameter type String is not present")
    return value


def one_by_name(request: web.Request, name: str, lookup: Callable[[str, str], Any],
                render: Callable[[Any], dict]) -> web.Response:
    principal = tenant_admin(request)
    item = lookup(principal.tenant_id, name)
    if item is None:
        raise errors.NotFound()
    return ok_json(render(item))


def entity_types(request: web.Request, items_of: Callable[[str], list], entity_type: str) -> web.Response:
    principal = tenant_admin(request)
    types = sorted({i.type for i in items_of(principal.tenant_id)})
    return ok_json([{"tenantId": eid("TENANT", principal.tenant_id), "entityType": entity_type, "type": t}
                    for t in types])


def entity_sort(profile_name: str) -> dict[str, Callable[[Any], Any]]:
    """sortProperty keys of a device or asset page; the profile-name column is named after the kind."""
    return {"createdTime": lambda e: e.created_time, "name": lambda e: e.name, "type": lambda e: e.type,
            "label": lambda e: e.label, profile_name: lambda e: e.type, "customerTitle": lambda e: None}


def _of_type(request: web.Request, items: list) -> list:
    if request.query.get("type", "").strip():
        items = [i for i in items if i.type == request.query["type"]]
    return items


def tenant_page(request: web.Request, name_param: str, by_name: Callable[[str, str], Any],
                items_of: Callable[[str], list], sort_keys: dict, render: Callable[[Any], dict]) -> web.Response:
    """/api/tenant/devices and /api/tenant/assets: one entity by name, or a page filtered by type."""
    if name_param in request.query:
        return one_by_name(request, request.query[name_param], by_name, render)
    principal = tenant_admin(request)
    # The 1.x form ?limit=N (the tutorial's RestClient) is answered like TB ≤ 4.3.1.1: 400.
    require_paging(request, name_param)
    items = _of_type(request, items_of(principal.tenant_id))
    return page(request, items, sort_keys, lambda e: (e.name, e.label), render)


def tenant_infos_page(request: web.Request, profile_param: str, items_of: Callable[[str], list],
                      sort_keys: dict, render: Callable[[Any], dict]) -> web.Response:
    principal = tenant_admin(request)
    items = _of_type(request, items_of(principal.tenant_id))
    if request.query.get(profile_param):
        pid = parse_uuid(request.query[profile_param])
        items = [i for i in items if i.profile_id == pid]
    return page(request, items, sort_keys, lambda e: (e.name, e.label), render)
