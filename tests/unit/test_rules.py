"""The rule engine with an in-memory store: routing by relation, the script-free nodes in both
configuration versions, and validation of chains the platform cannot run."""

import asyncio

import pytest

from tbspark.platform.rules.engine import RuleEngine, default_root_chain_metadata
from tbspark.platform.rules.msg import POST_ATTRIBUTES, POST_TELEMETRY, TbMsg

P = "org.thingsboard.rule.engine."


class FakeStore:
    def __init__(self):
        self.attrs = {}      # (id, scope) -> {key: (kind, value, ts)}
        self.ts = []         # (entity_id, ts, key, kind, value)
        self.saved_attrs = []
        self.chains = {}
        self.root = None
        self.profiles = {}

    def get_attributes(self, etype, eid, scope, keys=None):
        found = self.attrs.get((eid, scope), {})
        return {k: v for k, v in found.items() if keys is None or k in keys}

    def latest(self, eid, keys=None):
        return {k: (ts, kind, v) for (e, ts, k, kind, v) in self.ts if e == eid and (keys is None or k in keys)}

    async def save_timeseries(self, etype, eid, rows):
        self.ts += [(eid, *r) for r in rows]

    async def save_attributes(self, etype, eid, scope, kv, ts):
        self.saved_attrs.append((eid, scope, kv))

    def rule_chain_metadata(self, cid):
        return self.chains.get(cid)

    def root_rule_chain_id(self, tenant):
        return self.root

    def device_profile(self, pid):
        return self.profiles.get(pid)

    def add_chain_listener(self, cb):
        self.listener = cb


def node(type_, config, version=0, name=None):
    return {"type": P + type_, "name": name or type_.rsplit(".", 1)[-1], "configurationVersion": version,
            "configuration": config}


def chain(nodes, conns):
    return {"firstNodeIndex": 0, "nodes": nodes,
            "connections": [{"fromIndex": a, "toIndex": b, "type": t} for a, b, t in conns]}


def tele(data, dev="d1", ts="1719999999999"):
    return TbMsg(POST_TELEMETRY, ("DEVICE", dev), data,
                 {"deviceName": "Wind Turbine 1", "deviceType": "WeatherStation", "ts": ts}, "t1")


def run(engine, msgs):
    async def go():
        await engine.start()
        await engine.process(msgs)
        counters = engine.counters()
        await engine.stop()
        return counters
    return asyncio.run(go())


def forwarding_chain(copy_cfg, copy_version, rename_cfg, tail):
    """type switch → originator attributes → check fields → copy → rename → (tail node)."""
    return chain([
        node("filter.TbMsgTypeSwitchNode", {"version": 0}),
        node("metadata.TbGetAttributesNode", {"clientAttributeNames": ["deviceType", "geoZone"],
                                              "tellFailureIfAbsent": True, "fetchTo": "METADATA"}, 1),
        node("filter.TbCheckMessageNode", {"messageNames": ["windSpeed"], "metadataNames": ["cs_geoZone"],
                                           "checkAllKeys": True}),
        node("transform.TbCopyKeysNode", copy_cfg, copy_version),
        node("transform.TbRenameKeysNode", rename_cfg, copy_version),
        tail,
    ], [(0, 1, "Post telemetry"), (1, 2, "Success"), (2, 3, "True"), (3, 4, "Success"), (4, 5, "Success")])


