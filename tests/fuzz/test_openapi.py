"""Schemathesis against the platform's own OpenAPI document: a few thousand generated requests, valid
and invalid, authenticated and with real entity ids half the time — never a 500, never a Python
traceback in a body, and the process answers its health check afterwards."""

from __future__ import annotations

import os
import random
import uuid

import pytest
import requests

pytestmark = [pytest.mark.slow]

# 65 operations × 2 modes × 15 ≈ 1,900 requests; generation costs more than the requests (about
# 40 s on an idle 2-core machine). TBSPARK_FUZZ_CASES=100 for a longer campaign.
CASES = int(os.environ.get("TBSPARK_FUZZ_CASES", "15"))
SEED = int(os.environ.get("TBSPARK_FUZZ_SEED", str(random.randrange(1 << 32))))
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/', "aiohttp/web_protocol.py")
# The 500s ThingsBoard itself gives for bad input (recorded live: tests/differential), which the platform
# answers the same way: an unreadable body (errorCode 2) and an unknown sortProperty (errorCode 46).
THINGSBOARD_500S = (("JSON parse error", 2), ("Required request body is missing", 2),
                    ("Content-Type '", 2), ("Database error", 46))


def thingsboards_own_500(status: int, body: str) -> bool:
    import json

    try:
        err = json.loads(body)
    except ValueError:
        return False
    return status == 500 and isinstance(err, dict) and any(
        str(err.get("message", "")).startswith(m) and err.get("errorCode") == code for m, code in THINGSBOARD_500S)


def _real_ids(url: str, token: str) -> dict[str, str]:
    """One real entity of each kind, so generated requests reach the handlers' deeper branches."""
    h = {"X-Authorization": f"Bearer {token}"}
    tag = uuid.uuid4().hex[:6]

    def post(path: str, body: dict) -> str:
        r = requests.post(url + path, json=body, headers=h, timeout=10)
        r.raise_for_status()
        return r.json()["id"]["id"]

    dev = post("/api/device", {"name": f"fuzz device {tag}", "type": "fuzz"})
    return {
        "deviceId": dev, "entityId": dev, "entityType": "DEVICE",
        "assetId": post("/api/asset", {"name": f"fuzz asset {tag}", "type": "fuzz"}),
        "deviceProfileId": post("/api/deviceProfile", {"name": f"fuzz profile {tag}", "type": "DEFAULT"}),
        "assetProfileId": post("/api/assetProfile", {"name": f"fuzz asset profile {tag}"}),
        "ruleChainId": post("/api/ruleChain", {"name": f"fuzz chain {tag}", "type": "CORE"}),
    }


def test_generated_requests_never_get_a_500_or_a_traceback(own_platform):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    url = own_platform.url
    token = requests.post(f"{url}/api/auth/login", json={"username": "tenant@thingsboard.org",
                                                         "password": "tenant"}, timeout=10).json()["token"]
    ids = _real_ids(url, token)
    schema = schemathesis.openapi.from_url(f"{url}/tbspark/openapi.json")
    http = requests.Session()
    failures: list[str] = []
    calls = 0

    for result in schema.get_all_operations():
        op = result.ok()
        names = {p.name for p in op.path_parameters}
        real = {k: v for k, v in ids.items() if k in names}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            auth = {"X-Authorization": f"Bearer {token}"}
            if op.path == "/api/auth/logout":  # it ends the session it is called with: not the shared one
                auth = {"X-Authorization": "Bearer " + requests.post(
                    f"{url}/api/auth/login", json={"username": "tenant@thingsboard.org", "password": "tenant"},
                    timeout=10).json()["token"]}
            options = [op.as_strategy(generation_mode=mode, headers=auth)]
            if real:
                options.append(op.as_strategy(generation_mode=mode, headers=auth, path_parameters=real))
            if mode is GenerationMode.NEGATIVE:
                options.append(op.as_strategy(generation_mode=mode))  # no token at all

            @seed(SEED)
            @settings(max_examples=CASES, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=st.one_of(options))
            def run(case) -> None:
                nonlocal calls
                try:
                    resp = case.call(base_url=url, session=http, timeout=15)
                except requests.RequestException as exc:
                    failures.append(f"{op.label} [{mode}]: no answer ({exc}) to {case.as_curl_command()}")
                    return
                calls += 1
                body = resp.content.decode("utf-8", "replace")
                if (resp.status_code >= 500 and not thingsboards_own_500(resp.status_code, body)) or any(
                        m in body for m in TRACEBACK_MARKERS):
                    failures.append(f"{op.label} [{mode}]: {resp.status_code} {body[:300]!r}\n  "
                                    f"{case.as_curl_command()}")

            try:
                run()
            except Unsatisfiable:
                # Nothing to break in this mode (e.g. no parameters and no body): nothing to send.
                assert mode is GenerationMode.NEGATIVE, f"{op.label}: no valid request can be generated"

    assert requests.get(f"{url}/tbspark/health", timeout=5).status_code == 200
    assert own_platform.proc.poll() is None, "the platform process died under fuzzing"
    assert calls >= 60 * CASES, f"only {calls} requests were made"
    assert not failures, (f"{len(failures)} bad answers of {calls} (seed {SEED}; rerun with "
                          f"TBSPARK_FUZZ_SEED={SEED}):\n" + "\n".join(failures[:15]))
