"""The one place errors become HTTP answers: ``error_middleware`` renders the platform's errors
(``tbspark/platform/errors.py``, framework-free) and aiohttp's own (no route, wrong method, body too
large) as ThingsBoard's answers, and any other exception as a 500 without a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Awaitable, Callable

from aiohttp import web

from tbspark.platform.errors import BAD_REQUEST_PARAMS, GENERAL, ITEM_NOT_FOUND, PlatformError

log = logging.getLogger("tbspark.platform")


def json_error(status: int, message: str, error_code: int) -> web.Response:
    """ThingsboardErrorResponseHandler's body."""
    body = {"status": status, "message": message, "errorCode": error_code, "timestamp": int(time.time() * 1000)}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def response(exc: PlatformError) -> web.Response:
    if exc.plain_text:
        return web.Response(status=exc.status, text=exc.message, content_type="text/plain")
    return json_error(exc.status, exc.message, exc.error_code)


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """The outermost middleware: everything inside it (the platform's guard, the handlers) raises."""
    try:
        return await handler(request)
    except PlatformError as exc:
        return response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return json_error(404, "Not Found", ITEM_NOT_FOUND)
        if exc.status == 405:
            return json_error(405, f"Request method '{request.method}' is not supported", GENERAL)
        if exc.status == 413:
            return json_error(413, "Request body is too large", BAD_REQUEST_PARAMS)
        return json_error(exc.status, exc.reason, GENERAL)
    except asyncio.CancelledError:
        raise
    except Exception:  # never a traceback in a response
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "Internal server error", GENERAL)
