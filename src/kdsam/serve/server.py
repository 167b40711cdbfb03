"""Running the app under uvicorn: the port bound before anything is announced, stalled clients dropped.

`bind` opens the listening socket first, so a bad or busy port is one line and exit 2 instead of a
printed URL followed by uvicorn's exit 3, and the URL printed is the one that answers (port 0 too).
`StallTimeoutProtocol` closes a connection whose client owes the server bytes and sends none: uvicorn
alone times out only the quiet gap after a response, so a socket that never sends a request, or
stops half-way through its headers or body, was held open for ever.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from kdsam.errors import KdsamError

IDLE_TIMEOUT_S = 15.0


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on (host, port) for uvicorn to serve (port 0: any free one); a bad, busy or
    forbidden address is a KdsamError of one line."""
    if not 0 <= port <= 65535:
        raise KdsamError(f"--port {port}: a port is 1 to 65535 (0: any free port)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise KdsamError(f"--host {host}: not an address or name this machine resolves ({err})") from err
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart while old sockets linger
    try:
        sock.bind(address)
        sock.listen(2048)  # as uvicorn's backlog; clients queue while the model loads
    except OSError as err:
        sock.close()
        reasons = {
            errno.EADDRINUSE: "in use by another program; stop it or choose another --port",
            errno.EACCES: "not permitted (ports below 1024 need privileges); choose --port 1024 or above",
            errno.EADDRNOTAVAIL: "not an address of this machine; see --host",
        }
        reason = reasons.get(err.errno or 0, err.strerror or str(err))
        raise KdsamError(f"cannot listen on {host}:{port}: {reason}") from err
    sock.set_inheritable(True)
    return sock


class StallTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol that also drops a connection whose client stalls: request headers not
    complete `timeout_keep_alive` seconds after the connection became idle (a byte at a time does
    not extend it), or a request body with no bytes for that long. While the server itself is busy
    (the handler runs, or reading is paused until the app takes the body so far) the client is not
    timed."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._stall: asyncio.TimerHandle | None = None
        self._idle_since = time.monotonic()
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        self._idle_since = time.monotonic()
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _cancel(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _watch(self) -> None:
        """(Re)arm the timer for what the client owes now."""
        self._cancel()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:  # a request's headers: counted from when the wait began
            delay = self.timeout_keep_alive - (time.monotonic() - self._idle_since)
        elif self.conn.their_state is h11.SEND_BODY:  # a body: counted from its last bytes
            delay = self.timeout_keep_alive
        else:
            return
        self._stall = self.loop.call_later(max(delay, 0.0), self._drop)

    def _drop(self) -> None:
        self._stall = None
        responding = self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete
        if self.flow.read_paused or responding:  # the server's turn, not the client's: look again later
            self._stall = self.loop.call_later(self.timeout_keep_alive, self._drop)
        else:
            self.transport.close()


def uvicorn_server(app: Any, idle_timeout_s: float = IDLE_TIMEOUT_S) -> Any:
    """A uvicorn Server for `app` (run it with `.run(sockets=[bind(host, port)])`), quiet but for warnings."""
    import uvicorn

    if not idle_timeout_s > 0:
        raise KdsamError(f"--idle-timeout {idle_timeout_s}: give a positive number of seconds")
    config = uvicorn.Config(app, http=StallTimeoutProtocol, timeout_keep_alive=idle_timeout_s, log_level="warning")
    return uvicorn.Server(config)
