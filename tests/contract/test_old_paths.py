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


@pytest.mark.parametrize("params, status, code, message", [
    ({"pageSize": 10, "page": 0, "sortProperty": "name", "sortOrder": "UP"}, 400, 31,
     "Unsupported sort order 'UP'! Only 'ASC' or 'DESC' types are allowed."),
    # An unknown property reaches ThingsBoard's database, which fails (checked on 4.3.1.3).
    ({"pageSize": 10, "page": 0, "sortProperty": "nope"}, 500, 46, "Database error"),
    ({"pageSize": 0, "page": 0}, 400, 31, "Incorrect page link page size '0'. Page size must be greater than zero."),
])
def test_bad_paging_parameters(http, target, params, status, code, message):
    r = http.get(f"{target.url}/api/tenant/devices", params=params)
    assert (r.status_code, r.json()["errorCode"], r.json()["message"]) == (status, code, message)


def test_sort_order_without_sort_property_is_ignored(http, target, unique):
    for i in (1, 0):
        http.post(f"{target.url}/api/device", json={"name": f"so-{unique}-{i}", "type": f"so-{unique}"})
    r = http.get(f"{target.url}/api/tenant/devices", params={"pageSize": 10, "page": 0, "type": f"so-{unique}",
                                                            "sortOrder": "UP"})
    assert r.status_code == 200
    assert sorted(d["name"] for d in r.json()["data"]) == [f"so-{unique}-0", f"so-{unique}-1"]


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
    # An unreadable body is Spring's HttpMessageNotReadableException: ThingsBoard answers 500, errorCode 2.
    r = http.post(f"{target.url}/api/device", data="{broken", headers={"Content-Type": "application/json"})
    assert r.status_code == 500 and r.json()["errorCode"] == 2
    assert r.json()["message"].startswith("JSON parse error")
    r = http.post(f"{target.url}/api/device", json={"type": "x"})
    assert r.status_code == 400 and r.json()["message"] == "Device name should be specified!"