@pytest.mark.parametrize("version,copy_cfg,rename_cfg", [
    (2, {"copyFrom": "METADATA", "keys": ["cs_geoZone"]}, {"renameIn": "DATA", "renameKeysMapping": {"cs_geoZone": "geoZone"}}),
    (0, {"fromMetadata": True, "keys": ["cs_geo.*"]}, {"fromMetadata": False, "renameKeysMapping": {"cs_geoZone": "geoZone"}}),
])
def test_forwarding_chain_builds_the_tutorial_record(version, copy_cfg, rename_cfg):
    store = FakeStore()
    store.attrs[("d1", "CLIENT_SCOPE")] = {"geoZone": ("STRING", "Zone A", 1), "deviceType": ("STRING", "WeatherStation", 1)}
    store.chains["c1"] = forwarding_chain(copy_cfg, version, rename_cfg,
                                          node("telemetry.TbMsgTimeseriesNode", {"defaultTTL": 0}))
    store.root = "c1"
    m = tele({"windSpeed": 42})
    counters = run(RuleEngine(store), [m])
    assert m.data_json() == '{"windSpeed":42,"geoZone":"Zone A"}'
    assert m.metadata["cs_deviceType"] == "WeatherStation"
    # the save node stored both keys at the metadata ts
    assert sorted((k, v) for _, ts, k, _, v in store.ts) == [("geoZone", "Zone A"), ("windSpeed", 42)]
    assert {t for _, t, *_ in store.ts} == {1719999999999}
    assert counters["messages_in"] == 1 and counters["failed"] == 0


def test_missing_attribute_goes_to_failure_and_is_counted():
    store = FakeStore()
    store.attrs[("d1", "CLIENT_SCOPE")] = {"deviceType": ("STRING", "WeatherStation", 1)}
    store.chains["c1"] = forwarding_chain({"copyFrom": "METADATA", "keys": ["cs_geoZone"]}, 2,
                                          {"renameIn": "DATA", "renameKeysMapping": {"cs_geoZone": "geoZone"}},
                                          node("telemetry.TbMsgTimeseriesNode", {}))
    store.root = "c1"
    m = tele({"windSpeed": 42})
    counters = run(RuleEngine(store), [m])
    assert "cs_geoZone" in m.metadata["error"]
    assert store.ts == []
    assert counters["failed"] == 1
    attrs_node = [n for n in counters["nodes"] if n["type"] == "TbGetAttributesNode"][0]
    assert attrs_node["out"] == {"Failure": 1}


def test_check_fields_false_stops_messages_without_the_value():
    store = FakeStore()
    store.attrs[("d1", "CLIENT_SCOPE")] = {"geoZone": ("STRING", "Zone A", 1), "deviceType": ("STRING", "x", 1)}
    store.chains["c1"] = forwarding_chain({"copyFrom": "METADATA", "keys": ["cs_geoZone"]}, 2,
                                          {"renameIn": "DATA", "renameKeysMapping": {"cs_geoZone": "geoZone"}},
                                          node("telemetry.TbMsgTimeseriesNode", {}))
    store.root = "c1"
    run(RuleEngine(store), [tele({"temperature": 20})])
    assert store.ts == []


def test_builtin_root_saves_telemetry_and_client_attributes():
    store = FakeStore()
    a = TbMsg(POST_ATTRIBUTES, ("DEVICE", "d1"), {"geoZone": "Zone A"}, {"deviceName": "x"}, "t1")
    counters = run(RuleEngine(store), [tele({"windSpeed": 1.5}), a, tele({"windSpeed": 2}, "d2")])
    assert [(k, kind, v) for _, _, k, kind, v in store.ts] == [("windSpeed", "DOUBLE", 1.5), ("windSpeed", "LONG", 2)]
    # the save node is a leaf: its successes are counted without being listed, the counters are the same
    save = next(n for n in counters["nodes"] if n["type"] == "TbMsgTimeseriesNode")
    assert save["in"] == 2 and save["out"] == {"Success": 2} and counters["failed"] == 0
    assert store.saved_attrs == [("d1", "CLIENT_SCOPE", {"geoZone": ("STRING", "Zone A")})]


def test_profile_default_chain_wins_over_root():
    class Profile:
        default_rule_chain_id = "p-chain"
    store = FakeStore()
    store.profiles["p1"] = Profile()
    store.root = "root"
    store.chains["root"] = chain([node("telemetry.TbMsgTimeseriesNode", {})], [])
    store.chains["p-chain"] = chain([node("transform.TbDeleteKeysNode", {"deleteFrom": "DATA", "keys": ["w.*"]}, 2)], [])
    m = tele({"windSpeed": 1, "x": 2})
    m.profile_id = "p1"
    run(RuleEngine(store), [m])
    assert m.data == {"x": 2} and store.ts == []


