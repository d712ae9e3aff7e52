"""The platform's own surface: OpenAPI document, stats, and no 500 / traceback for hostile input."""

from __future__ import annotations

import requests


def test_openapi_describes_the_api_routes(platform):
    doc = requests.get(platform.url + "/tbspark/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, method in [("/api/auth/login", "post"), ("/api/device", "post"), ("/api/tenant/devices", "get"),
                         ("/api/tenant/device", "get"), ("/api/tenant/assets", "get"),
                         ("/api/plugins/telemetry/{entityType}/{entityId}/values/timeseries/history", "get"),
                         ("/api/ruleChain/metadata", "post"), ("/api/deviceProfile", "post")]:
        assert method in paths[path], (path, method)
    names = {p["name"] for p in paths["/api/tenant/devices"]["get"]["parameters"]}
    assert {"pageSize", "page", "textSearch", "sortProperty", "sortOrder", "type", "deviceName"} <= names
    assert not [p for p in paths if not p.startswith("/api/")]  # platform controls stay out of /api


def test_stats_count_what_was_stored(platform, tenant_http):
    dev = tenant_http.post(f"{platform.url}/api/device", json={"name": "stats-dev", "type": "default"}).json()
    before = tenant_http.get(platform.url + "/tbspark/stats").json()["store"]["ts_points_written"]
    tenant_http.post(f"{platform.url}/api/plugins/telemetry/DEVICE/{dev['id']['id']}/timeseries/ANY",
                     data='{"a": 1, "b": 2}')
    stats = tenant_http.get(platform.url + "/tbspark/stats").json()
    assert stats["store"]["ts_points_written"] == before + 2
    assert {"http", "store", "engine", "mqtt"} <= set(stats)


def test_hostile_requests_never_500(platform, tenant_http):
    u = platform.url
    dev = tenant_http.post(f"{u}/api/device", json={"name": "hostile-dev", "type": "default"}).json()
    tel = f"{u}/api/plugins/telemetry/DEVICE/{dev['id']['id']}"
    calls = [
        ("POST", "/api/auth/login", b"\xff\xfe garbage", {}),
        ("POST", "/api/auth/login", b"[]", {}),
        ("POST", "/api/auth/token", b'{"refreshToken": 5}', {}),
        ("POST", "/api/device", b'{"name": 5}', {"Content-Type": "application/json"}),
        ("POST", "/api/device", b'{"name": "x", "deviceProfileId": {"id": "nope"}}', {"Content-Type": "application/json"}),
        ("GET", "/api/tenant/devices?pageSize=abc&page=0", b"", {}),
        ("GET", "/api/tenant/devices?pageSize=0&page=0", b"", {}),
        ("GET", "/api/tenant/devices?pageSize=99999999999999999999&page=0", b"", {}),
        ("GET", "/api/tenant/devices?pageSize=10&page=-1", b"", {}),
        ("GET", "/api/device/zzz", b"", {}),
        ("GET", "/api/ruleChain/00000000-0000-0000-0000-000000000000/metadata", b"", {}),
        ("POST", "/api/ruleChain/metadata", b'{"ruleChainId": {"id": "x"}}', {"Content-Type": "application/json"}),
        ("POST", "/api/ruleChain/metadata", b'{"nodes": 5}', {"Content-Type": "application/json"}),
        ("GET", "/api/plugins/telemetry/DEVICE/" + dev["id"]["id"] + "/values/timeseries/history?startTs=x&endTs=1", b"", {}),
        ("GET", tel[len(u):] + "/values/timeseries/history?startTs=0&endTs=10&agg=MEDIAN", b"", {}),
        ("GET", tel[len(u):] + "/values/timeseries?useStrictDataTypes=maybe", b"", {}),
        ("POST", tel[len(u):] + "/timeseries/ANY", b'{"ts": "abc", "values": {"a": 1}}', {}),
        ("POST", tel[len(u):] + "/timeseries/ANY", b'[{"ts": 1, "values": [1]}]', {}),
        ("POST", tel[len(u):] + "/timeseries/ANY/notanumber", b'{"a": 1}', {}),
        ("POST", tel[len(u):] + "/attributes/SERVER_SCOPE", b'{"": 1}', {}),
        ("POST", tel[len(u):] + "/attributes/SERVER_SCOPE", b"x" * (17 * 1024 * 1024), {}),
        ("DELETE", "/api/device/" + dev["id"]["id"] + "/nothing", b"", {}),
        ("PATCH", "/api/device", b"{}", {}),
    ]
    for method, path, body, headers in calls:
        r = tenant_http.request(method, u + path, data=body, headers=headers)
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text[:200])
        assert "Traceback" not in r.text and "File \"" not in r.text
    # An unreadable entity body is the one 500 ThingsBoard itself gives here (errorCode 2, checked live).
    for body, ctype in ((b'"just a string"', "application/json"), (b'{"name": "ct"}', "text/xml")):
        r = tenant_http.post(u + "/api/device", data=body, headers={"Content-Type": ctype})
        assert (r.status_code, r.json()["errorCode"]) == (500, 2), r.text[:200]
        assert "Traceback" not in r.text


def test_http_device_api_request_is_device_activity(platform, tenant_http):
    """A device that only speaks the HTTP device API becomes active (SERVER_SCOPE `active`,
    `lastActivityTime`) as on ThingsBoard, whose HTTP transport reports its activity."""
    import time
    import uuid

    u = platform.url
    dev = tenant_http.post(f"{u}/api/device", json={"name": f"http-active-{uuid.uuid4().hex[:8]}"}).json()
    token = tenant_http.get(f"{u}/api/device/{dev['id']['id']}/credentials").json()["credentialsId"]
    t0 = int(time.time() * 1000)
    assert requests.post(f"{u}/api/v1/{token}/telemetry", json={"t": 1}, timeout=10).status_code == 200
    deadline = time.monotonic() + 15  # the state is reported every 3 s (ThingsBoard's default)
    while True:
        attrs = {a["key"]: a["value"] for a in tenant_http.get(
            f"{u}/api/plugins/telemetry/DEVICE/{dev['id']['id']}/values/attributes/SERVER_SCOPE").json()}
        if attrs.get("active") is True:
            break
        assert time.monotonic() < deadline, attrs
        time.sleep(0.5)  # the next read of the device's state; bounded by the deadline
    assert attrs["lastActivityTime"] >= t0
