"""JWT auth as ThingsBoard does it (§1): HS512 tokens with TB's claims, a per-install signing key
kept in <state>/platform/, default lifetimes 9000 s (access) and 604800 s (refresh), scrypt-hashed
passwords, and the demo users created on first start.

Hardening (docs/security.md, "Authentication"): failed logins lock the username for a while, longer
each time (login_throttle.py); a failed login costs one scrypt whether or not the user exists, so
timing does not tell which usernames exist; logout revokes the session's access and refresh tokens,
and those of every pair refreshed from the same login (the ``chainId`` claim)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt

from tbspark.platform import errors
from tbspark.platform.login_throttle import LoginPolicy, LoginThrottle
from tbspark.platform.store import NULL_UUID, Store, User
from tbspark.platform.store.models import new_id, now_ms
from tbspark.state import write_json_atomic

ISSUER = "thingsboard.io"
ACCESS_TTL_S = 9000
REFRESH_TTL_S = 604800
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def check_password(password: str, stored: str) -> bool:
    try:
        _, salt_b64, digest_b64 = stored.split("$")
        digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt_b64), dklen=32, **_SCRYPT)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def load_or_create_key(platform_dir: Path) -> bytes:
    """The signing key, generated randomly on first start (as TB ≥ 3.4.2 does at install)."""
    path = platform_dir / "jwt_signing_key.json"
    if path.exists():
        import json
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)  # a key file from an older install, written before it was private
        return base64.b64decode(json.loads(path.read_text())["signingKey"])
    key = secrets.token_bytes(64)
    write_json_atomic(path, {"signingKey": base64.b64encode(key).decode()})  # 0600
    return key


class RevokedSessions:
    """Session ids ended by ``POST /api/auth/logout`` until their refresh tokens would expire, kept
    in <state>/platform/revoked_sessions.json (0600) so a restart does not bring them back. The ids
    are login chains (``chainId``: the session id of the login a pair descends from)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._until: dict[str, float] = {}
        if path is not None and path.exists():
            import json
            try:
                raw = json.loads(path.read_text())
                self._until = {str(k): float(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
            except (OSError, ValueError, TypeError):
                self._until = {}  # unreadable: tokens issued before it stay valid until they expire

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._until

    MAX_ENTRIES = 100_000  # ~100k logins (35 ms of scrypt each) within one refresh lifetime to reach it

    def add(self, session_id: str, until_s: float) -> None:
        now = time.time()
        self._until = {k: v for k, v in self._until.items() if v > now}  # expired tokens need no entry
        while len(self._until) >= self.MAX_ENTRIES:  # bounded: the oldest logout is forgotten first
            del self._until[next(iter(self._until))]
        self._until[session_id] = until_s
        if self.path is not None:
            write_json_atomic(self.path, self._until)


@dataclass(frozen=True)
class Principal:
    """Who a verified access token belongs to."""

    user: User
    authority: str
    tenant_id: str
    customer_id: str
    chain_id: str = ""  # the login this token descends from, through refreshes


def _chain(claims: dict) -> str:
    """The login chain of a token: its ``chainId``, or its session id for a token without one."""
    chain = claims.get("chainId") or claims.get("sessionId")
    return chain if isinstance(chain, str) else ""


class Auth:
    def __init__(self, store: Store, key: bytes, access_ttl_s: int = ACCESS_TTL_S,
                 refresh_ttl_s: int = REFRESH_TTL_S, login_policy: LoginPolicy | None = None,
                 revoked_file: Path | None = None) -> None:
        self.store = store
        self.key = key
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self.throttle = LoginThrottle(login_policy or LoginPolicy())
        # Checked when the username is unknown, so that answer costs the same scrypt as a wrong password.
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))
        self.revoked = RevokedSessions(revoked_file)
        # Verified tokens → (principal, exp, chain id): the telemetry hot path skips the HMAC after
        # the first call; logout drops its chain's entries.
        self._verified: dict[str, tuple[Principal, float, str]] = {}

    # -- bootstrap -------------------------------------------------------------------------------

    def ensure_users(self, sysadmin: tuple[str, str], tenant_admin: tuple[str, str]) -> str:
        """Create the sysadmin, a tenant and its administrator on first start; returns the tenant id."""
        store = self.store
        if store.user_by_email(sysadmin[0]) is None:
            store.save_user(User(new_id(), NULL_UUID, NULL_UUID, sysadmin[0], "SYS_ADMIN",
                                 hash_password(sysadmin[1]), now_ms(), first_name="System", last_name="Administrator"))
        admin = store.user_by_email(tenant_admin[0])
        if admin is not None:
            return admin.tenant_id
        tenant = next(iter(store.tenants.values()), None) or store.create_tenant("Tenant")
        store.save_user(User(new_id(), tenant.id, NULL_UUID, tenant_admin[0], "TENANT_ADMIN",
                             hash_password(tenant_admin[1]), now_ms()))
        return tenant.id

    # -- tokens ----------------------------------------------------------------------------------

    def _pair(self, user: User, chain: str | None = None) -> dict[str, str]:
        """A new pair with a new session id (as TB, also on refresh). ``chainId`` (not TB's) names the
        login it descends from, so logout also ends the pairs refreshed before it."""
        now = int(time.time())
        session = str(uuid.uuid4())
        chain = chain or session
        access = {"sub": user.email, "userId": user.id, "scopes": [user.authority], "sessionId": session,
                  "chainId": chain,
                  "iss": ISSUER, "iat": now, "exp": now + self.access_ttl_s,
                  "firstName": user.first_name, "lastName": user.last_name, "enabled": user.enabled,
                  "isPublic": False}
        if user.tenant_id != NULL_UUID:
            access["tenantId"] = user.tenant_id
        if user.customer_id != NULL_UUID:
            access["customerId"] = user.customer_id
        refresh = {"sub": user.email, "userId": user.id, "scopes": ["REFRESH_TOKEN"], "sessionId": session,
                   "chainId": chain,
                   "isPublic": False, "jti": str(uuid.uuid4()), "iss": ISSUER, "iat": now,
                   "exp": now + self.refresh_ttl_s}
        return {"token": jwt.encode(access, self.key, algorithm="HS512"),
                "refreshToken": jwt.encode(refresh, self.key, algorithm="HS512")}

    def login(self, username: object, password: object) -> dict[str, str]:
        """A JWT pair, or TB's 401. Runs off the event loop (scrypt). Every failure path for a
        well-formed request costs one scrypt, known user or not; a locked username costs none and
        answers the same whether it exists or not (the throttle counts unknown names too)."""
        if not isinstance(username, str) or not isinstance(password, str) or not username.strip() or not password:
            raise errors.AuthFailed("Authentication failed")
        self.throttle.attempt(username)  # raises TB's "locked" 401 while the name is locked
        user = self.store.user_by_email(username)
        matches = check_password(password, user.password_hash if user is not None else self._dummy_hash)
        if user is None or not matches:
            raise errors.AuthFailed("Invalid username or password")
        self.throttle.succeeded(username)
        if not user.enabled:
            raise errors.AuthFailed("User account is not active")
        return self._pair(user)

    def _decode(self, token: str) -> dict:
        try:
            return jwt.decode(token, self.key, algorithms=["HS512"], issuer=ISSUER,
                              options={"require": ["exp", "sub"]})
        except (jwt.ExpiredSignatureError, jwt.InvalidSignatureError):
            # ThingsBoard maps both to JwtExpiredTokenException.
            raise errors.TokenExpired() from None
        except jwt.PyJWTError:
            raise errors.AuthFailed("Invalid username or password") from None

    def refresh(self, refresh_token: object) -> dict[str, str]:
        if not isinstance(refresh_token, str) or not refresh_token.strip():
            raise errors.AuthFailed("Authentication failed")
        claims = self._decode(refresh_token)
        if claims.get("scopes") != ["REFRESH_TOKEN"]:  # ThingsBoard: a 500, errorCode 2 (checked live)
            raise errors.PlatformError("Invalid Refresh Token scope")
        chain = _chain(claims)
        if chain in self.revoked:
            raise errors.TokenExpired()  # TB: a token of an invalidated session is "outdated"
        user = self.store.users.get(claims.get("userId", ""))
        if user is None:
            raise errors.AuthFailed("User not found")
        if not user.enabled:
            raise errors.AuthFailed("User account is not active")
        return self._pair(user, chain or None)

    def verify(self, header_value: str | None) -> Principal:
        """Principal of an ``X-Authorization``/``Authorization`` header value ``Bearer <jwt>``."""
        if not header_value or not header_value.startswith("Bearer "):
            raise errors.AuthFailed("Authentication failed")
        token = header_value[7:]
        hit = self._verified.get(token)
        if hit is not None and hit[1] > time.time():
            return hit[0]
        claims = self._decode(token)
        scopes = claims.get("scopes") or []
        if scopes == ["REFRESH_TOKEN"] or not scopes:
            raise errors.AuthFailed("Invalid username or password")
        chain = _chain(claims)
        if chain in self.revoked:
            raise errors.TokenExpired()
        user = self.store.users.get(claims.get("userId", ""))
        if user is None or user.email != claims.get("sub"):
            raise errors.AuthFailed("Invalid username or password")
        if not user.enabled:
            raise errors.AuthFailed("User account is not active")
        principal = Principal(user, scopes[0], user.tenant_id, user.customer_id, chain)
        if len(self._verified) > 10000:
            self._verified.clear()
        self._verified[token] = (principal, float(claims["exp"]), chain)
        return principal

    def logout(self, principal: Principal) -> None:
        """End the caller's session, as ThingsBoard's logout does (UserSessionInvalidationEvent): the
        access token and the refresh token issued with it stop working, and (beyond TB) so do the
        pairs of the same login refreshed before; other logins do not."""
        if not principal.chain_id:
            return
        # Every token of the chain expires by now + refresh_ttl_s at the latest.
        self.revoked.add(principal.chain_id, time.time() + self.refresh_ttl_s)
        self._verified = {t: v for t, v in self._verified.items() if v[2] != principal.chain_id}
