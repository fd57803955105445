"""A TCP proxy in front of a real redis-server that can lose or delay a reply. Armed with a marker
by ``cut_after``, it forwards the next client request holding the marker (Redis runs it), then
drops the connection instead of relaying the reply: what a network cut after the server ran a
command looks like to a client, which cannot tell whether the command ran. Armed by
``cut_before``, it drops the connection instead of forwarding that request (Redis never runs it).
Armed by ``hold_after``, it relays that reply only at ``release``: a command in flight for as long
as a test needs, while the client's other connections go on."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class CutProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._hold_marker: bytes | None = None
        self._drop_marker: bytes | None = None
        self.held = threading.Event()  # a held request went up (Redis ran it)
        self._released = threading.Event()
        self.cuts = 0  # replies dropped, requests dropped
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut_after(self, marker: bytes) -> None:
        """Drop the reply to the next request that holds ``marker`` (once)."""
        with self._lock:
            self._marker = marker

    def cut_before(self, marker: bytes) -> None:
        """Drop the connection instead of forwarding the next request that holds ``marker`` (once)."""
        with self._lock:
            self._drop_marker = marker

    def hold_after(self, marker: bytes) -> None:
        """Hold the reply to the next request that holds ``marker`` (once) until ``release``."""
        with self._lock:
            self._hold_marker = marker

    def release(self) -> None:
        self._released.set()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, server]
            pending = threading.Event()  # a marked request went up: its reply must not come down
            holding = threading.Event()  # a held request went up: its reply waits for release
            threading.Thread(target=self._up, args=(client, server, pending, holding), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, pending, holding), daemon=True).start()

    def _up(
        self, client: socket.socket, server: socket.socket, pending: threading.Event, holding: threading.Event
    ) -> None:
        while data := _recv(client):
            with self._lock:
                if self._drop_marker is not None and self._drop_marker in data:
                    self._drop_marker = None
                    self.cuts += 1
                    break
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    pending.set()
                if self._hold_marker is not None and self._hold_marker in data:
                    self._hold_marker = None
                    holding.set()
            try:
                server.sendall(data)
            except OSError:
                break
        _close(client, server)

    def _down(
        self, server: socket.socket, client: socket.socket, pending: threading.Event, holding: threading.Event
    ) -> None:
        while data := _recv(server):
            if pending.is_set():  # the server ran it and answered: the client never hears
                with self._lock:
                    self.cuts += 1
                break
            if holding.is_set():  # the server ran it and answered: the client hears at release
                self.held.set()
                self._released.wait()
                holding.clear()
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client, server)

    def close(self) -> None:
        self._closed = True
        self._released.set()
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                _close(s)

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()
