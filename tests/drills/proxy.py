"""A TCP proxy that can take a service "off the network" and bring it back on the same port: while
down, every connection is reset as soon as it arrives and the open ones are cut, as when ThingsBoard's
REST side goes away. (The listener stays bound: a closed port can be taken by another process's
outgoing connection on a busy machine, and then could not be reopened.)"""

from __future__ import annotations

import socket
import struct
import threading


def _reset(s: socket.socket) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    except OSError:
        pass
    s.close()


class Proxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1"):
        self.host, self.upstream = host, upstream_port
        self.accepted = 0   # connections forwarded
        self.refused = 0    # connections reset while down
        self.is_down = False
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.bind((host, 0))
        self._listener.listen(128)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def up(self) -> "Proxy":
        self.is_down = False
        return self

    def down(self) -> None:
        """Reset new connections and the open ones until ``up()``."""
        self.is_down = True
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            _reset(c)

    def close(self) -> None:
        self.down()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self.is_down:
                self.refused += 1
                _reset(client)
                continue
            try:
                server = socket.create_connection((self.host, self.upstream), timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._conns.update((client, server))
                self.accepted += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
