"""The embedded ThingsBoard-compatible platform in one process: store + auth + REST (aiohttp) +
MQTT transport + rule engine, all on one asyncio loop. ``serve()`` is what `tbspark platform serve` runs."""

from __future__ import annotations

import asyncio
import errno
import faulthandler
import fcntl
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from tbspark.errors import PortInUseError, StackError
from tbspark.platform import auth as auth_mod
from tbspark.platform.errors import Forbidden
from tbspark.platform.limits import Limits
from tbspark.platform.rest import common, errors
from tbspark.platform.store import RuleChain, Store
from tbspark.platform.store.models import new_id, now_ms
from tbspark import settings
from tbspark.settings import (
    DEFAULT_PASSWORD, DEFAULT_SYSADMIN_PASSWORD, DEFAULT_SYSADMIN_USERNAME, DEFAULT_USERNAME, platform_limits,
)
from tbspark.platform.login_throttle import LoginPolicy
from tbspark.platform.web import PUBLIC_PATHS as _UI_PATHS, UI_PATH
from tbspark.platform.web.security import SAFE_METHODS, host_allowed, is_loopback, origin_allowed
from tbspark.state import StateDir, private_dir, private_file, write_json_atomic

log = logging.getLogger("tbspark.platform")

# Importing the resource modules registers their routes (and feeds the OpenAPI document).
_REST_MODULES = ("auth", "security_settings", "devices", "profiles", "assets", "telemetry", "rulechains", "rpc",
                 "control", "device_api")
for _m in _REST_MODULES:
    importlib.import_module(f"tbspark.platform.rest.{_m}")
from tbspark.platform import openapi  # noqa: E402,F401  (registers /tbspark/openapi.json)
from tbspark.platform.rest import security_settings  # noqa: E402
from tbspark.platform.rest.rulechains import root_chain_metadata  # noqa: E402

# Paths under /api that need no token (ThingsBoard's NON_TOKEN_BASED_AUTH_ENTRY_POINTS we serve).
_PUBLIC = ("/api/auth/login", "/api/auth/token", "/api/noauth/", "/api/v1/")
# Under /tbspark/ everything needs a token except these: the liveness probe, the API description and
# the live page's own files (a browser opening a URL sends no token; the page holds no data).
_TBSPARK_PUBLIC = frozenset({"/tbspark/health", "/tbspark/openapi.json"}) | _UI_PATHS
MAX_BODY_BYTES = 16 * 1024 * 1024
TTL_SWEEP_S = 60.0  # how often points past their TTL are deleted (reads leave them out at once)
# After SIGTERM/SIGINT the platform has this long to stop cleanly; then it exits anyway, even when its
# event loop never gets a turn (a handler or rule chain that spins). Below `stack down`'s 15 s before
# SIGKILL, so the stacks of a stuck platform reach its log. TBSPARK_PLATFORM_STOP_GRACE_S.
STOP_GRACE_S = 10.0


def _lock_state_dir(platform_dir: Path) -> int:
    """One platform per state directory: a second one would fight over the SQLite writer."""
    path = platform_dir / "platform.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StackError(f"a platform is already running on {platform_dir.parent} (pid {holder})",
                         "stop it (tbspark stack down, or kill that pid), or pass another --state-dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


