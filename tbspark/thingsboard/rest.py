"""REST client for any ThingsBoard 3.6+/4.x (real or embedded): login and token refresh, typed
errors, retries with backoff, paging, and the lookups provision, the Spark sink and verify use."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any, Iterator
from urllib.parse import quote

import jwt
import requests
from requests.adapters import HTTPAdapter

from tbspark.errors import (
    TbApiError,
    TbAuthError,
    TbNotFoundError,
    TbUnavailableError,
)

# Refresh this long before the access token's exp, so a request never races the expiry.
REFRESH_MARGIN_S = 60
ITEM_NOT_FOUND = 32  # ThingsBoard errorCode of "Requested item wasn't found!"
JWT_EXPIRED = 11


def _body_error(resp: requests.Response) -> tuple[str, int | None]:
    """ThingsBoard answers errors as {"status","message","errorCode"} or, from the telemetry
    controller, as a bare string; Spring's own 404s carry {"error": ...}."""
    text = resp.text or ""
    try:
        body = resp.json()
    except ValueError:
        return (text.strip()[:300] or resp.reason or "no message"), None
    if isinstance(body, dict):
        msg = body.get("message") or body.get("error") or text[:300]
        code = body.get("errorCode")
        return str(msg), code if isinstance(code, int) else None
    return str(body)[:300], None


