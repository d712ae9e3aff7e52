"""The platform's SQLite store used directly: group commit, overwrite semantics, SQL aggregation,
listeners the MQTT transport and rule engine rely on."""

from __future__ import annotations

import asyncio

import pytest

from tbspark.platform.store import RuleChain, Store
from tbspark.platform.store.models import new_id, now_ms


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "p.db")
    yield s
    s.close()


def test_concurrent_writes_share_transactions(store):
    async def run() -> None:
        await asyncio.gather(*(store.save_timeseries("DEVICE", "d1", [(i, "k", "LONG", i)]) for i in range(500)))
    before = store.stats()["transactions"]
    asyncio.run(run())
    stats = store.stats()
    assert store.history_sync("d1", ["k"], 0, 1000, limit=1000, order="ASC")["k"][-1] == (499, "LONG", 499)
    assert stats["transactions"] - before < 50  # group commit: far fewer transactions than writes


def test_same_ts_overwrites_and_latest_never_goes_back(store):
    async def run() -> None:
        await store.save_timeseries("DEVICE", "d", [(2000, "w", "LONG", 1)])
        await store.save_timeseries("DEVICE", "d", [(2000, "w", "DOUBLE", 2.5)])
        await store.save_timeseries("DEVICE", "d", [(1000, "w", "LONG", 9)])  # older point arrives late
    asyncio.run(run())
    assert store.history_sync("d", ["w"], 0, 5000, order="ASC")["w"] == [(1000, "LONG", 9), (2000, "DOUBLE", 2.5)]
    assert store.latest("d")["w"] == (2000, "DOUBLE", 2.5)


def test_aggregation_buckets_types_and_clipped_last_bucket(store):
    points = [(t, "v", "LONG", t // 1000) for t in range(0, 25_000, 1000)]
    points += [(500, "v", "STRING", "text")]  # strings are counted but never averaged
    asyncio.run(store.save_timeseries("DEVICE", "a", points))
    avg = store.history_sync("a", ["v"], 0, 25_000, interval=10_000, agg="AVG", order="ASC")["v"]
    # The last bucket is clipped at endTs: [20000, 25000) → middle 22500.
    assert avg == [(5000, "DOUBLE", 4.5), (15_000, "DOUBLE", 14.5), (22_500, "DOUBLE", 22.0)]
    assert store.history_sync("a", ["v"], 0, 25_000, interval=10_000, agg="COUNT", order="ASC")["v"][0] == (
        5000, "LONG", 11)
    # Aggregated buckets come oldest first whatever orderBy says, as on ThingsBoard.
    assert store.history_sync("a", ["v"], 0, 25_000, interval=10_000, agg="MAX", order="DESC")["v"][-1] == (
        22_500, "LONG", 24)
    # A huge range of mostly empty buckets takes the GROUP BY path and gives the same answer.
    far = store.history_sync("a", ["v"], 0, 10**12, interval=1000, agg="SUM", order="ASC")["v"]
    assert far[:2] == [(500, "LONG", 0), (1500, "LONG", 1)] and len(far) == 25


def test_shared_attribute_listener_and_chain_listener(store):
    tenant = store.create_tenant("T")
    seen: list = []
    chains: list = []
    store.add_attribute_listener(lambda *a: seen.append(a))
    store.add_chain_listener(chains.append)
    asyncio.run(store.save_attributes("DEVICE", "d", "SERVER_SCOPE", {"a": ("LONG", 1)}, 1))
    asyncio.run(store.save_attributes("DEVICE", "d", "SHARED_SCOPE", {"b": ("BOOLEAN", True)}, 2))
    assert seen == [("DEVICE", "d", "SHARED_SCOPE", {"b": ("BOOLEAN", True)})]
    assert store.get_attributes("DEVICE", "d", "SHARED_SCOPE") == {"b": ("BOOLEAN", True, 2)}
    rc = store.save_rule_chain_sync(RuleChain(new_id(), tenant.id, "c", now_ms()))
    asyncio.run(store.set_root_rule_chain(tenant.id, rc.id))
    assert store.root_rule_chain_id(tenant.id) == rc.id and chains[-1] is None


def test_get_or_create_device_is_idempotent_and_makes_profiles(store):
    tenant = store.create_tenant("T")
    dev, created = store.get_or_create_device(tenant.id, "gw-child-1", "Thermostat", {"lastConnectedGateway": "g"})
    again, created_again = store.get_or_create_device(tenant.id, "gw-child-1", "Thermostat")
    assert created and not created_again and again.id == dev.id
    assert store.device_profile(dev.profile_id).name == "Thermostat"
    assert store.device_by_token(dev.token).id == dev.id and len(dev.token) == 20


def test_a_failing_write_fails_alone(store):
    tenant = store.create_tenant("T")
    profile = store.default_device_profile(tenant.id)
    a = store.new_device(tenant.id, "same-name", profile)
    b = store.new_device(tenant.id, "same-name", profile)

    async def run():
        return await asyncio.gather(store.save_device(a), store.save_device(b),
                                    store.save_timeseries("DEVICE", a.id, [(1, "k", "LONG", 1)]),
                                    return_exceptions=True)
    results = asyncio.run(run())
    assert results[0].name == "same-name"
    assert str(results[1]) == "Device with such name already exists!"
    assert results[2] is None and store.latest(a.id)["k"] == (1, "LONG", 1)
    assert store.device_by_name(tenant.id, "same-name").id == a.id


def test_a_rolled_back_write_leaves_no_ghost_series(store):
    async def run():
        bad = [(1, "fresh", "LONG", 1), (2, "fresh", "NO_SUCH_KIND", 2)]  # fails after creating the series
        with pytest.raises(KeyError):
            await store.save_timeseries("DEVICE", "g", bad)
        await store.save_timeseries("DEVICE", "g", [(3, "fresh", "LONG", 3)])
    asyncio.run(run())
    assert store.history_sync("g", ["fresh"], 0, 10)["fresh"] == [(3, "LONG", 3)]


def test_points_with_a_ttl_are_left_out_then_removed(store):
    import time

    now = int(time.time() * 1000)
    asyncio.run(store.save_timeseries("DEVICE", "ttl", [(1, "k", "LONG", 1), (2, "k", "LONG", 2)], ttl_s=60))
    asyncio.run(store.save_timeseries("DEVICE", "ttl", [(3, "k", "LONG", 3)]))
    # Written again without a TTL, a point loses its expiry (as a Cassandra cell does).
    asyncio.run(store.save_timeseries("DEVICE", "ttl", [(2, "k", "LONG", 20)]))
    assert [p[2] for p in store.history_sync("ttl", ["k"], 0, 10, order="ASC")["k"]] == [1, 20, 3]
    assert asyncio.run(store.remove_expired(now_ms=now)) == 0  # not yet expired
    assert asyncio.run(store.remove_expired(now_ms=now + 61_000)) == 1
    assert [p[2] for p in store.history_sync("ttl", ["k"], 0, 10, order="ASC")["k"]] == [20, 3]
    assert store._read().execute("SELECT COUNT(*) FROM ts_kv k JOIN ts_series s ON s.sid = k.sid "
                                 "WHERE s.entity_id = 'ttl'").fetchone()[0] == 2
