"""No chain can hold the platform: loops refused with ThingsBoard's messages, a per-message cap on
node executions (an acyclic chain that fans out exponentially, a loop stored before validation
existed), and node types the platform does not execute taking Failure, counted and logged once."""

import logging
import time

from tbspark.platform.rules.engine import MAX_NODE_EXECUTIONS_PER_MESSAGE, RuleEngine
from tbspark.platform.rules.validate import CYCLE, SELF_LOOP, cycle_error, execution_bound
from tests.unit.test_rules import FakeStore, chain, forwarding_chain, node, tele
from tests.unit.test_rules_scripts import outs, run_chain

SWITCH = ("filter.TbMsgTypeSwitchNode", {"version": 0})


def conns(*pairs):
    return [{"fromIndex": a, "toIndex": b, "type": "Success"} for a, b in pairs]


def test_cycles_get_thingsboards_messages_and_acyclic_shapes_pass():
    assert cycle_error(conns((0, 1), (1, 1))) == SELF_LOOP == "Can't create the relation to yourself."
    assert cycle_error(conns((0, 1), (1, 2), (2, 0))) == CYCLE == "Can't create circling relations in rule chain."
    assert cycle_error(conns((0, 1), (1, 2), (2, 1))) == CYCLE  # a loop not through the first node
    assert cycle_error(conns((0, 1), (0, 2), (1, 3), (2, 3))) is None  # a diamond is no loop
    assert cycle_error(conns(*[(i, i + 1) for i in range(5000)])) is None  # long, and no recursion limit
    meta = chain([node(*SWITCH), node(*SWITCH)], [(0, 1, "Post telemetry"), (1, 0, "Other")])
    assert RuleEngine(FakeStore()).validate_chain(meta) == [CYCLE]


def test_execution_bound_counts_paths():
    assert execution_bound(conns((0, 1), (0, 2), (1, 3), (2, 3)), 0, 50) == 5  # 0, 1, 2, and 3 twice
    assert execution_bound(conns((0, 1), (1, 0)), 0, 50) == 51
    fib = conns(*[(i, i + 1) for i in range(40)], *[(i, i + 2) for i in range(39)])
    assert execution_bound(fib, 0, 50) == 51


def fanout_chain(n):
    """n message type switches, each sending telemetry to the next two: ~fib(n) executions uncapped."""
    links = [(i, i + 1, "Post telemetry") for i in range(n - 1)] + [(i, i + 2, "Post telemetry") for i in range(n - 2)]
    return chain([node(*SWITCH, name=f"s{i}") for i in range(n)], links)


def test_an_exponential_fan_out_stops_at_the_cap(caplog):
    msgs = [tele({"v": i}) for i in range(20)]
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        counters = run_chain(fanout_chain(40), msgs)  # fib(40) ≈ 10^8 executions per message uncapped
    assert time.monotonic() - t0 < 5
    executed = sum(n["in"] for n in counters["nodes"])
    assert executed == 20 * MAX_NODE_EXECUTIONS_PER_MESSAGE
    assert counters["capped"] > 0
    assert caplog.text.count("Message is processed by more than 50 rule nodes!") == 1


def test_a_loop_saved_before_validation_existed_still_ends():
    meta = chain([node(*SWITCH, name="a"), node(*SWITCH, name="b")],
                 [(0, 1, "Post telemetry"), (1, 0, "Post telemetry")])
    counters = run_chain(meta, [tele({"v": 1})], max_node_executions=7)
    assert sum(n["in"] for n in counters["nodes"]) == 7 and counters["capped"] == 1


def test_script_free_chains_are_not_counted():
    """The cap costs nothing where it cannot bite: the tutorial chain keeps its fused fast path."""
    import asyncio
    store = FakeStore()
    store.chains["c"] = forwarding_chain({"copyFrom": "METADATA", "keys": ["cs_geoZone", "ts"]}, 2,
                                         {"renameIn": "DATA", "renameKeysMapping": {"cs_geoZone": "geoZone"}},
                                         node("telemetry.TbMsgTimeseriesNode", {}))
    engine = RuleEngine(store)
    compiled = asyncio.run(engine._compile("c", store.chains["c"]))
    assert not compiled.counted and compiled.runs
    assert asyncio.run(engine._compile("f", fanout_chain(12))).counted


def test_unknown_node_types_take_failure_counted_and_logged_once(caplog):
    meta = chain([node(*SWITCH), node("action.TbMsgPushToCloudNode", {"scope": "SERVER_SCOPE"}, name="cloud"),
                  node("transform.TbRenameKeysNode", {"renameIn": "METADATA", "renameKeysMapping": {"a": "b"}}, 2,
                       name="on failure")],
                 [(0, 1, "Post telemetry"), (1, 2, "Failure")])
    assert RuleEngine(FakeStore()).validate_chain(meta) == []  # saved, as ThingsBoard saves it
    store = FakeStore()
    store.chains["c"], store.root = meta, "c"
    engine = RuleEngine(store)
    import asyncio

    async def go():
        await engine.start()
        await engine.process([tele({"v": 1}), tele({"v": 2})])
        await engine.process([tele({"v": 3})])
        c = engine.counters()
        await engine.stop()
        return c
    with caplog.at_level(logging.WARNING):
        counters = asyncio.run(go())
    got = outs(counters)
    assert got["cloud"] == (3, {"Failure": 3}) and got["on failure"][0] == 3
    assert counters["failed"] == 3
    assert caplog.text.count("TbMsgPushToCloudNode is not supported by the embedded platform") == 1