def test_fetch_to_data_and_shared_prefix():
    store = FakeStore()
    store.attrs[("d1", "SHARED_SCOPE")] = {"limit": ("DOUBLE", 20.0, 1)}
    store.root = "c"
    store.chains["c"] = chain([node("metadata.TbGetAttributesNode",
                                    {"sharedAttributeNames": ["limit"], "fetchTo": "DATA"}, 1)], [])
    m = tele({"windSpeed": 1})
    run(RuleEngine(store), [m])
    assert m.data == {"windSpeed": 1, "shared_limit": 20.0}


def test_fetch_version0_without_fetch_to_data_goes_to_metadata():
    store = FakeStore()
    store.attrs[("d1", "SHARED_SCOPE")] = {"limit": ("DOUBLE", 20.0, 1)}
    store.root = "c"
    store.chains["c"] = chain([node("metadata.TbGetAttributesNode",
                                    {"sharedAttributeNames": ["limit"], "fetchTo": "DATA"}, 0)], [])
    m = tele({"windSpeed": 1})
    run(RuleEngine(store), [m])
    assert m.metadata["shared_limit"] == "20.0" and "shared_limit" not in m.data


def test_type_switch_emits_display_names_and_other():
    store = FakeStore()
    store.root = "c"
    store.chains["c"] = chain([node("filter.TbMsgTypeSwitchNode", {"version": 0})], [])
    odd = TbMsg("SOMETHING_ELSE", ("DEVICE", "d1"), {}, {}, "t1")
    counters = run(RuleEngine(store), [tele({"a": 1}), odd])
    assert counters["nodes"][0]["out"] == {"Post telemetry": 1, "Other": 1}


def test_copy_data_to_metadata_stringifies():
    store = FakeStore()
    store.root = "c"
    store.chains["c"] = chain([node("transform.TbCopyKeysNode", {"copyFrom": "DATA", "keys": ["a", "b"]}, 2)], [])
    m = tele({"a": 1.0, "b": {"x": True}})
    run(RuleEngine(store), [m])
    assert (m.metadata["a"], m.metadata["b"]) == ("1.0", '{"x":true}')


def _switch_delete_save(relations: list) -> FakeStore:
    """A type switch → delete key "a" (node 1) and save time series (node 2), by ``relations``."""
    store = FakeStore()
    store.root = "c"
    store.chains["c"] = chain([
        node("filter.TbMsgTypeSwitchNode", {}),
        node("transform.TbDeleteKeysNode", {"deleteFrom": "DATA", "keys": ["a"]}, 2),
        node("telemetry.TbMsgTimeseriesNode", {}),
    ], relations)
    return store


def test_one_relation_to_two_nodes_copies_the_message():
    store = _switch_delete_save([(0, 1, "Post telemetry"), (0, 2, "Post telemetry")])
    run(RuleEngine(store), [tele({"a": 1})])
    assert [k for _, _, k, _, _ in store.ts] == ["a"]  # the delete on the other branch did not leak


def test_shared_message_is_saved_before_a_node_already_queued_can_change_it():
    """The delete node is already queued (attributes reached it first in the same routing step) when
    the telemetry message goes to it and, shared, to the save node: the save node still reads first."""
    store = _switch_delete_save([(0, 1, "Post attributes"), (0, 1, "Post telemetry"), (0, 2, "Post telemetry")])
    attrs = TbMsg(POST_ATTRIBUTES, ("DEVICE", "d1"), {"a": 5}, {"deviceName": "x"}, "t1")
    m = tele({"a": 1, "b": 2})
    run(RuleEngine(store), [attrs, m])
    assert sorted(k for _, _, k, _, _ in store.ts) == ["a", "b"]
    assert m.data == {"b": 2} and attrs.data == {}


class FailingTsStore(FakeStore):
    async def save_timeseries(self, etype, eid, rows):
        raise OSError("disk full")


