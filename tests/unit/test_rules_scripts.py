"""Script nodes on the embedded V8 (mini-racer) with ThingsBoard's conventions: filter → boolean,
switch → relation name(s), transform → {msg, metadata, msgType} or an array, log → string; errors,
wrong result types, TBEL that is not JavaScript and scripts that loop all take Failure."""

import asyncio
import logging
import time

import pytest

from tbspark.platform.rules.engine import RuleEngine
from tests.unit.test_rules import FakeStore, chain, node, tele

pytest.importorskip("py_mini_racer")


def script(type_, body, name=None, lang="JS"):
    field = "tbelScript" if lang == "TBEL" else "jsScript"
    return node(type_, {"scriptLang": lang, field: body}, name=name)


def sink(name):
    """A node that takes anything and says Success: a marker of where messages went."""
    return node("transform.TbRenameKeysNode", {"renameIn": "METADATA", "renameKeysMapping": {"x": "y"}}, 2, name)


def run_chain(meta, msgs, **engine_kw):
    store = FakeStore()
    store.chains["c"] = meta
    store.root = "c"
    engine = RuleEngine(store, **engine_kw)

    async def go():
        await engine.start()
        await engine.process(msgs)
        while engine._tasks:  # RPC/Kafka continuations (none here, but keep the contract)
            await asyncio.gather(*list(engine._tasks))
        counters = engine.counters()
        await engine.stop()
        return counters
    return asyncio.run(go())


def outs(counters):
    return {n["node"]: (n["in"], n["out"]) for n in counters["nodes"]}


def test_js_filter_routes_true_false_and_failure_on_error_or_non_boolean():
    meta = chain([script("filter.TbJsFilterNode", "return msg.temperature > 20;", "hot?"),
                  sink("hot"), sink("cold")], [(0, 1, "True"), (0, 2, "False")])
    msgs = [tele({"temperature": 25}), tele({"temperature": 5}), tele({"temperature": 30})]
    got = outs(run_chain(meta, msgs))
    assert got["hot?"] == (3, {"True": 2, "False": 1})
    assert got["hot"][0] == 2 and got["cold"][0] == 1

    bad = [tele({"t": 1})]
    c = run_chain(chain([script("filter.TbJsFilterNode", "return 'yes';", "f")], []), bad)
    assert outs(c)["f"] == (1, {"Failure": 1}) and "Wrong result type: STRING" in bad[0].metadata["error"]
    boom = [tele({"t": 1})]
    c = run_chain(chain([script("filter.TbJsFilterNode", "throw new Error('boom');", "f")], []), boom)
    assert outs(c)["f"] == (1, {"Failure": 1}) and "Error: boom" in boom[0].metadata["error"]


def test_js_switch_one_or_several_relations_and_bad_results():
    body = ("if (msg.t > 20) return ['hot', 'log']; if (msg.t < 0) return 5; "
            "return metadata.deviceType === 'WeatherStation' ? 'mild' : 'other';")
    meta = chain([script("filter.TbJsSwitchNode", body, "sw"), sink("hot"), sink("log"), sink("mild")],
                 [(0, 1, "hot"), (0, 2, "log"), (0, 3, "mild")])
    msgs = [tele({"t": 25}), tele({"t": 10}), tele({"t": -3})]
    got = outs(run_chain(meta, msgs))
    assert got["sw"] == (3, {"hot": 1, "log": 1, "mild": 1, "Failure": 1})
    assert got["hot"][0] == 1 and got["log"][0] == 1 and got["mild"][0] == 1
    assert "Wrong result type: NUMBER" in msgs[2].metadata["error"]


def test_transform_replaces_msg_metadata_type_and_splits_arrays():
    body = ("if (msg.split) return [{msg: {part: 1}}, {msg: {part: 2}, metadata: {n: 2}}];"
            "if (msg.none) return [];"
            "if (msg.num) return 42;"
            "msg.f = msg.c * 9 / 5 + 32; delete msg.c; metadata.unit = 'F';"
            "return {msg: msg, metadata: metadata, msgType: 'CUSTOM'};")
    meta = chain([script("transform.TbTransformMsgNode", body, "tr"), sink("after")], [(0, 1, "Success")])
    one, split, none, num = tele({"c": 100}), tele({"split": True}), tele({"none": True}), tele({"num": 1})
    got = outs(run_chain(meta, [one, split, none, num]))
    assert one.data == {"f": 212} and one.metadata["unit"] == "F" and one.type == "CUSTOM"
    assert got["tr"] == (4, {"Success": 3, "Failure": 2})
    assert got["after"][0] == 3
    assert "empty" in none.metadata["error"] and "Wrong result type: NUMBER" in num.metadata["error"]


