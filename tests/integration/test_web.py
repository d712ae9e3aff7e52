"""The live page /tbspark/ui in headless Chromium, against the real embedded platform: it asks for a
login (no password in the page or its URL), then shows the zone averages and the raw device values
that were written, by name and value; whatever arrives in its query string or in entity names is
shown as text and never runs as script; and the page is served with a strict Content-Security-Policy."""

from __future__ import annotations

import re
import time
import uuid
from urllib.parse import quote

import pytest
import requests

from tbspark.stack.services import start_platform, stop_platform
from tbspark.state import StateDir
from tbspark.thingsboard.rest import TbRestClient
from tests.fixtures.browser import CHROMIUM, Browser

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed and could not be "
                       "(`make test` runs `make browser`: apt-get install -y chromium)"),
]
TENANT = ("tenant@thingsboard.org", "tenant")
# Each one, if it ever became markup, would set window.__xss: the tests look for it in the page.
XSS = ['<img src=x onerror="window.__xss=1">', '"><svg onload="window.__xss=2">',
       "<script>window.__xss=3</script>"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    state = StateDir(tmp_path_factory.mktemp("web-platform")).ensure()
    endpoint = start_platform(state, http_port=0, mqtt_port=0)
    try:
        yield endpoint
    finally:
        stop_platform(state)


@pytest.fixture()
def browser(tmp_path):
    with Browser(tmp_path / "profile") as b:
        yield b


def log_in(b: Browser, username: str = TENANT[0], password: str = TENANT[1]) -> None:
    """What a person does on the page: the form, if the page shows one, then wait for the data."""
    if b.eval("!!document.getElementById('login-form')"):
        b.wait("!document.getElementById('login').hidden")
        b.type_into("#username", username)
        b.type_into("#password", password)
        b.click("#login-submit")
    b.wait("document.body.dataset.loaded === 'true'")


def test_page_and_its_files_carry_a_strict_policy(platform):
    r = requests.get(platform["url"] + "/tbspark/ui", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "tbspark — live telemetry" in r.text
    # self-contained (the network may be closed): scripts and styles are the platform's own files
    assert 'src="http' not in r.text and 'href="http' not in r.text
    # no inline script or style and no inline event handler: the policy below forbids them all
    assert re.findall(r"<script[^>]*>", r.text) == ['<script src="/tbspark/ui/app.js">']
    assert "<style" not in r.text and not re.search(r"\son\w+\s*=", r.text)
    assert "password" not in r.url and "tenant" not in r.text.replace("tenant@thingsboard.org", "")
    for path, ctype in (("/tbspark/ui", "text/html"), ("/tbspark/ui/app.js", "text/javascript"),
                        ("/tbspark/ui/app.css", "text/css")):
        h = requests.get(platform["url"] + path, timeout=5).headers
        assert h["Content-Type"].startswith(ctype), path
        csp = {d.split()[0]: d.split()[1:] for d in h["Content-Security-Policy"].split("; ")}
        assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'self'"], csp
        assert csp["frame-ancestors"] == ["'none'"] and csp["form-action"] == ["'none'"]
        assert csp["base-uri"] == ["'none'"] and "'unsafe-inline'" not in h["Content-Security-Policy"]
        assert h["X-Content-Type-Options"] == "nosniff" and h["X-Frame-Options"] == "DENY"
    # only the page's own files are served from its folder, and nothing there without a token
    assert requests.get(platform["url"] + "/tbspark/ui/platform.db", timeout=5).status_code == 401


def test_page_asks_for_a_login_and_shows_zone_averages_and_raw_values(platform, browser, tmp_path):
    tag = uuid.uuid4().hex[:6]
    zone, device = f"Zone {tag}", f"Wind Turbine {tag}"
    now = int(time.time() * 1000)
    ws = now // 10_000 * 10_000 - 20_000
    with TbRestClient(platform["url"], *TENANT) as tb:
        asset = tb.get_or_create_asset(zone, "WeatherStation")["id"]["id"]
        dev = tb.save_device({"name": device, "type": "WeatherStation"})["id"]["id"]
        tb.save_telemetry("ASSET", asset, [
            {"ts": ws, "values": {"windSpeed": 40.25, "windSpeedCount": 200, "windSpeedMin": 30,
                                  "windSpeedMax": 50}},
            {"ts": ws + 10_000, "values": {"windSpeed": 41.75, "windSpeedCount": 199, "windSpeedMin": 31,
                                           "windSpeedMax": 49}}])
        tb.save_telemetry("DEVICE", dev, [{"ts": now - 1000 + i * 100, "values": {"windSpeed": 30 + i}}
                                          for i in range(9)])
    browser.open(platform["ui_url"] + "?minutes=2")
    # no token yet: the form, and no data
    assert browser.wait("!document.getElementById('login').hidden")
    assert browser.eval("document.getElementById('dashboard').hidden") is True
    browser.type_into("#username", TENANT[0])
    browser.type_into("#password", "not the password")
    browser.click("#login-submit")
    assert browser.wait("document.getElementById('login-error').textContent") == "Invalid username or password"
    log_in(browser)
    assert "tenant" not in browser.eval("location.href")  # the password never went into the URL
    html = browser.eval("document.documentElement.outerHTML")
    # the zone's latest window in the table and the legend, and the device's latest raw value
    assert f"<td>{zone}</td>" in html
    assert "<td class=\"num\">41.75</td>" in html and "<td class=\"num\">199</td>" in html
    assert f"{zone}  41.75" in html                      # chart legend of the zone averages
    assert f"<td>{device}</td>" in html and f"{device}  38" in html   # raw values: last one was 38
    assert html.count("<polyline") >= 2                   # both charts drew lines
    assert not [m for m in browser.console if "Content Security Policy" in m], browser.console
    # the token lives in this tab only; logging out ends the session on the platform too
    pair = browser.eval("({t: sessionStorage.getItem('tbspark.token'), "
                        "r: sessionStorage.getItem('tbspark.refreshToken')})")
    browser.click("#logout")
    browser.wait("!document.getElementById('login').hidden")
    assert browser.eval("sessionStorage.getItem('tbspark.token')") is None
    assert requests.post(platform["url"] + "/api/auth/token", json={"refreshToken": pair["r"]},
                         timeout=5).status_code == 401
    assert requests.get(platform["url"] + "/api/auth/user", headers={"X-Authorization": "Bearer " + pair["t"]},
                        timeout=5).status_code == 401


@pytest.mark.parametrize("payload", XSS)
def test_query_string_and_names_are_shown_as_text_never_run(platform, browser, payload):
    # a device named like the payload, with data under the payload as key: every place the page
    # writes a name or a key (charts, legends, tables, titles, the status line) gets the payload
    tag = uuid.uuid4().hex[:6]
    with TbRestClient(platform["url"], *TENANT) as tb:
        dev = tb.save_device({"name": f"{payload} {tag}", "type": "WeatherStation"})["id"]["id"]
        tb.save_telemetry("DEVICE", dev, [{"ts": int(time.time() * 1000), "values": {payload: 5}}])
    browser.open(platform["url"] + "/tbspark/ui?key=" + quote(payload) + "&minutes=2")
    log_in(browser)
    assert browser.eval("window.__xss") is None, "script from the query string or a name ran"
    assert browser.eval("document.querySelectorAll('img, script:not([src]), svg [onload]').length") == 0
    # shown, as text, where a user looks for it
    assert payload in browser.eval("document.getElementById('status').textContent")
    assert payload in browser.eval("document.getElementById('devices-title').textContent")
    assert f"{payload} {tag}" in browser.eval("document.querySelector('#devices-table tbody').textContent")
    # nothing reaches the empty-chart message as markup either (no data for this key in the zones)
    assert payload in browser.eval("document.getElementById('zones-chart').textContent")


def test_page_renews_an_expired_token_without_asking_again(tmp_path, monkeypatch, browser):
    monkeypatch.setenv("JWT_TOKEN_EXPIRATION_TIME", "2")  # access tokens of this platform live 2 s
    state = StateDir(tmp_path / "short-tokens").ensure()
    p = start_platform(state, http_port=0, mqtt_port=0)
    try:
        browser.open(p["ui_url"] + "?refresh_ms=500")
        log_in(browser)
        first = browser.eval("sessionStorage.getItem('tbspark.token')")
        # the page keeps refreshing; once the token has expired it exchanges the refresh token
        renewed = browser.wait(f"sessionStorage.getItem('tbspark.token') !== {first!r} && "
                               "sessionStorage.getItem('tbspark.token')", timeout_s=20)
        assert renewed and browser.eval("document.getElementById('login').hidden") is True
        loaded_at = browser.eval("document.getElementById('status').textContent")
        browser.wait(f"document.getElementById('status').textContent !== {loaded_at!r}")  # still updating
        assert "error" not in browser.eval("document.getElementById('status').className")
    finally:
        stop_platform(state)


def test_time_range_control_and_round_time_ticks(platform, browser):
    """The page's time range is a control (kept in the URL), and the time axis is labelled at round
    UTC times — a multiple of its step, never odd seconds."""
    with TbRestClient(platform["url"], *TENANT) as tb:
        dev = tb.save_device({"name": f"Range {uuid.uuid4().hex[:6]}", "type": "WeatherStation"})["id"]["id"]
        now = int(time.time() * 1000)
        tb.save_telemetry("DEVICE", dev, [{"ts": now - 170_000 + i * 10_000, "values": {"windSpeed": 30 + i}}
                                          for i in range(18)])
    browser.open(platform["ui_url"] + "?minutes=5")
    log_in(browser)
    browser.wait("document.body.dataset.loaded === 'true'")
    assert browser.eval("document.getElementById('range').value") == "5"
    ticks = browser.eval("[...document.querySelectorAll('#devices-chart text.tick')]"
                         ".map(t => [Number(t.dataset.ts), t.textContent])")
    assert len(ticks) >= 2
    step = ticks[1][0] - ticks[0][0]
    assert step in (10_000, 15_000, 30_000, 60_000, 120_000, 300_000), ticks
    assert all(ts % step == 0 for ts, _ in ticks), ticks
    assert all(label == time.strftime("%H:%M:%S" if step < 60_000 else "%H:%M", time.gmtime(ts / 1000))
               for ts, label in ticks), ticks
    # choosing another range: the status line, the URL and the data follow
    browser.eval("(() => { const s = document.getElementById('range'); s.value = '60';"
                 " s.dispatchEvent(new Event('change')); })()")
    browser.wait("document.getElementById('status').textContent.includes('last 60 min')")
    assert "minutes=60" in browser.eval("location.search")