@pytest.mark.parametrize("failure_sink", [False, True])
def test_save_node_sharing_a_message_never_changes_it_for_the_other_branch(failure_sink):
    """Post telemetry → save time series and → copy keys (changes the message). A save node with no
    connection out of it reads the other branch's very message (no copy), so it must run first and
    never mark it; with a Failure connection it gets its own copy and marks that one as before."""
    store = FailingTsStore()
    store.root = "c"
    nodes = [node("filter.TbMsgTypeSwitchNode", {}),
             node("transform.TbCopyKeysNode", {"copyFrom": "METADATA", "keys": ["deviceName"]}, 2),
             node("telemetry.TbMsgTimeseriesNode", {})]
    conns = [(0, 1, "Post telemetry"), (0, 2, "Post telemetry")]
    if failure_sink:
        nodes.append(node("transform.TbCopyKeysNode", {"copyFrom": "METADATA", "keys": ["error"]}, 2))
        conns.append((2, 3, "Failure"))
    store.chains["c"] = chain(nodes, conns)
    m = tele({"windSpeed": 3})
    counters = run(RuleEngine(store), [m])
    assert "error" not in m.metadata and m.data == {"windSpeed": 3, "deviceName": "Wind Turbine 1"}
    save = counters["nodes"][2]
    assert save["in"] == 1 and save["out"] == {"Failure": 1} and counters["failed"] == 1
    if failure_sink:  # the copy that failed carried its error on to the Failure branch
        assert counters["nodes"][3]["in"] == 1 and counters["nodes"][3]["out"] == {"Success": 1}


def test_validate_refuses_bad_configs_naming_each_but_keeps_unknown_node_types():
    meta = chain([
        node("filter.TbMsgTypeSwitchNode", {}),
        node("filter.TbJsFilterNode", {"scriptLang": "TBEL"}, name="is weather"),
        node("transform.TbTransformMsgNode", {"scriptLang": "PYTHON"}, name="reshape"),
        node("action.TbSomethingNode", {}, name="mystery"),
        node("kafka.TbKafkaNode", {"topicPattern": ""}, name="kafka"),
    ], [(0, 9, "True")])
    problems = RuleEngine(FakeStore()).validate_chain(meta)
    assert len(problems) == 4
    assert "is weather" in problems[0] and "tbelScript" in problems[0]
    assert "reshape" in problems[1] and "scriptLang" in problems[1]
    assert "topicPattern" in problems[2]
    assert "toIndex" in problems[3]
    assert not any("mystery" in p for p in problems)  # saved as ThingsBoard saves it


def test_validate_accepts_the_default_root_and_kafka_node_v0():
    meta = default_root_chain_metadata()
    meta["nodes"].append(node("kafka.TbKafkaNode", {
        "topicPattern": "weather", "keyPattern": "${deviceName}", "bootstrapServers": "127.0.0.1:1",
        "retries": 0, "batchSize": 16384, "linger": 0, "bufferMemory": 33554432, "acks": "-1",
        "keySerializer": "org.apache.kafka.common.serialization.StringSerializer",
        "valueSerializer": "org.apache.kafka.common.serialization.StringSerializer",
        "otherProperties": {}, "addMetadataKeyValuesAsKafkaHeaders": False, "kafkaHeadersCharset": "UTF-8"}))
    assert RuleEngine(FakeStore()).validate_chain(meta) == []


def test_validate_reports_kafka_properties_librdkafka_rejects():
    meta = chain([node("kafka.TbKafkaNode", {"topicPattern": "t", "otherProperties": {"no.such.property": "1"}}, 1)], [])
    problems = RuleEngine(FakeStore()).validate_chain(meta)
    assert len(problems) == 1 and "no.such.property" in problems[0]


def test_patterns_substitute_metadata_and_data():
    from tbspark.platform.rules.nodes import compile_pattern
    m = tele({"windSpeed": 42, "nested": {"zone": "A"}})
    assert compile_pattern("${deviceName}/$[nested.zone]/$[windSpeed]/${missing}")(m) == \
        "Wind Turbine 1/A/42/${missing}"
    # a pattern that is one metadata key (the usual record key) takes a shortcut: same results
    assert compile_pattern("${deviceName}")(m) == "Wind Turbine 1"
    assert compile_pattern("${missing}")(m) == "${missing}"
    assert compile_pattern("$[windSpeed]")(m) == "42"


