"""The platform's error answers as plain exceptions: what ThingsBoard would answer, without a web framework.

The store, auth and the REST handlers raise these (moto's model: models raise, the web layer
translates); one middleware, ``rest/errors.py``, turns them into ThingsBoard's answers: the JSON body
``{"status","message","errorCode","timestamp"}`` of ThingsboardErrorResponseHandler (contract §1.5,
§2.3), or the telemetry controller's bare-string body for a ``PlainTextError``. Nothing here imports
aiohttp, so the store stays usable and testable without it.

These are answers to the platform's clients, not failures of tbspark, so they stand outside the
``TbsparkError`` tree of ``tbspark/errors.py`` (whose errors reach a person at the CLI)::

    PlatformError                 500 GENERAL, or the status / errorCode given
    ├── BadRequest                400 BAD_REQUEST_PARAMS
    ├── NotFound                  404 ITEM_NOT_FOUND
    ├── AuthFailed                401 AUTHENTICATION
    │   └── TokenExpired          401 JWT_TOKEN_EXPIRED
    ├── Forbidden                 403 PERMISSION_DENIED
    ├── Conflict                  409 VERSION_CONFLICT (optimistic locking: a stale ``version``)
    ├── StoreFailed               500 GENERAL "Failed to save: <cause>"
    └── PlainTextError            the message alone as the body (400 unless given)
"""

from __future__ import annotations

# ThingsBoard's ThingsboardErrorCode values.
GENERAL = 2
AUTHENTICATION = 10
JWT_TOKEN_EXPIRED = 11
PERMISSION_DENIED = 20
INVALID_ARGUMENTS = 30
BAD_REQUEST_PARAMS = 31
ITEM_NOT_FOUND = 32
VERSION_CONFLICT = 35
DATABASE = 46


class PlatformError(Exception):
    """An answer ThingsBoard would give: HTTP ``status``, ``message``, ThingsBoard ``error_code``;
    ``plain_text``: the body is the message alone. Subclasses set the defaults of their kind.

    Deliberately not a ValueError: the MQTT gateway reads ValueError as a malformed payload, and a
    store refusal (a duplicate name) is not one."""

    status = 500
    error_code = GENERAL
    plain_text = False

    def __init__(self, message: str, *, status: int | None = None, error_code: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if error_code is not None:
            self.error_code = error_code


class BadRequest(PlatformError):
    status = 400
    error_code = BAD_REQUEST_PARAMS


class NotFound(PlatformError):
    status = 404
    error_code = ITEM_NOT_FOUND

    def __init__(self, message: str = "Requested item wasn't found!"):
        super().__init__(message)


class AuthFailed(PlatformError):
    status = 401
    error_code = AUTHENTICATION

    def __init__(self, message: str = "Authentication failed"):
        super().__init__(message)


class TokenExpired(AuthFailed):
    error_code = JWT_TOKEN_EXPIRED

    def __init__(self) -> None:
        super().__init__("Token has expired")


class Forbidden(PlatformError):
    status = 403
    error_code = PERMISSION_DENIED

    def __init__(self, message: str = "You don't have permission to perform this operation!"):
        super().__init__(message)


class Conflict(PlatformError):
    """A save carrying a stale ``version`` (ThingsBoard's optimistic locking)."""

    status = 409
    error_code = VERSION_CONFLICT

    def __init__(self, what: str):
        super().__init__(f"{what} was already changed by someone else")


class StoreFailed(PlatformError):
    """A write the store could not commit (disk full, database locked): ThingsBoard's 500 for a
    failed save, with the cause; the store's writer has logged it (once), so no traceback."""

    def __init__(self, cause: BaseException):
        super().__init__(f"Failed to save: {cause}")


class PlainTextError(PlatformError):
    """The telemetry controller's plain-string error bodies."""

    status = 400
    plain_text = True