def test_log_node_logs_the_script_string_and_fails_on_other_results(caplog):
    meta = chain([script("action.TbLogNode", "return 'temperature is ' + msg.t;", "log"), sink("after")],
                 [(0, 1, "Success")])
    with caplog.at_level(logging.INFO, logger="tbspark.platform.rules.nodes.script"):
        got = outs(run_chain(meta, [tele({"t": 7})]))
    assert got["log"] == (1, {"Success": 1}) and "temperature is 7" in caplog.text
    bad = [tele({"t": 7})]
    got = outs(run_chain(chain([script("action.TbLogNode", "return {a: 1};", "log")], []), bad))
    assert got["log"] == (1, {"Failure": 1}) and "OBJECT" in bad[0].metadata["error"]


def test_tbel_runs_when_it_is_javascript_and_fails_clearly_when_not():
    ok = chain([script("filter.TbJsFilterNode", "return msg.t > 1 && metadata.deviceName != null;", "f", "TBEL")], [])
    assert outs(run_chain(ok, [tele({"t": 2})]))["f"] == (1, {"True": 1})
    m = tele({"t": 2})
    tbel_only = "var s = 0; foreach (x : msg.values) { s += x; } return s > 1;"
    got = outs(run_chain(chain([script("filter.TbJsFilterNode", tbel_only, "f", "TBEL")], []), [m]))
    assert got["f"] == (1, {"Failure": 1})
    assert "TBEL script is not valid JavaScript" in m.metadata["error"]


def test_a_looping_script_is_stopped_within_its_limit_and_the_loop_keeps_running():
    limit_ms = 200
    meta = chain([script("filter.TbJsFilterNode", "if (msg.loop) { while (true) {} } return true;", "f"),
                  sink("passed")], [(0, 1, "True")])
    msgs = [tele({"loop": True}), tele({"loop": False}), tele({"loop": True}), tele({"loop": True}),
            tele({"loop": True})]
    store = FakeStore()
    store.chains["c"], store.root = meta, "c"
    engine = RuleEngine(store, script_timeout_ms=limit_ms)

    async def go():
        await engine.start()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1
        t = asyncio.ensure_future(ticker())
        t0 = time.monotonic()
        await engine.process(msgs)
        took = time.monotonic() - t0
        t.cancel()
        counters = engine.counters()
        await engine.stop()
        return took, ticks, counters

    took, ticks, counters = asyncio.run(go())
    # one batch call, then one call per message until three time-outs block the script: ≤ 4 limits
    assert took < 4 * limit_ms / 1000 + 1.0
    assert ticks > took / 0.01 / 4  # the event loop kept turning while V8 looped
    f = outs(counters)["f"]
    assert f[1] == {"True": 1, "Failure": 4}
    assert [m.metadata.get("error") for m in msgs][:3] == ["Script timeout!", None, "Script timeout!"]
    assert "blocked" in msgs[4].metadata["error"]


def test_a_blocked_script_gets_one_try_after_its_block(monkeypatch):
    from tbspark.platform.rules import script as script_mod

    s = script_mod.Script("if (msg.loop) { while (true) {} } return true;", "JS", timeout_ms=300)
    loop, fine = ('{"loop": true}', "{}", "T"), ('{"loop": false}', "{}", "T")
    ex = script_mod.executor()
    try:
        got = ex.submit(s.run_sync, [loop, loop, loop, fine]).result()
        assert [r[1] for r in got[:3]] == ["Script timeout!"] * 3 and "blocked" in got[3][1]
        now = time.monotonic()
        monkeypatch.setattr(script_mod, "_now", lambda: now + script_mod.BLOCK_S + 1)
        assert ex.submit(s.run_sync, [fine]).result() == [(True, True)]  # the block is over
        got = ex.submit(s.run_sync, [loop, fine]).result()
        assert got[0] == (False, "Script timeout!") and "blocked" in got[1][1]  # one time-out blocks again
        assert s.timeouts == 4
    finally:
        s.close()


def test_a_slow_script_is_not_counted_as_looping_and_gets_smaller_calls():
    from tbspark.platform.rules import script as script_mod

    # 20 ms a message (wall clock, as V8's limit): a call of 60 overruns 1 s, each message alone is far
    # below it
    s = script_mod.Script("var t = Date.now(); while (Date.now() - t < 20) {} return true;", "JS", timeout_ms=1000)
    one = ('{"a": 1}', "{}", "T")
    ex = script_mod.executor()
    try:
        assert ex.submit(s.run_sync, [one] * 60).result() == [(True, True)] * 60
        assert s.timeouts == 0 and s.chunk == 15
        t0 = time.monotonic()
        assert ex.submit(s.run_sync, [one] * 60).result() == [(True, True)] * 60
        assert time.monotonic() - t0 < 2.5  # no call overran: ~1.2 s of work, no 1 s time-out
    finally:
        s.close()