def test_kafka_producer_keeps_java_in_flight_default_unless_overridden():
    from tbspark.platform.rules.nodes.kafka import producer_config
    assert producer_config("n", {"topicPattern": "t"})["max.in.flight.requests.per.connection"] == 5
    conf = producer_config("n", {"topicPattern": "t",
                                 "otherProperties": {"max.in.flight.requests.per.connection": "1"}})
    assert conf["max.in.flight.requests.per.connection"] == "1"


def test_kafka_record_value_is_the_data_json_text_byte_for_byte():
    """The fast encoder (orjson when installed) must give exactly the json module's compact text;
    where it would not (exponents, tiny floats, NaN, huge integers, escapes) the json module is used."""
    cases = [{"windSpeed": 42, "geoZone": "Zone A"}, {"t": 21.5, "ok": True, "n": None},
             {"big": 2**70, "tiny": 1e-7, "huge": 1e300, "nan": float("nan")},
             {"é": "ü\u2028\x01", "nested": {"a": [1, 2.0, "x"]}}, {"neg": -0.0, "e": 1.5e16},
             # text, integers and booleans only: orjson's text is taken without the output scan
             {"s": "1e5", "n": "null", "q": 'say "hi"\n', "t": True, "u64": 2**64 - 1, "i": -2**63},
             {"ctl": "\x1f\x7f", "bs": "a\\b", "uni": "\u00e9\u20ac"}]
    for data in cases:
        m = tele(data)
        assert m.data_bytes() == m.data_json().encode("utf-8"), data


def test_gather_light_matches_gather_semantics():
    from tbspark.platform.rules.nodes import gather_light

    async def ok(loop, v):
        fut = loop.create_future()
        loop.call_later(0.01, fut.set_result, v)
        await asyncio.sleep(0)  # a bare yield first
        return await fut * 2

    async def bad():
        await asyncio.sleep(0)
        raise ValueError("store refused")

    async def go():
        loop = asyncio.get_running_loop()
        return await gather_light([ok(loop, 1), bad(), ok(loop, 3)])

    r = asyncio.run(go())
    assert r[0] == 2 and r[2] == 6 and isinstance(r[1], ValueError)


# ------------------------------------------------------------------ straight lines run message by message

class CachedAttrStore(FakeStore):
    """With the attribute change hook: the originator-attributes node takes its cached (static) path,
    which is fusable, so the whole attributes → check → copy → rename line runs message by message."""

    def __init__(self):
        super().__init__()
        self.attr_listeners = []

    def add_attribute_change_listener(self, cb):
        self.attr_listeners.append(cb)


def _tutorial_line(fuse: bool, failure_sink: bool = False):
    """The tutorial's line (copy cs_geoZone and ts, rename) into a capture node; messages that stop
    at each node of the line for each reason; returns (counters, what the capture node got, all msgs)."""
    from tbspark.platform.rules.nodes import NODE_TYPES, Node

    got = []

    class Capture(Node):
        TYPE = P + "test.LineCapture"

        def process(self, msgs):
            got.extend(msgs)
            return [("Success", m) for m in msgs]

    NODE_TYPES[Capture.TYPE] = Capture
    try:
        store = CachedAttrStore()
        store.attrs[("d1", "CLIENT_SCOPE")] = {"geoZone": ("STRING", "Zone A", 1), "deviceType": ("STRING", "W", 1)}
        store.attrs[("d2", "CLIENT_SCOPE")] = {"geoZone": ("STRING", "Zone B", 1), "deviceType": ("STRING", "W", 1)}
        store.attrs[("d3", "CLIENT_SCOPE")] = {"deviceType": ("STRING", "W", 1)}  # no zone → Failure
        c = forwarding_chain({"copyFrom": "METADATA", "keys": ["cs_geoZone", "ts"]}, 2,
                             {"renameIn": "DATA", "renameKeysMapping": {"cs_geoZone": "geoZone"}},
                             node("test.LineCapture", {}))
        if failure_sink:  # the attributes node's Failure and the check node's False lead somewhere
            c["nodes"].append(node("test.LineCapture", {}, name="sink"))
            c["connections"] += [{"fromIndex": 1, "toIndex": 6, "type": "Failure"},
                                 {"fromIndex": 2, "toIndex": 6, "type": "False"}]
        store.chains["c1"] = c
        store.root = "c1"
        msgs = [tele({"windSpeed": 1}, "d1"), tele({"windSpeed": 2}, "d3"), tele({"temperature": 3}, "d2"),
                tele("not an object", "d1"), tele({"windSpeed": 5}, "d2", ts="1720000000000"),
                TbMsg(POST_ATTRIBUTES, ("DEVICE", "d1"), {"a": 1}, {"deviceName": "x"}, "t1"),
                tele({"windSpeed": 7, "cs_geoZone": "mine"}, "d1")]
        engine = RuleEngine(store, fuse=fuse)
        counters = run(engine, msgs)
        return counters, got, msgs
    finally:
        del NODE_TYPES[Capture.TYPE]


