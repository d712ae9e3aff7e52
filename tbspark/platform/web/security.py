"""What keeps the live page and the platform's HTTP side safe from other web pages: the page's
response headers (a strict Content-Security-Policy among them), the Origin check that refuses any
write a browser sends on behalf of another site, and the Host check that defeats DNS rebinding on a
loopback-bound platform. docs/security.md says what each one stops."""

from __future__ import annotations

import ipaddress

# No inline script or style, nothing from elsewhere, no plugins, no <base>, no form posting by the
# browser itself (app.js sends the login as JSON), no framing. Trusted Types makes any string
# assignment to innerHTML-like sinks throw in browsers that support it: markup can only come from
# code, never from data.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "form-action 'none'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'; "
       "require-trusted-types-for 'script'; trusted-types 'none'")

PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_LOOPBACK_NAMES = ("localhost", "localhost.")


def is_loopback(host: str) -> bool:
    """Is the address the platform binds to loopback-only (127.0.0.0/8, ::1, localhost)?"""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host_header: str | None) -> bool:
    """May a request with this ``Host`` reach a loopback-bound platform? IP literals and localhost
    only: a DNS-rebinding page reaches 127.0.0.1 under its own domain name, which it must send as
    Host, and is refused. No Host at all (HTTP/1.0 tools) is not a browser and is let through."""
    if not host_header:
        return True
    host = host_header.strip()
    if host.startswith("["):  # [::1]:8080
        end = host.find("]")
        name = host[1:end] if end > 0 else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost") or name.endswith(".localhost."):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """May a state-changing request with this ``Origin`` go through? Browsers send Origin with every
    POST, PUT, PATCH and DELETE, cross-site ones included (even the "simple" ones that need no CORS
    preflight); devices, SDKs, curl and the CLI send none. So: no Origin, or the platform's own
    (the live page), and nothing else; ``null`` (sandboxed frames, file: pages) is refused too."""
    if origin is None:
        return True
    if not host_header or "://" not in origin:
        return False
    return origin.split("://", 1)[1].rstrip("/").lower() == host_header.strip().lower()
