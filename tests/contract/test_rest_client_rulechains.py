"""tb-rest-client 4.4 against the platform: rule-chain storage, root chain, profile default chain."""

from __future__ import annotations

import pytest
from tb_rest_client.models import NodeConnectionInfo, RuleChain, RuleChainMetaData, RuleNode

SWITCH = "org.thingsboard.rule.engine.filter.TbMsgTypeSwitchNode"
SAVE_TS = "org.thingsboard.rule.engine.telemetry.TbMsgTimeseriesNode"


def _metadata(chain_id, node_type_2: str = SAVE_TS) -> RuleChainMetaData:
    return RuleChainMetaData(
        rule_chain_id=chain_id, first_node_index=0,
        nodes=[RuleNode(type=SWITCH, name="switch", configuration_version=0, configuration={"version": 0},
                        additional_info={"layoutX": 300, "layoutY": 150}),
               RuleNode(type=node_type_2, name="save ts", configuration_version=1,
                        configuration={"defaultTTL": 0, "useServerTs": False,
                                       "processingSettings": {"type": "ON_EVERY_MESSAGE"}})],
        connections=[NodeConnectionInfo(from_index=0, to_index=1, type="Post telemetry")],
        rule_chain_connections=[])


def test_create_save_and_load_metadata(client, unique):
    chain = client.save_rule_chain_v1(RuleChain(name=f"chain-{unique}", type="CORE"))
    assert chain.id.entity_type == "RULE_CHAIN" and chain.root is False
    saved = client.save_rule_chain_meta_data(_metadata(chain.id))
    assert [n.type for n in saved.nodes] == [SWITCH, SAVE_TS]
    assert all(n.id is not None and n.id.entity_type == "RULE_NODE" for n in saved.nodes)
    loaded = client.get_rule_chain_meta_data(chain.id)
    assert [n.id.id for n in loaded.nodes] == [n.id.id for n in saved.nodes]
    assert [(c.from_index, c.to_index, c.type) for c in loaded.connections] == [(0, 1, "Post telemetry")]
    assert loaded.nodes[1].configuration["processingSettings"] == {"type": "ON_EVERY_MESSAGE"}
    assert client.get_rule_chain_by_id(chain.id).first_rule_node_id.id == saved.nodes[0].id.id
    names = [c.name for c in client.get_rule_chains(page_size=1000, page=0).data]
    assert f"chain-{unique}" in names


def test_profile_default_rule_chain(client, unique):
    from tb_rest_client.models import Device

    chain = client.save_rule_chain_v1(RuleChain(name=f"profile-chain-{unique}", type="CORE"))
    client.save_rule_chain_meta_data(_metadata(chain.id))
    dev = client.save_device(Device(name=f"chain-dev-{unique}", type=f"chained-{unique}"))
    profile = client.get_device_profile_by_id(dev.device_profile_id)
    profile.default_rule_chain_id = chain.id
    client.save_device_profile(profile)
    assert client.get_device_profile_by_id(dev.device_profile_id).default_rule_chain_id.id == chain.id.id


def test_set_root_and_back(client, unique):
    chains = client.get_rule_chains(page_size=1000, page=0).data
    original = next(c for c in chains if c.root)
    chain = client.save_rule_chain_v1(RuleChain(name=f"root-{unique}", type="CORE"))
    client.save_rule_chain_meta_data(_metadata(chain.id))
    try:
        assert client.set_root_rule_chain(chain.id).root is True
        roots = [c.id.id for c in client.get_rule_chains(page_size=1000, page=0).data if c.root]
        assert roots == [chain.id.id]
    finally:
        client.set_root_rule_chain(original.id)
    assert client.get_rule_chain_by_id(original.id).root is True


def test_unknown_node_type_is_saved_as_thingsboard_saves_it(client, unique):
    """ThingsBoard logs a node type it cannot find and saves the chain; its messages fail when they
    reach that node (the embedded platform: the Failure route, see tests/unit/test_rules_limits.py)."""
    chain = client.save_rule_chain_v1(RuleChain(name=f"unknown-{unique}", type="CORE"))
    saved = client.save_rule_chain_meta_data(_metadata(chain.id, "org.example.NoSuchNode"))
    assert [n.type for n in saved.nodes] == [SWITCH, "org.example.NoSuchNode"]
    assert [n.type for n in client.get_rule_chain_meta_data(chain.id).nodes] == [SWITCH, "org.example.NoSuchNode"]


@pytest.mark.embedded_only
def test_root_chain_exists_on_first_start(client):
    root = next(c for c in client.get_rule_chains(page_size=1000, page=0).data if c.root)
    meta = client.get_rule_chain_meta_data(root.id)
    kinds = {n.type.rsplit(".", 1)[-1]: n for n in meta.nodes}
    assert {"TbMsgTypeSwitchNode", "TbMsgTimeseriesNode", "TbMsgAttributesNode"} <= set(kinds)
    assert kinds["TbMsgAttributesNode"].configuration["scope"] == "CLIENT_SCOPE"
