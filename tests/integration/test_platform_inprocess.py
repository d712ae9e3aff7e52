"""The platform run in-process on port 0 (as other tests and tools can): start, serve, stop, reopen."""

from __future__ import annotations

import asyncio

import aiohttp

from tbspark.platform.app import Platform
from tbspark.platform.store import Store


def test_in_process_start_write_stop_and_reopen(tmp_path):
    async def run() -> None:
        p = Platform(tmp_path)
        http_port, mqtt_port = await p.start("127.0.0.1", 0, 0)
        assert http_port > 0 and mqtt_port and mqtt_port > 0
        base = f"http://127.0.0.1:{http_port}"
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(base + "/api/auth/login",
                                  json={"username": "tenant@thingsboard.org", "password": "tenant"}) as r:
                    token = (await r.json())["token"]
                h = {"X-Authorization": f"Bearer {token}"}
                async with s.post(base + "/api/device", json={"name": "inproc", "type": "t"}, headers=h) as r:
                    dev = (await r.json())["id"]["id"]
                writes = [s.post(f"{base}/api/plugins/telemetry/DEVICE/{dev}/timeseries/ANY",
                                 data=f'{{"ts": {1000 + i}, "values": {{"v": {i}}}}}', headers=h) for i in range(50)]
                for resp in await asyncio.gather(*writes):
                    assert resp.status == 200
                    resp.release()
                # /tbspark/reset (for tests) empties this private platform but keeps logins and the root chain.
                async with s.post(base + "/api/device", json={"name": "to-reset", "type": "t"}, headers=h) as r:
                    assert r.status == 200
                p.store.flush()
                snapshot = {d.name for d in p.store.devices(p.tenant_id)}
                async with s.post(base + "/tbspark/reset", headers=h) as r:
                    assert r.status == 200
                async with s.get(base + "/api/tenant/devices?pageSize=10&page=0", headers=h) as r:
                    assert (await r.json())["totalElements"] == 0
                async with s.get(base + "/api/ruleChains?pageSize=10&page=0", headers=h) as r:
                    assert [c["root"] for c in (await r.json())["data"]] == [True]
                assert snapshot == {"inproc", "to-reset"}
        finally:
            await p.stop()

    asyncio.run(run())


def test_stop_commits_what_was_acknowledged(tmp_path):
    async def run() -> str:
        p = Platform(tmp_path)
        await p.start("127.0.0.1", 0, 0)
        dev, _ = p.store.get_or_create_device(p.tenant_id, "flush-me", "t")
        await asyncio.gather(*(p.store.save_timeseries("DEVICE", dev.id, [(1000 + i, "v", "LONG", i)])
                               for i in range(50)))
        await p.stop()
        return dev.id

    dev = asyncio.run(run())
    store = Store(tmp_path / "platform" / "platform.db")
    try:
        got = store.history_sync(dev, ["v"], 0, 10_000, limit=1000, order="ASC")
        assert [v for _, _, v in got["v"]] == list(range(50))
        assert store.latest(dev)["v"] == (1049, "LONG", 49)
    finally:
        store.close()
