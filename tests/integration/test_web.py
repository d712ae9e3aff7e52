"""The live page /tbspark/ui in headless Chromium, against the real embedded platform: it must show
the zone averages and the raw device values that were written, by name and value."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid

import pytest
import requests

from tbspark.stack.services import start_platform, stop_platform
from tbspark.state import StateDir
from tbspark.thingsboard.rest import TbRestClient

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed and could not be "
                       "(`make test` runs `make browser`: apt-get install -y chromium)"),
]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    state = StateDir(tmp_path_factory.mktemp("web-platform")).ensure()
    endpoint = start_platform(state, http_port=0, mqtt_port=0)
    try:
        yield endpoint
    finally:
        stop_platform(state)


def chromium(url: str, profile, *args: str) -> subprocess.CompletedProcess:
    # --virtual-time-budget lets the page's fetches and first render finish before the dump.
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}", "--virtual-time-budget=8000", "--window-size=1280,1000",
           *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_page_is_served_outside_the_api(platform):
    r = requests.get(platform["url"] + "/tbspark/ui", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "tbspark — live telemetry" in r.text
    # self-contained: the network may be closed, so nothing is loaded from elsewhere
    assert 'src="http' not in r.text and 'href="http' not in r.text and "<script src" not in r.text


def test_page_shows_zone_averages_and_raw_values(platform, tmp_path):
    tag = uuid.uuid4().hex[:6]
    zone, device = f"Zone {tag}", f"Wind Turbine {tag}"
    now = int(time.time() * 1000)
    ws = now // 10_000 * 10_000 - 20_000
    with TbRestClient(platform["url"], "tenant@thingsboard.org", "tenant") as tb:
        asset = tb.get_or_create_asset(zone, "WeatherStation")["id"]["id"]
        dev = tb.save_device({"name": device, "type": "WeatherStation"})["id"]["id"]
        tb.save_telemetry("ASSET", asset, [
            {"ts": ws, "values": {"windSpeed": 40.25, "windSpeedCount": 200, "windSpeedMin": 30,
                                  "windSpeedMax": 50}},
            {"ts": ws + 10_000, "values": {"windSpeed": 41.75, "windSpeedCount": 199, "windSpeedMin": 31,
                                           "windSpeedMax": 49}}])
        tb.save_telemetry("DEVICE", dev, [{"ts": now - 1000 + i * 100, "values": {"windSpeed": 30 + i}}
                                          for i in range(9)])
    url = platform["url"] + "/tbspark/ui?minutes=2"
    dom = chromium(url, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert 'data-loaded="true"' in html, html[-3000:]
    # the zone's latest window in the table and the legend, and the device's latest raw value
    assert f"<td>{zone}</td>" in html
    assert "<td class=\"num\">41.75</td>" in html and "<td class=\"num\">199</td>" in html
    assert f"{zone}  41.75" in html                      # chart legend of the zone averages
    assert f"<td>{device}</td>" in html and f"{device}  38" in html   # raw values: last one was 38
    assert html.count("<polyline") >= 2                   # both charts drew lines
    shot = tmp_path / "ui.png"
    res = chromium(url, tmp_path / "profile2", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.stat().st_size > 20_000  # a rendered page, not a blank one
