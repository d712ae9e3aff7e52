"""Closing an AttributePublisher while sessions are still waiting on a silent server ends them
(their futures are done) instead of leaving tasks to be destroyed pending with the loop."""

from __future__ import annotations

import gc
import logging
import socket

from tbspark.thingsboard.mqtt import AttributePublisher


def test_close_ends_sessions_still_waiting(caplog):
    with socket.socket() as srv:  # accepts connections (backlog) but never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            pub = AttributePublisher("127.0.0.1", srv.getsockname()[1], parallel=2, timeout_s=30)
            futures = [pub.submit(f"token{i}", {"a": i}) for i in range(5)]
            pub.close()
            del pub
            gc.collect()
    assert all(f.done() for f in futures)
    assert "Task was destroyed but it is pending" not in caplog.text
