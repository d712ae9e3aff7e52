"""The paths older clients use (tb-rest-client ≤ 4.3, the 1.x tutorial), with direct requests."""

from __future__ import annotations

import pytest


def test_lookup_by_name_on_old_and_new_paths(http, target, unique):
    dev = http.post(f"{target.url}/api/device", json={"name": f"old-{unique}", "type": "default"}).json()
    asset = http.post(f"{target.url}/api/asset", json={"name": f"Old Zone {unique}", "type": "WeatherStation"}).json()
    for path, params, want in (
        ("/api/tenant/devices", {"deviceName": f"old-{unique}"}, dev["id"]),
        ("/api/tenant/device", {"deviceName": f"old-{unique}"}, dev["id"]),
        ("/api/tenant/assets", {"assetName": f"Old Zone {unique}"}, asset["id"]),
        ("/api/tenant/asset", {"assetName": f"Old Zone {unique}"}, asset["id"]),
    ):
        r = http.get(target.url + path, params=params)
        assert r.status_code == 200 and r.json()["id"] == want, path
    r = http.get(f"{target.url}/api/tenant/devices", params={"deviceName": f"nope-{unique}"})
    assert r.status_code == 404 and r.json()["message"] == "Requested item wasn't found!"


def test_tutorial_limit_form_is_refused(http, target):
    r = http.get(f"{target.url}/api/tenant/assets", params={"limit": 100, "type": "WeatherStation"})
    if not target.embedded:
        assert r.status_code >= 400  # 400 up to TB 4.3.1.1; newer versions fail differently (§12)
        return
    body = r.json()
    assert r.status_code == 400 and body["errorCode"] == 31
    assert body["message"].startswith('Parameter conditions "pageSize, page" OR "assetName" not met')


@pytest.mark.parametrize("params, message", [
    ({"pageSize": 10, "page": 0, "sortOrder": "UP"},
     "Unsupported sort order 'UP'! Only 'ASC' or 'DESC' types are allowed."),
    ({"pageSize": 10, "page": 0, "sortProperty": "nope"}, "Invalid sort property"),
])
def test_bad_paging_parameters(http, target, params, message):
    r = http.get(f"{target.url}/api/tenant/devices", params=params)
    assert r.status_code == 400 and r.json()["message"] == message


def test_paging_walks_every_page(http, target, unique):
    for i in range(5):
        http.post(f"{target.url}/api/device", json={"name": f"pg-{unique}-{i}", "type": f"pg-{unique}"})
    seen, page = [], 0
    while True:
        body = http.get(f"{target.url}/api/tenant/devices", params={
            "pageSize": 2, "page": page, "type": f"pg-{unique}", "sortProperty": "name", "sortOrder": "DESC"}).json()
        seen += [d["name"] for d in body["data"]]
        assert body["totalElements"] == 5 and body["totalPages"] == 3
        if not body["hasNext"]:
            break
        page += 1
    assert seen == [f"pg-{unique}-{i}" for i in (4, 3, 2, 1, 0)]


def test_login_by_get_and_malformed_bodies(http, target):
    r = http.get(f"{target.url}/api/auth/login")
    assert r.status_code == 401 and r.json()["message"] == "Authentication method not supported"
    r = http.post(f"{target.url}/api/device", data="{broken", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["errorCode"] == 31
    r = http.post(f"{target.url}/api/device", json={"type": "x"})
    assert r.status_code == 400 and r.json()["message"] == "Device name should be specified!"
