"""The platform's OpenAPI 3 document, built from the route table the REST modules register
(so it always describes exactly the /api routes served), at /tbspark/openapi.json."""

from __future__ import annotations

import re

from aiohttp import web

from tbspark.platform.rest.common import ROUTES, ok_json, route

_VAR = re.compile(r"{(\w+)}")
_ERROR = {"type": "object", "properties": {"status": {"type": "integer"}, "message": {"type": "string"},
                                          "errorCode": {"type": "integer"}, "timestamp": {"type": "integer"}}}

# Server-side RPC answers besides 200/400/401 (rest/rpc.py); their bodies are empty or a bare string.
_RPC_RESPONSES = {
    "403": {"description": "A system administrator cannot call a device"},
    "406": {"description": "The device's reply is not JSON"},
    "408": {"description": "v1 path: the device received the request but did not answer in time"},
    "409": {"description": "v1 path: no session of the device could receive the request in time"},
    "504": {"description": "v2 path: no answer (or no delivery) in time; most likely the device is offline"},
}


def _schema(p) -> dict:
    s: dict = {"type": p.type}
    if p.enum:
        s["enum"] = p.enum
    return s


def document(version: str = "0.1.0") -> dict:
    paths: dict = {}
    for r in ROUTES:
        if not r.path.startswith("/api/"):
            continue
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in _VAR.findall(r.path)]
        params += [{"name": p.name, "in": "query", "required": p.required, "description": p.description,
                    "schema": _schema(p)} for p in r.params]
        op: dict = {
            "operationId": f"{r.handler.__module__.rsplit('.', 1)[-1]}_{r.handler.__name__}_{r.method.lower()}",
            "summary": r.summary, "tags": [r.tag], "parameters": params,
            "responses": {"200": {"description": "OK"},
                          "400": {"description": "Bad request", "content": {"application/json": {"schema": _ERROR}}},
                          "401": {"description": "Unauthorized", "content": {"application/json": {"schema": _ERROR}}},
                          "404": {"description": "Not found"}},
        }
        if r.tag == "rpc":
            op["responses"].update(_RPC_RESPONSES)
        if r.body == "json":
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
        elif r.body == "text":
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {}}, "text/plain": {"schema": {"type": "string"}}}}
        if r.auth:
            op["security"] = [{"bearerAuth": []}]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "tbspark embedded platform (ThingsBoard-compatible REST API)", "version": version},
        "paths": paths,
        "components": {"securitySchemes": {
            "bearerAuth": {"type": "apiKey", "in": "header", "name": "X-Authorization",
                           "description": "Bearer <JWT> from POST /api/auth/login"}}},
    }


@route("GET", "/tbspark/openapi.json", "This document", "tbspark", auth=False)
async def openapi(request: web.Request) -> web.Response:
    return ok_json(document())
