"""The platform's connection limits: defaults, environment overrides, and one clear error for a bad value."""

from __future__ import annotations

import pytest

from tbspark.errors import StackError
from tbspark.platform.limits import Limits, default_max_half_open
from tbspark.settings import platform_limits


def test_environment_overrides_the_defaults():
    env = {"TBSPARK_MQTT_CONNECT_TIMEOUT_S": "2.5", "TBSPARK_MQTT_MAX_HALF_OPEN": "20",
           "TBSPARK_HTTP_HEADER_TIMEOUT_S": "", "TBSPARK_HTTP_BODY_TIMEOUT_S": "7"}
    limits = Limits.from_overrides(platform_limits(env))
    assert limits == Limits(mqtt_connect_timeout_s=2.5, mqtt_max_half_open=20, http_header_timeout_s=20.0,
                            http_body_timeout_s=7.0)
    assert limits.half_open() == 20
    assert Limits().half_open() == default_max_half_open()
    assert 64 <= default_max_half_open() <= 1024


@pytest.mark.parametrize("var,value", [("TBSPARK_MQTT_CONNECT_TIMEOUT_S", "0"), ("TBSPARK_MQTT_MAX_HALF_OPEN", "2.5"),
                                       ("TBSPARK_HTTP_BODY_TIMEOUT_S", "soon")])
def test_a_bad_value_is_one_error_naming_it(var, value):
    with pytest.raises(StackError) as err:
        Limits.from_overrides(platform_limits({var: value}))
    assert str(err.value) == (f"platform limit {var.removeprefix('TBSPARK_').lower()}={value!r} is not a positive "
                              "number — set it to a number > 0 or unset it")
