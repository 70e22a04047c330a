"""Log lines from executor processes to the driver's stdout as they are written (Horovod rank 0's epochs).

Why not stdout: horovod.spark.run forwards a rank's stdout to the driver through its task
service, and the driver side reads that socket with `shutil.copyfileobj` over a codecs
StreamReader, i.e. `rfile.read(65536)` on a buffered socket file: it returns only when 64 KiB
have arrived or the rank exits (horovod/runner/common/util/network.py, 0.28.1).  Epoch lines are
~100 bytes, so a training's lines reached the driver's log in one burst at the end.

The driver opens a small TCP listener on its own address (the one executors already reach:
spark.driver.host), and the rank connects once and sends lines; each line is printed and
flushed on arrival.  Lines carry a random token so nothing else can write into the log.  When
the relay cannot be reached the sender falls back to print (the old, late path).
"""
from __future__ import annotations

import secrets
import socket
import socketserver
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class RelayAddress:
    host: str
    port: int
    token: str


class LineRelay:
    """Driver side: prints every line a sender delivers, at once, until closed.  A context manager."""

    def __init__(self, host: str = "127.0.0.1", write: Optional[Callable[[str], None]] = None):
        self.token = secrets.token_hex(16)
        self.write = write or (lambda line: (sys.stdout.write(line + "\n"), sys.stdout.flush()))
        relay = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                first = self.rfile.readline().decode("utf-8", "replace").strip()
                if not secrets.compare_digest(first, relay.token):
                    return
                for raw in self.rfile:
                    relay.write(raw.decode("utf-8", "replace").rstrip("\n"))

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, 0), Handler)
        self.address = RelayAddress(host, self.server.server_address[1], self.token)
        self._thread = threading.Thread(target=self.server.serve_forever, name="sparkcnn-line-relay", daemon=True)

    def __enter__(self) -> "LineRelay":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class LineSender:
    """Executor side: `send(line)` to the driver's relay, or print when there is none or it is gone."""

    def __init__(self, address: Optional[RelayAddress], timeout: float = 5.0):
        self._file = None
        if address is None:
            return
        try:
            sock = socket.create_connection((address.host, address.port), timeout=timeout)
            self._file = sock.makefile("wb", buffering=0)
            self._file.write((address.token + "\n").encode())
        except OSError:
            self._file = None

    def send(self, line: str) -> None:
        if self._file is not None:
            try:
                self._file.write((line.rstrip("\n") + "\n").encode("utf-8"))
                return
            except OSError:
                self._file = None
        print(line, flush=True)
