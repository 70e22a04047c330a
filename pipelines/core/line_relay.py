"""Log records from executor processes to the driver's loggers as they are written (Horovod ranks' lines).

Why not stdout: horovod.spark.run forwards a rank's stdout to the driver through its task
service, and the driver side reads that socket with `shutil.copyfileobj` over a codecs
StreamReader, i.e. `rfile.read(65536)` on a buffered socket file: it returns only when 64 KiB
have arrived or the rank exits (horovod/runner/common/util/network.py, 0.28.1).  Epoch lines are
~100 bytes, so a training's lines reached the driver's log in one burst at the end.

The driver opens a small TCP listener on its own address (the one executors already reach:
spark.driver.host), and a rank connects once and sends each record (logger name, level, message)
as one JSON line; the driver logs it on the same logger at once, so whatever the driver's program
does with "sparkcnn" records (the CLI prints them; a notebook may not) it does with the rank's too.
Connections start with a random token so nothing else can write into the log.  When the relay
cannot be reached the sender falls back to print (the old, late path).
"""
from __future__ import annotations

import contextlib
import json
import logging
import secrets
import socket
import socketserver
import threading
from dataclasses import dataclass
from typing import Iterator, Optional

from pipelines.core.log_output import ROOT, routed_to


@dataclass(frozen=True)
class RelayAddress:
    host: str
    port: int
    token: str


def _log_relayed(raw: bytes) -> None:
    """One relayed record, logged on the driver's logger of the same name (only "sparkcnn" ones)."""
    try:
        sent = json.loads(raw.decode("utf-8", "replace"))
        name, level, message = str(sent["name"]), int(sent["level"]), str(sent["message"])
    except (ValueError, KeyError, TypeError):
        return
    if name != ROOT and not name.startswith(ROOT + "."):
        name = "sparkcnn.relay"
    logging.getLogger(name).log(level, message)


class LineRelay:
    """Driver side: logs every record a sender delivers, at once, until closed.  A context manager."""

    def __init__(self, host: str = "127.0.0.1"):
        self.token = secrets.token_hex(16)
        relay = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                first = self.rfile.readline().decode("utf-8", "replace").strip()
                if not secrets.compare_digest(first, relay.token):
                    return
                for raw in self.rfile:
                    _log_relayed(raw)

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


class RelayHandler(logging.Handler):
    """Executor side: each record to the driver's relay; printed when there is none or it is gone."""

    def __init__(self, address: Optional[RelayAddress], timeout: float = 5.0):
        super().__init__()
        self._file = None
        if address is None:
            return
        try:
            sock = socket.create_connection((address.host, address.port), timeout=timeout)
            self._file = sock.makefile("wb", buffering=0)
            self._file.write((address.token + "\n").encode())
        except OSError:
            self._file = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self._file is not None:
            try:
                sent = {"name": record.name, "level": record.levelno, "message": message}
                self._file.write((json.dumps(sent) + "\n").encode("utf-8"))
                return
            except OSError:
                self._file = None
        print(message, flush=True)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        super().close()


@contextlib.contextmanager
def relayed(address: Optional[RelayAddress]) -> Iterator[RelayHandler]:
    """While the block runs, this process's "sparkcnn" INFO records go to the driver through `address`."""
    handler = RelayHandler(address)
    try:
        with routed_to(handler):
            yield handler
    finally:
        handler.close()
