"""A counting MQTT endpoint (3.1.1, QoS 0/1, built on tbspark.mqtt.codec): it accepts known
tokens, acknowledges and counts telemetry. It measures the simulator apart from any platform
(bench/simulator.py) and checks engines in unit tests; it is not a ThingsBoard stand-in.

    python -m tbspark.simulate.sink --port 0      # prints "listening <port>", counts on SIGTERM
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from collections import defaultdict
from typing import Any

from tbspark.mqtt import codec


class SinkServer:
    def __init__(self, tokens: set[str] | None = None, keep_payloads: bool = False,
                 drop_after: int | None = None):
        self.tokens = tokens
        self.keep_payloads = keep_payloads
        self.drop_after = drop_after  # close each session after this many publishes (fault drill)
        self.counts: dict[str, int] = defaultdict(int)
        self.payloads: dict[str, list[bytes]] = defaultdict(list)
        self.connections = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _SinkProto(self), host, port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server:
            self._server.close()

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class _SinkProto(asyncio.Protocol):
    def __init__(self, sink: SinkServer):
        self.sink = sink
        self.decoder = codec.StreamDecoder()
        self.token: str | None = None
        self.n = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.sink.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink.connections -= 1

    def data_received(self, data: bytes) -> None:
        out = []
        sink = self.sink
        for ptype, flags, body in self.decoder.feed(data):
            if ptype == codec.PUBLISH:
                pub = codec.decode_publish(flags, body)
                sink.counts[self.token or ""] += 1
                if sink.keep_payloads:
                    sink.payloads[self.token or ""].append(pub.payload)
                if pub.qos:
                    out.append(codec.encode_puback(pub.packet_id))
                self.n += 1
                if sink.drop_after and self.n >= sink.drop_after:
                    self.transport.write(b"".join(out))
                    self.transport.close()
                    return
            elif ptype == codec.CONNECT:
                conn = codec.decode_packet(ptype, flags, body)
                if sink.tokens is not None and conn.username not in sink.tokens:
                    self.transport.write(codec.encode_connack(5))
                    self.transport.close()
                    return
                self.token = conn.username
                out.append(codec.encode_connack(0))
            elif ptype == codec.PINGREQ:
                out.append(codec.encode_pingresp())
            elif ptype == codec.DISCONNECT:
                self.transport.close()
                return
        if out:
            self.transport.write(b"".join(out))


class ThreadedSink:
    """The sink on its own event loop in a daemon thread (for tests)."""

    def __init__(self, **kwargs: Any):
        self.sink = SinkServer(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="mqtt-sink")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.sink.start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> SinkServer:
        self._thread.start()
        self._ready.wait(10)
        return self.sink

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def main() -> None:
    port = int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0

    async def serve() -> None:
        sink = SinkServer()
        bound = await sink.start(port=port)
        print(f"listening {bound}", flush=True)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        print(json.dumps({"received": sink.total}), flush=True)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
