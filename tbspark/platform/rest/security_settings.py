"""/api/admin/securitySettings: ThingsBoard's security settings, of which the platform acts on
``maxFailedLoginAttempts`` (the failed-login lockout, login_throttle.py); the other fields are kept and
given back as ThingsBoard does. System administrator only, saved in <state>/platform/
security_settings.json (0600), so a lockout configured the ThingsBoard way survives a restart."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from aiohttp import web

from tbspark.platform import errors
from tbspark.platform.rest.common import PRINCIPAL_KEY, json_object, ok_json, platform, route
from tbspark.state import write_json_atomic

FILE_NAME = "security_settings.json"
# DefaultSecuritySettingsService's answer before anyone saved settings (maxFailedLoginAttempts is
# filled in from the running policy).
DEFAULTS = {
    "passwordPolicy": {"minimumLength": 6, "maximumLength": 72},
    "maxFailedLoginAttempts": None,
    "userLockoutNotificationEmail": None,
    "mobileSecretKeyLength": 64,
    "userActivationTokenTtl": 24,
    "passwordResetTokenTtl": 24,
}


def load(platform_dir: Path) -> dict | None:
    """The saved settings, or None when none were saved (or the file is unreadable)."""
    try:
        saved = json.loads((platform_dir / FILE_NAME).read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def max_failed_attempts(settings: dict) -> int:
    """ThingsBoard: null or 0 means no lockout."""
    value = settings.get("maxFailedLoginAttempts")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _validate(body: dict) -> dict:
    problems = []
    for name in ("userActivationTokenTtl", "passwordResetTokenTtl"):  # @NotNull @Min(1) @Max(24)
        v = body.get(name)
        if v is None:
            problems.append(f"{name} must not be null")
        elif not isinstance(v, int) or isinstance(v, bool):
            raise errors.BadRequest("Invalid request body")
        elif v < 1:
            problems.append(f"{name} must be greater than or equal to 1")
        elif v > 24:
            problems.append(f"{name} must be less than or equal to 24")
    attempts = body.get("maxFailedLoginAttempts")
    if attempts is not None and (not isinstance(attempts, int) or isinstance(attempts, bool)
                                 or not -(2**31) <= attempts < 2**31):
        raise errors.BadRequest("Invalid request body")
    if problems:
        raise errors.BadRequest("Validation error: " + ", ".join(sorted(problems)))
    return {**DEFAULTS, **{k: v for k, v in body.items() if k in DEFAULTS}}


def _sysadmin(request: web.Request) -> None:
    if request[PRINCIPAL_KEY].authority != "SYS_ADMIN":
        raise errors.Forbidden()


@route("GET", "/api/admin/securitySettings", "Security settings (system administrator)", "admin")
async def get_settings(request: web.Request) -> web.Response:
    _sysadmin(request)
    p = platform(request)
    current = load(p.dir) or DEFAULTS
    attempts = p.auth.throttle.policy.max_failed_attempts
    return ok_json({**current, "maxFailedLoginAttempts": attempts or None})


@route("POST", "/api/admin/securitySettings", "Save security settings; maxFailedLoginAttempts sets the "
       "failed-login lockout (system administrator)", "admin", body="json")
async def save_settings(request: web.Request) -> web.Response:
    _sysadmin(request)
    p = platform(request)
    settings = _validate(await json_object(request))
    write_json_atomic(p.dir / FILE_NAME, settings)  # 0600
    throttle = p.auth.throttle
    throttle.policy = dataclasses.replace(throttle.policy, max_failed_attempts=max_failed_attempts(settings))
    return ok_json(settings)