class Platform:
    """Wires the pieces; ``await start(...)`` → bound (http_port, mqtt_port); ``await stop()``."""

    def __init__(self, state_dir: Path, *, tenant_user: tuple[str, str] = (DEFAULT_USERNAME, DEFAULT_PASSWORD),
                 sysadmin: tuple[str, str] = (DEFAULT_SYSADMIN_USERNAME, DEFAULT_SYSADMIN_PASSWORD),
                 access_ttl_s: int = auth_mod.ACCESS_TTL_S, refresh_ttl_s: int = auth_mod.REFRESH_TTL_S,
                 limits: Limits | None = None,
                 device_state: dict | None = None,
                 login_policy: LoginPolicy | None = None) -> None:
        """``login_policy``: the failed-login lockout; None = the saved security settings
        (POST /api/admin/securitySettings), else LoginPolicy()'s defaults."""
        # Connection deadlines and the half-open cap (platform/limits.py; TBSPARK_* overrides).
        self.limits = limits or Limits.from_overrides(platform_limits())
        self.state = StateDir(Path(state_dir)).ensure()
        # The database (password hashes, device tokens) and the JWT signing key: owner-only.
        self.dir = private_dir(self.state.platform_dir)
        self._lock_fd = _lock_state_dir(self.dir)
        db = self.dir / "platform.db"
        for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            if f == db or f.exists():
                private_file(f)  # before SQLite opens it: its -wal/-shm copy the database file's mode
        self.store = Store(db)
        if login_policy is None:  # none given explicitly (TBSPARK_*LOGIN* unset): the saved settings' limit
            saved = security_settings.load(self.dir)
            login_policy = LoginPolicy() if saved is None else LoginPolicy(
                max_failed_attempts=security_settings.max_failed_attempts(saved))
        self.auth = auth_mod.Auth(self.store, auth_mod.load_or_create_key(self.dir), access_ttl_s, refresh_ttl_s,
                                  login_policy=login_policy, revoked_file=self.dir / "revoked_sessions.json")
        self.tenant_id = self.auth.ensure_users(sysadmin, tenant_user)
        self._ensure_root_chain()
        self.engine: Any = None
        self.mqtt: Any = None
        self.devstate: Any = None
        self._expiry: asyncio.Future | None = None
        self._device_state_options = device_state or {}  # DeviceStateService keyword arguments
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None
        self.mqtt_port: int | None = None
        self.requests = 0
        self._check_host = False  # set by start(): on a loopback address, refuse foreign Host names
        self._hosts: dict[str | None, bool] = {}

    def _ensure_root_chain(self) -> None:
        """A root chain like ThingsBoard's: message type switch → save time series / client attributes."""
        if self.store.root_rule_chain_id(self.tenant_id):
            return
        rc = self.store.save_rule_chain_sync(RuleChain(new_id(), self.tenant_id, "Root Rule Chain", now_ms(), root=True))
        meta = root_chain_metadata()
        meta["ruleChainId"] = {"entityType": "RULE_CHAIN", "id": rc.id}
        self.store.save_rule_chain_metadata_sync(rc.id, meta)

    # -- lifecycle -------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[errors.error_middleware, self._middleware,
                                           common.body_deadline(self.limits.http_body_timeout_s)],
                              client_max_size=MAX_BODY_BYTES)
        app[common.PLATFORM_KEY] = self
        common.register(app)
        from tbspark.platform import web as web_view

        web_view.setup(app, self)  # the live telemetry page at /tbspark/ui
        return app

    async def start(self, host: str = "127.0.0.1", http_port: int = 8080, mqtt_port: int = 1883) -> tuple[int, int]:
        # Imported here: the CLI's other verbs should not pay for the engine's imports.
        from tbspark.platform.rules.engine import RuleEngine
        from tbspark.platform.transport.server import MqttServer

        from tbspark.platform.devstate import DeviceStateService

        self._check_host = is_loopback(host)
        self.engine = RuleEngine(self.store)
        await self.engine.start()
        self.devstate = DeviceStateService(self.store, self.engine, **self._device_state_options)
        await self.devstate.start()
        # keepalive_timeout also bounds the wait for a request's headers, from the connection's
        # start (aiohttp arms it at accept and does not extend it on partial data): slow-loris safe.
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False,
                                     keepalive_timeout=self.limits.http_header_timeout_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, http_port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(http_port, "--http-port", host) from exc
            raise StackError(f"cannot listen on {host}:{http_port} ({exc.strerror})",
                             "pick another --http-port or --host") from exc
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.mqtt = MqttServer(self.store, self.engine, host, mqtt_port, limits=self.limits)
        self.mqtt.devstate, self.devstate.mqtt = self.devstate, self.mqtt  # connects, disconnects, activity
        self._expiry = asyncio.ensure_future(self._remove_expired_points())
        try:
            self.mqtt_port = await self.mqtt.start()
        except OSError as exc:
            self.mqtt = None
            await self.stop()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(mqtt_port, "--mqtt-port", host) from exc
            raise StackError(f"cannot listen on {host}:{mqtt_port} ({exc.strerror})",
                             "pick another --mqtt-port or --host") from exc
        return self.http_port, self.mqtt_port

    async def _remove_expired_points(self) -> None:
        """Points saved with a TTL are left out of answers once it passed; this deletes them."""
        while True:
            await asyncio.sleep(TTL_SWEEP_S)
            try:
                n = await self.store.remove_expired()
            except Exception:  # noqa: BLE001 - the next sweep tries again
                log.exception("removing expired time-series points failed")
            else:
                if n:
                    log.info("removed %d expired time-series points", n)

    async def stop(self) -> None:
        """Stop accepting, let the engine finish, commit everything queued, close the database."""
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
            self._expiry = None
        if self.mqtt is not None:
            await self.mqtt.stop()
            self.mqtt = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.devstate is not None:
            await self.devstate.stop()  # its last writes and events, while the engine still runs
            self.devstate = None
        if self.engine is not None:
            await self.engine.stop()
            self.engine = None
        self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # -- controls --------------------------------------------------------------------------------

    def stats(self) -> dict:
        return {"http": {"requests": self.requests, "port": self.http_port},
                "store": self.store.stats(),
                "engine": self.engine.counters() if self.engine is not None else None,
                "mqtt": self.mqtt.stats() if self.mqtt is not None else None,
                "device_state": self.devstate.stats() if self.devstate is not None else None}

    def reset(self) -> None:
        self.store.reset()
        if self.devstate is not None:
            self.devstate.clear()
        self._ensure_root_chain()

    def _host_ok(self, host: str | None) -> bool:
        """host_allowed, remembered: clients send the same few Host values on every request."""
        known = self._hosts.get(host)
        if known is None:
            if len(self._hosts) > 256:
                self._hosts.clear()
            known = self._hosts[host] = host_allowed(host)
        return known

    # -- the guard: Host, Origin and the token (errors.error_middleware, outside it, answers its refusals)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        self.requests += 1
        if self._check_host and not self._host_ok(request.headers.get("Host")):
            # DNS rebinding: a web page whose own name now points at 127.0.0.1 (docs/security.md).
            raise Forbidden("This platform listens on loopback and answers only to an IP address or localhost "
                            "in the Host header")
        if request.method not in SAFE_METHODS and not origin_allowed(request.headers.get("Origin"),
                                                                  request.headers.get("Host")):
            # A write a browser sends for another site's page (CSRF), whatever its content type.
            raise Forbidden("Cross-site requests are not accepted: the Origin is not this platform")
        path = request.path
        if (path.startswith("/api/") and not path.startswith(_PUBLIC)) or (
                path.startswith("/tbspark/") and path not in _TBSPARK_PUBLIC):
            header = request.headers.get("X-Authorization") or request.headers.get("Authorization")
            request[common.PRINCIPAL_KEY] = self.auth.verify(header)
        return await handler(request)


