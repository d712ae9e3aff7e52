"""`tbspark stack up --kafka-brokers N`: what is refused before anything starts. The cluster itself
(`stack up --kafka-brokers 3 --spark-workers 2 --json`: record, loopback, replication, stop by PID) is
checked by tests/drills/test_cluster_drills.py on the stack its drills share."""

from __future__ import annotations

import pytest

from tbspark.stack.services import stack_up

pytestmark = [pytest.mark.cluster]


def test_two_brokers_are_refused_before_anything_starts(tmp_path):
    from tbspark.errors import UsageError

    with pytest.raises(UsageError, match="--kafka-brokers 2") as err:
        stack_up(tmp_path, kafka_brokers=2, platform=False)
    assert "3 or more" in err.value.hint
    assert not (tmp_path / "kafka").exists()
