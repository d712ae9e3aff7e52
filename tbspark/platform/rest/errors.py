"""ThingsBoard's error answers (contract §1.5, §2.3) as exceptions the REST layer turns into responses.

Two styles: the JSON body ``{"status","message","errorCode","timestamp"}`` of ThingsboardErrorResponseHandler,
and the telemetry controller's bare-string bodies (``bare=True``). The store raises these too (moto-style:
models raise errors that carry their HTTP answer), and the catch-all middleware renders them.
"""

from __future__ import annotations

import json
import time

from aiohttp import web

GENERAL = 2
AUTHENTICATION = 10
JWT_TOKEN_EXPIRED = 11
PERMISSION_DENIED = 20
INVALID_ARGUMENTS = 30
BAD_REQUEST_PARAMS = 31
ITEM_NOT_FOUND = 32
VERSION_CONFLICT = 35
DATABASE = 46


class TbHttpError(Exception):
    """An answer ThingsBoard would give: HTTP status, message, errorCode; ``bare`` = plain-text body."""

    def __init__(self, status: int, message: str, error_code: int = GENERAL, bare: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.bare = bare

    def response(self) -> web.Response:
        if self.bare:
            return web.Response(status=self.status, text=self.message, content_type="text/plain")
        return json_error(self.status, self.message, self.error_code)


def json_error(status: int, message: str, error_code: int) -> web.Response:
    body = {"status": status, "message": message, "errorCode": error_code, "timestamp": int(time.time() * 1000)}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def bad_request(message: str) -> TbHttpError:
    return TbHttpError(400, message, BAD_REQUEST_PARAMS)


def not_found(message: str = "Requested item wasn't found!") -> TbHttpError:
    return TbHttpError(404, message, ITEM_NOT_FOUND)


def auth_failed(message: str = "Authentication failed") -> TbHttpError:
    return TbHttpError(401, message, AUTHENTICATION)


def token_expired() -> TbHttpError:
    return TbHttpError(401, "Token has expired", JWT_TOKEN_EXPIRED)


def forbidden() -> TbHttpError:
    return TbHttpError(403, "You don't have permission to perform this operation!", PERMISSION_DENIED)


def conflict(what: str) -> TbHttpError:
    return TbHttpError(409, f"{what} was already changed by someone else", VERSION_CONFLICT)


def store_failed(exc: BaseException) -> TbHttpError:
    """A write the store could not commit (disk full, database locked): ThingsBoard's 500 for a
    failed save, with the cause; the store's writer has logged it (once), so no traceback here."""
    return TbHttpError(500, f"Failed to save: {exc}", GENERAL)


def bare(status: int, message: str) -> TbHttpError:
    """The telemetry controller's plain-string error bodies."""
    return TbHttpError(status, message, bare=True)