def endpoint_file(state_dir: Path) -> Path:
    return StateDir(Path(state_dir)).endpoint_file


def stop_grace_s() -> float:
    return settings.platform_stop_grace_s(STOP_GRACE_S)


def install_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, grace_s: float,
                         at_once: Callable[[], None] = lambda: None) -> None:
    """SIGTERM/SIGINT stop the platform cleanly, and always stop the process within ``grace_s``.

    The handlers are Python-level (signal.signal), not loop.add_signal_handler: those only run when
    the event loop gets a turn, which a spinning handler never gives it. A Python-level handler runs
    in the main thread between two bytecodes, whatever the loop is doing. It asks the loop to stop
    and arms faulthandler's watchdog, a C thread that needs neither the loop nor the GIL: if the
    process is still alive ``grace_s`` later, it writes every thread's stack to the log (what was
    stuck) and exits with status 1. A second signal exits at once. ``at_once`` runs in the handler
    (it must be quick and safe anywhere: the endpoint record is removed this way)."""
    fired = []

    def handler(signum: int, frame: Any) -> None:
        if fired:
            os._exit(128 + signum)
        fired.append(signum)
        try:
            faulthandler.dump_traceback_later(grace_s, exit=True, file=sys.stderr)
        except (AttributeError, ValueError, OSError):  # stderr without a file descriptor (embedded use)
            timer = threading.Timer(grace_s, os._exit, (1,))  # needs the GIL: second best
            timer.daemon = True
            timer.start()
        try:
            at_once()
        except OSError:
            pass
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop is already closed: nothing left to stop cleanly
            os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def serve(state_dir: Path, host: str = "127.0.0.1", http_port: int = 8080, mqtt_port: int = 1883,
          on_ready: Callable[[dict], None] | None = None, **platform_kwargs: Any) -> None:
    """Run the platform in the foreground until SIGTERM/SIGINT. When it listens, write
    <state>/platform/endpoint.json {"url","ui_url","http_port","mqtt_port","pid"} atomically and call
    ``on_ready``. After a stop signal the process is gone within the grace period (stop_grace_s())."""
    endpoint = endpoint_file(state_dir)
    grace_s = stop_grace_s()

    async def main() -> None:
        stop = asyncio.Event()
        # First: a signal during start (a slow database open) must stop the process too.
        install_stop_signals(asyncio.get_running_loop(), stop, grace_s,
                             at_once=lambda: endpoint.unlink(missing_ok=True))
        platform = Platform(state_dir, **platform_kwargs)  # takes the state dir's lock first
        endpoint.unlink(missing_ok=True)  # a stale record must never look like readiness
        http, mqtt = await platform.start(host, http_port, mqtt_port)
        await asyncio.sleep(0)  # lets a stop requested during start take effect
        if stop.is_set():
            await platform.stop()
            return
        url = f"http://{host}:{http}"
        info = {"url": url, "ui_url": url + UI_PATH, "http_port": http, "mqtt_port": mqtt, "pid": os.getpid()}
        write_json_atomic(endpoint, info)
        if on_ready:
            on_ready(info)
        try:
            await stop.wait()
        finally:
            endpoint.unlink(missing_ok=True)
            await platform.stop()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (its socket reads, writes and callbacks cost less CPU than the stock
    loop's with thousands of connections: docs/benchmarks.md, platform-mqtt), else asyncio's default.
    ``TBSPARK_EVENT_LOOP=asyncio`` forces the stock loop (A/B runs), ``=uvloop`` requires uvloop."""
    choice = settings.event_loop()
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise StackError("TBSPARK_EVENT_LOOP=uvloop but uvloop is not installed",
                             "pip install uvloop, or unset TBSPARK_EVENT_LOOP") from None
        return None
    return uvloop.new_event_loop
