"""The platform's errors (tbspark/platform/errors.py) and their one translation (rest/errors.py): the
store raises them without knowing the web framework, and the middleware answers each with ThingsBoard's
status and body; the layering rule of docs/architecture.md, checked on the imports."""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

import tbspark.platform.store
from tbspark.platform import errors
from tbspark.platform.rest.errors import error_middleware
from tbspark.platform.store import Store

STORE_DIR = Path(tbspark.platform.store.__file__).parent
FRAMEWORK_FREE = sorted(STORE_DIR.glob("*.py")) + [STORE_DIR.parent / "errors.py"]
FORBIDDEN = ("aiohttp", "tbspark.platform.rest")


def _forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def _imported_modules(path: Path) -> list[str]:
    package = "tbspark.platform" + ("" if path.parent.name == "platform" else "." + path.parent.name)
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def test_the_store_and_the_platform_errors_import_no_web_framework():
    """docs/architecture.md: the store raises tbspark.platform.errors; only rest/ knows aiohttp."""
    assert len(FRAMEWORK_FREE) > 5, FRAMEWORK_FREE  # the glob found the store's modules
    offending = {str(p.relative_to(STORE_DIR.parent)): m for p in FRAMEWORK_FREE
                 for m in _imported_modules(p) if _forbidden(m)}
    assert offending == {}
    # Nor through a module they import: load them alone and look at what came along.
    modules = ["tbspark.platform.errors"] + [f"tbspark.platform.store.{p.stem}" for p in FRAMEWORK_FREE
                                             if p.parent == STORE_DIR and p.stem != "__init__"]
    code = (f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
            f"print(sorted(k for k in sys.modules if k.startswith({FORBIDDEN!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_import_check_sees_a_relative_import_of_the_rest_layer(tmp_path):
    """The check above would pass vacuously if it misread ``from ..rest import errors``."""
    fake = tmp_path / "store" / "x.py"
    fake.parent.mkdir()
    fake.write_text("from ..rest import errors\nfrom aiohttp import web\n")
    assert [m for m in _imported_modules(fake) if _forbidden(m)] == [
        "tbspark.platform.rest", "tbspark.platform.rest.errors", "aiohttp", "aiohttp.web"]


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "p.db")
    yield s
    s.close()


def test_the_store_refuses_with_thingsboards_answer_and_no_web_framework(store):
    tenant = store.create_tenant("T")
    profile = store.default_device_profile(tenant.id)
    first = asyncio.run(store.save_device(store.new_device(tenant.id, "boiler", profile)))
    with pytest.raises(errors.BadRequest) as dup:
        asyncio.run(store.save_device(store.new_device(tenant.id, "boiler", profile)))
    assert (dup.value.status, dup.value.error_code, dup.value.message) == (
        400, 31, "Device with such name already exists!")
    # Not a ValueError: the MQTT gateway reads ValueError as a malformed payload, not a store refusal.
    assert not isinstance(dup.value, ValueError)
    asyncio.run(store.save_device(replace(first, label="renamed"), expected_version=first.version))
    with pytest.raises(errors.Conflict) as stale:
        asyncio.run(store.save_device(replace(first, label="again"), expected_version=first.version))
    assert (stale.value.status, stale.value.error_code, stale.value.message) == (
        409, 35, "Device was already changed by someone else")


def _answer(exc: BaseException, method: str = "GET") -> web.Response:
    async def handler(request: web.Request) -> web.Response:
        raise exc
    return asyncio.run(error_middleware(make_mocked_request(method, "/api/x"), handler))


@pytest.mark.parametrize("exc, status, message, code", [
    (errors.BadRequest("Invalid UUID string: x"), 400, "Invalid UUID string: x", 31),
    (errors.NotFound(), 404, "Requested item wasn't found!", 32),
    (errors.AuthFailed(), 401, "Authentication failed", 10),
    (errors.TokenExpired(), 401, "Token has expired", 11),
    (errors.Forbidden(), 403, "You don't have permission to perform this operation!", 20),
    (errors.Conflict("Profile"), 409, "Profile was already changed by someone else", 35),
    (errors.StoreFailed(sqlite3.OperationalError("database or disk is full")), 500,
     "Failed to save: database or disk is full", 2),
    (errors.PlatformError("Database error", error_code=errors.DATABASE), 500, "Database error", 46),
    (errors.PlatformError("Content-Type 'text/plain' is not supported", status=415), 415,
     "Content-Type 'text/plain' is not supported", 2),
    (web.HTTPNotFound(), 404, "Not Found", 32),
    (web.HTTPRequestEntityTooLarge(max_size=1, actual_size=2), 413, "Request body is too large", 31),
])
def test_each_error_becomes_thingsboards_json_answer(exc, status, message, code):
    before = int(time.time() * 1000)
    resp = _answer(exc)
    body = json.loads(resp.text)
    assert (resp.status, resp.content_type) == (status, "application/json")
    assert list(body) == ["status", "message", "errorCode", "timestamp"]
    assert (body["status"], body["message"], body["errorCode"]) == (status, message, code)
    assert before <= body["timestamp"] <= int(time.time() * 1000)


def test_a_wrong_method_names_the_method():
    resp = _answer(web.HTTPMethodNotAllowed("PATCH", ["GET"]), method="PATCH")
    assert (resp.status, json.loads(resp.text)["message"]) == (405, "Request method 'PATCH' is not supported")


def test_the_telemetry_controllers_errors_are_bare_text():
    resp = _answer(errors.PlainTextError("Invalid scope: NOPE"))
    assert (resp.status, resp.content_type, resp.text) == (400, "text/plain", "Invalid scope: NOPE")
    resp = _answer(errors.PlainTextError("Device with requested id wasn't found!", status=404))
    assert (resp.status, resp.text) == (404, "Device with requested id wasn't found!")


def test_a_bug_is_a_500_without_its_traceback_which_goes_to_the_log(caplog):
    with caplog.at_level(logging.ERROR, logger="tbspark.platform"):
        resp = _answer(KeyError("secret internals"))
    body = json.loads(resp.text)
    assert (resp.status, body["message"], body["errorCode"]) == (500, "Internal server error", 2)
    assert "secret internals" not in resp.text
    assert "unhandled error on GET /api/x" in caplog.text and "secret internals" in caplog.text
