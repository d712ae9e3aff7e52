"""The RPC call request node's refusals, as ThingsBoard's TbSendRPCRequestNode words them (delivery
itself is tested through the platform: tests/integration/test_rule_chains_run.py, test_rpc.py)."""

from tbspark.platform.rules.msg import TO_DEVICE_RPC, TbMsg
from tests.unit.test_rules import chain, node
from tests.unit.test_rules_scripts import outs, run_chain


def rpc_msg(data, originator=("DEVICE", "d1")):
    return TbMsg(TO_DEVICE_RPC, originator, data, {"requestUUID": "u", "oneway": "false"}, "t1")


def test_rpc_node_sends_to_failure_what_it_cannot_send():
    meta = chain([node("filter.TbMsgTypeSwitchNode", {"version": 0}),
                  node("rpc.TbSendRPCRequestNode", {"timeoutInSeconds": 60}, name="rpc")],
                 [(0, 1, "RPC Request to Device")])
    asset = rpc_msg({"method": "m", "params": {}}, ("ASSET", "a1"))
    no_method, no_params = rpc_msg({"params": {}}), rpc_msg({"method": "m"})
    no_transport = rpc_msg({"method": "m", "params": {}})
    got = outs(run_chain(meta, [asset, no_method, no_params, no_transport]))
    assert got["rpc"] == (4, {"Failure": 4})
    assert asset.metadata["error"] == "RuntimeException: Message originator is not a device entity!"
    assert no_method.metadata["error"] == "RuntimeException: Method is not present in the message!"
    assert no_params.metadata["error"] == "RuntimeException: Params are not present in the message!"
    assert "no MQTT transport" in no_transport.metadata["error"]