class TbRestClient:
    """One logged-in tenant session over a pooled ``requests.Session`` (safe to share between the
    threads of a small pool: token refresh is serialised by a lock)."""

    def __init__(self, url: str, username: str, password: str, *, timeout_s: float = 10,
                 retries: int = 5, backoff_s: float = 0.5, pool_size: int = 16):
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout_s = timeout_s
        self.retries = max(1, retries)
        self.backoff_s = backoff_s
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._token: str | None = None
        self._refresh_token: str | None = None
        self._exp = 0.0
        self._lock = threading.Lock()
        # None = not yet known; True = the server has /api/tenant/device?deviceName= (TB >= 4.3.1.2)
        self._new_name_paths: bool | None = None

    # ---- auth -------------------------------------------------------------------------------

    def login(self) -> None:
        body = self._send("POST", "/api/auth/login", json_body={"username": self.username,
                                                                "password": self._password},
                          auth=False)
        self._take_tokens(body)

    def _take_tokens(self, body: Any) -> None:
        if not isinstance(body, dict) or not body.get("token"):
            raise TbApiError(200, "login answer has no token", method="POST", path="/api/auth/login",
                             hint=f"is {self.url} a ThingsBoard server?")
        self._token = body["token"]
        self._refresh_token = body.get("refreshToken")
        try:
            claims = jwt.decode(self._token, options={"verify_signature": False})
            self._exp = float(claims.get("exp", 0))
        except jwt.PyJWTError:
            self._exp = time.time() + 300  # not a JWT we can read: re-login every 5 minutes
        if self._exp <= 0:
            self._exp = time.time() + 300

    def _ensure_token(self) -> str:
        with self._lock:
            if self._token is None:
                self.login()
            elif time.time() >= self._exp - REFRESH_MARGIN_S:
                self._refresh()
            assert self._token is not None
            return self._token

    def _refresh(self) -> None:
        if self._refresh_token:
            try:
                body = self._send("POST", "/api/auth/token",
                                  json_body={"refreshToken": self._refresh_token}, auth=False)
                self._take_tokens(body)
                return
            except TbAuthError:
                pass  # refresh token expired too: log in again
        self.login()

    # ---- transport --------------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: dict | None = None,
                json_body: Any = None, text_body: str | None = None) -> Any:
        """An authenticated call; returns the decoded JSON body (None when empty)."""
        try:
            return self._send(method, path, params=params, json_body=json_body, text_body=text_body)
        except TbAuthError as exc:
            # An access token revoked or expired early (server clock, logout): log in once more.
            if (exc.status == 401 and exc.error_code in (JWT_EXPIRED, 10)
                    and exc.path != "/api/auth/login" and self._token):
                with self._lock:
                    self._token = None
                return self._send(method, path, params=params, json_body=json_body,
                                  text_body=text_body)
            raise

    def _send(self, method: str, path: str, *, params: dict | None = None, json_body: Any = None,
              text_body: str | None = None, auth: bool = True) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":"))
            headers["Content-Type"] = "application/json"
        elif text_body is not None:
            data = text_body
            headers["Content-Type"] = "text/plain"
        last = ""
        for attempt in range(self.retries):
            if auth:
                headers["X-Authorization"] = f"Bearer {self._ensure_token()}"
            try:
                resp = self._session.request(method, self.url + path, params=params, data=data,
                                             headers=headers, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = type(exc).__name__
            else:
                if resp.status_code < 400:
                    if not resp.content:
                        return None
                    try:
                        return resp.json()
                    except ValueError:
                        return resp.text
                if resp.status_code != 429 and resp.status_code < 500:
                    raise self._error(resp, method, path)
                last = f"HTTP {resp.status_code}"
            if attempt + 1 < self.retries:
                # Exponential backoff with jitter so a pool of workers does not retry in lockstep.
                time.sleep(self.backoff_s * (2 ** attempt) * random.uniform(0.5, 1.5))
        raise TbUnavailableError(
            f"cannot reach ThingsBoard at {self.url} after {self.retries} attempts ({last})",
            "check that it is running and that TB_URL (or the scenario's platform.url) points at it")

    def _error(self, resp: requests.Response, method: str, path: str) -> TbApiError:
        message, code = _body_error(resp)
        status = resp.status_code
        if status in (401, 403):
            hint = ("check TB_USERNAME / TB_PASSWORD (or the scenario's platform.username/password)"
                    if path == "/api/auth/login" else "log in as a tenant administrator")
            return TbAuthError(status, message, code, method, path, hint=hint)
        if status == 404:
            return TbNotFoundError(status, message, code, method, path)
        return TbApiError(status, message, code, method, path)

    def paged(self, path: str, params: dict | None = None, page_size: int = 1000) -> Iterator[dict]:
        """Every element of a ThingsBoard ``PageData`` listing, page after page."""
        page = 0
        while True:
            body = self.request("GET", path, params={**(params or {}), "pageSize": page_size,
                                                     "page": page})
            yield from body.get("data", [])
            if not body.get("hasNext"):
                return
            page += 1

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "TbRestClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- lookups by name (new path on TB >= 4.3.1.2, old path before) ---------------------

    def _by_name(self, kind: str, name: str) -> dict | None:
        new = (f"/api/tenant/{kind}", {f"{kind}Name": name})
        old = (f"/api/tenant/{kind}s", {f"{kind}Name": name})
        order = [old] if self._new_name_paths is False else [new, old]
        for path, params in order:
            try:
                found = self.request("GET", path, params=params)
            except TbNotFoundError as exc:
                if exc.error_code == ITEM_NOT_FOUND:
                    if path == new[0]:
                        self._new_name_paths = True
                    return None
                if path == new[0]:
                    self._new_name_paths = False  # no such route: an older server
                    continue
                return None
            except TbApiError as exc:
                if path == new[0] and exc.status in (400, 405, 500):
                    self._new_name_paths = False
                    continue
                raise
            if path == new[0]:
                self._new_name_paths = True
            return found
        return None

    # ---- devices ----------------------------------------------------------------------------

    def get_device_by_name(self, name: str) -> dict | None:
        """The device called ``name``, or None."""
        return self._by_name("device", name)

    def save_device(self, device: dict, access_token: str | None = None) -> dict:
        params = {"accessToken": access_token} if access_token else None
        return self.request("POST", "/api/device", params=params, json_body=device)

    def get_device_credentials(self, device_id: str) -> dict:
        return self.request("GET", f"/api/device/{device_id}/credentials")

    def iter_tenant_devices(self, page_size: int = 1000, type: str | None = None) -> Iterator[dict]:
        params = {"type": type} if type else None
        return self.paged("/api/tenant/devices", params, page_size)

    def delete_device(self, device_id: str) -> None:
        self.request("DELETE", f"/api/device/{device_id}")

    # ---- device profiles --------------------------------------------------------------------

    def get_device_profile_by_name(self, name: str) -> dict | None:
        for prof in self.paged("/api/deviceProfiles", {"textSearch": name}, 100):
            if prof.get("name") == name:
                return prof
        return None

    def get_or_create_device_profile(self, name: str) -> dict:
        found = self.get_device_profile_by_name(name)
        if found:
            return found
        return self.save_device_profile({
            "name": name, "type": "DEFAULT", "transportType": "DEFAULT",
            "provisionType": "DISABLED", "description": "created by tbspark",
            "profileData": {"configuration": {"type": "DEFAULT"},
                            "transportConfiguration": {"type": "DEFAULT"},
                            "provisionConfiguration": {"type": "DISABLED",
                                                       "provisionDeviceSecret": None}},
        })

    def save_device_profile(self, profile: dict) -> dict:
        return self.request("POST", "/api/deviceProfile", json_body=profile)

    # ---- assets -----------------------------------------------------------------------------

    def get_asset_by_name(self, name: str) -> dict | None:
        return self._by_name("asset", name)

    def get_or_create_asset(self, name: str, type: str) -> dict:
        found = self.get_asset_by_name(name)
        if found:
            return found
        try:
            return self.request("POST", "/api/asset", json_body={"name": name, "type": type})
        except TbApiError as exc:
            if exc.status == 400 and "already exists" in exc.api_message:
                found = self.get_asset_by_name(name)  # another writer won the race
                if found:
                    return found
            raise

    # ---- telemetry and attributes -----------------------------------------------------------

    def save_telemetry(self, entity_type: str, entity_id: str, payload: Any) -> None:
        self.request("POST", f"/api/plugins/telemetry/{entity_type}/{entity_id}/timeseries/ANY",
                     json_body=payload)

    def get_timeseries(self, entity_type: str, entity_id: str, keys: list[str], start_ts: int,
                       end_ts: int, limit: int = 100000, agg: str = "NONE", order_by: str = "ASC",
                       strict: bool = True, interval_ms: int = 0) -> dict:
        """History over [start_ts, end_ts). Uses ``/values/timeseries`` with keys+startTs+endTs,
        the spelling every server from 3.6 to 4.x routes to the history handler."""
        params = {"keys": ",".join(keys), "startTs": int(start_ts), "endTs": int(end_ts),
                  "limit": int(limit), "agg": agg, "orderBy": order_by,
                  "useStrictDataTypes": "true" if strict else "false"}
        if interval_ms:
            params["interval"] = int(interval_ms)
        return self.request("GET", f"/api/plugins/telemetry/{entity_type}/{entity_id}"
                                   "/values/timeseries", params=params) or {}

    def get_latest(self, entity_type: str, entity_id: str, keys: list[str],
                   strict: bool = True) -> dict:
        params = {"keys": ",".join(keys), "useStrictDataTypes": "true" if strict else "false"}
        return self.request("GET", f"/api/plugins/telemetry/{entity_type}/{entity_id}"
                                   "/values/timeseries", params=params) or {}

    def get_attributes(self, entity_type: str, entity_id: str, scope: str = "CLIENT_SCOPE",
                       keys: list[str] | None = None) -> dict:
        """Attributes of one scope as {key: value}."""
        params = {"keys": ",".join(keys)} if keys else None
        rows = self.request("GET", f"/api/plugins/telemetry/{entity_type}/{entity_id}"
                                   f"/values/attributes/{scope}", params=params) or []
        return {row["key"]: row["value"] for row in rows}

    # ---- rule chains ------------------------------------------------------------------------

    def save_rule_chain(self, chain: dict) -> dict:
        return self.request("POST", "/api/ruleChain", json_body=chain)

    def save_rule_chain_metadata(self, meta: dict) -> dict:
        return self.request("POST", "/api/ruleChain/metadata", json_body=meta)

    def get_rule_chain_metadata(self, chain_id: str) -> dict:
        return self.request("GET", f"/api/ruleChain/{quote(chain_id)}/metadata")

    def get_rule_chain_by_name(self, name: str) -> dict | None:
        for chain in self.paged("/api/ruleChains", {"textSearch": name, "type": "CORE"}, 100):
            if chain.get("name") == name:
                return chain
        return None
