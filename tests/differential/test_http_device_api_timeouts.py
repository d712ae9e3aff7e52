"""The HTTP device API's long waits, which the differential exchanges leave out (30 s each): a long
poll without its own short timeout, and a device's RPC nothing answers, both end as ThingsBoard 4.3.1.3
ends them (measured live: 503 with a null message after Spring's 30 s async timeout)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

pytestmark = [pytest.mark.slow]


def test_unanswered_long_waits_end_in_thingsboards_503(platform, tenant_http):
    token = f"TBDIFFLW{time.time_ns()}"
    r = tenant_http.post(f"{platform.url}/api/device", json={"name": f"tbdiff-lw-{token}", "type": "default"},
                         params={"accessToken": token}, timeout=10)
    r.raise_for_status()
    base = f"{platform.url}/api/v1/{token}"

    def timed(method: str, path: str, **kw):
        t0 = time.monotonic()
        resp = requests.request(method, base + path, timeout=60, **kw)
        return resp, time.monotonic() - t0

    with ThreadPoolExecutor(2) as pool:  # both at once: one 30 s wait for the test
        poll = pool.submit(timed, "GET", "/rpc")
        rpc = pool.submit(timed, "POST", "/rpc", json={"method": "getTime", "params": {}})
        for resp, took in (poll.result(), rpc.result()):
            body = resp.json()
            assert resp.status_code == 503 and body["message"] is None and body["errorCode"] == 2
            assert 29 <= took < 40
    resp, took = timed("GET", "/rpc", params={"timeout": 500})
    assert (resp.status_code, resp.text) == (408, "") and took < 5