@pytest.mark.parametrize("failure_sink", [False, True])
def test_line_run_message_by_message_gives_the_node_by_node_results(failure_sink):
    """Fused and node by node: the same records reach the end of the line (data, metadata, order),
    the same messages stop where they stop with the same error, and every node's counters agree."""
    fused, fused_got, fused_msgs = _tutorial_line(True, failure_sink)
    plain, plain_got, plain_msgs = _tutorial_line(False, failure_sink)
    assert [(m.data_json(), m.metadata) for m in fused_got] == [(m.data_json(), m.metadata) for m in plain_got]
    assert [(m.data, m.metadata) for m in fused_msgs] == [(m.data, m.metadata) for m in plain_msgs]
    assert fused == plain
    line = {n["node"]: n for n in fused["nodes"]}
    assert line["TbGetAttributesNode"]["in"] == 6 and line["TbGetAttributesNode"]["out"] == {"Success": 5, "Failure": 1}
    assert line["TbCheckMessageNode"]["out"] == {"True": 3, "False": 1, "Failure": 1}
    assert line["TbRenameKeysNode"]["in"] == 3 and line["TbRenameKeysNode"]["out"] == {"Success": 3}
    records = [m.data_json() for m in fused_got if m.data.get("geoZone") != "mine"]
    if failure_sink:  # the sink got the stopped messages too, routed from their own node
        assert line["sink"]["in"] == 2
    assert '{"windSpeed":1,"ts":"1719999999999","geoZone":"Zone A"}' in records
    assert '{"windSpeed":5,"ts":"1720000000000","geoZone":"Zone B"}' in records
    assert fused["failed"] == 2  # the missing zone and the non-object data


def test_engine_fuses_only_straight_lines_of_fusable_nodes():
    from tbspark.platform.rules.engine import Chain, _fuse

    store = CachedAttrStore()
    c = forwarding_chain({"copyFrom": "METADATA", "keys": ["cs_geoZone"]}, 2,
                         {"renameIn": "DATA", "renameKeysMapping": {"cs_geoZone": "geoZone"}},
                         node("telemetry.TbMsgTimeseriesNode", {}))
    engine = RuleEngine(store)
    nodes, problems = engine._instantiate(c)
    assert problems == []
    routes = {}
    for conn in c["connections"]:
        routes.setdefault((conn["fromIndex"], conn["type"]), []).append(conn["toIndex"])
    line = _fuse(Chain("c", nodes, routes, 0))
    # the switch continues into the attributes node, and so on up to rename; the save node is not fusable
    assert {head: [(i, rel) for i, _s, rel in run] for head, run in line.items()} == {
        0: [(0, "Post telemetry"), (1, "Success"), (2, "True"), (3, "Success"), (4, None)]}
    # a second connection into the check node breaks the line there: two lines, each still exact
    routes[(0, "Other")] = [2]
    line = _fuse(Chain("c", nodes, routes, 0))
    assert {head: [i for i, _s, _r in run] for head, run in line.items()} == {0: [0, 1], 2: [2, 3, 4]}
