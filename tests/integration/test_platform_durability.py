"""Acknowledged writes survive kill -9 of the platform: restart on the same state dir, the data is there."""

from __future__ import annotations

import signal

from tests.fixtures.platform import start_platform

T0 = 1_700_000_000_000


def test_acknowledged_writes_survive_kill_9(tmp_path):
    p = start_platform(tmp_path / "state")
    try:
        s = p.session()
        dev = s.post(f"{p.url}/api/device", params={"accessToken": "DURABLE1"},
                     json={"name": "durable", "type": "turbine"}).json()
        url = f"{p.url}/api/plugins/telemetry/DEVICE/{dev['id']['id']}"
        for i in range(200):
            r = s.post(f"{url}/timeseries/ANY", data=f'{{"ts": {T0 + i}, "values": {{"windSpeed": {i}}}}}',
                       headers={"Content-Type": "text/plain"})
            assert r.status_code == 200
        assert s.post(f"{url}/attributes/SHARED_SCOPE", data='{"threshold": 20}').status_code == 200
        token = s.headers["X-Authorization"]
    finally:
        assert p.stop(signal.SIGKILL) == -signal.SIGKILL

    again = start_platform(tmp_path / "state")
    try:
        s = again.session()
        assert s.get(f"{again.url}/api/tenant/device", params={"deviceName": "durable"}).json()["id"] == dev["id"]
        url = f"{again.url}/api/plugins/telemetry/DEVICE/{dev['id']['id']}"
        hist = s.get(f"{url}/values/timeseries/history", params={
            "keys": "windSpeed", "startTs": T0, "endTs": T0 + 1000, "limit": 1000, "agg": "COUNT",
            "interval": 1000, "useStrictDataTypes": "true"}).json()
        assert hist == {"windSpeed": [{"ts": T0 + 500, "value": 200}]}
        creds = s.get(f"{again.url}/api/device/{dev['id']['id']}/credentials").json()
        assert creds["credentialsId"] == "DURABLE1"
        attrs = s.get(f"{url}/values/attributes/SHARED_SCOPE").json()
        assert [(a["key"], a["value"]) for a in attrs] == [("threshold", 20)]
        # The signing key is kept in the state dir, so a token from before the crash still works.
        r = s.get(f"{again.url}/api/auth/user", headers={"X-Authorization": token})
        assert r.status_code == 200
    finally:
        assert again.stop() == 0
