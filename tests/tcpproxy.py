"""A small TCP proxy for the backup failure tests: it forwards 127.0.0.1 connections to the S3 server, counts
the bytes clients send, records each request's method, path and access key id (from the SigV4
Authorization header; never the secret), and can cut the connection that crosses a byte budget (RST), then
optionally stay down (every new connection is reset at once) until ``up()``.

The S3 server answers ``Connection: close``, so each connection carries one request.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

_REQUEST = re.compile(rb"^(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/1\.[01]\r\n")
_CREDENTIAL = re.compile(rb"Credential=([A-Za-z0-9]+)/")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    access_key: str


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class Proxy:
    def __init__(self, upstream: str) -> None:
        u = urlparse(upstream)
        self.upstream = (u.hostname or "127.0.0.1", u.port or 80)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sent = 0  # bytes clients sent through the proxy
        self.requests: list[Request] = []
        self.cuts = 0
        self._cut_after: int | None = None
        self._down_after_cut = False
        self._down = False
        self._lock = threading.Lock()
        self._closed = False
        self.active = 0  # connections whose server side has not finished answering
        self._answer: tuple[re.Pattern[str], bytes, int | None] | None = None
        self.answered: list[Request] = []
        threading.Thread(target=self._accept, daemon=True).start()

    # ------------------------------------------------------------------ control

    def cut_after(self, nbytes: int, stay_down: bool = False) -> None:
        """Reset the connection during which the total bytes sent pass ``self.sent + nbytes``."""
        with self._lock:
            self._cut_after = self.sent + nbytes
            self._down_after_cut = stay_down

    def answer(self, pattern: str | None, response: bytes = b"", times: int | None = None) -> None:
        """Answer the requests whose ``METHOD PATH`` matches ``pattern`` (a regex) with ``response`` (a whole
        HTTP response) instead of forwarding them: the next ``times`` of them, or all; None: forward all."""
        with self._lock:
            self._answer = None if pattern is None else (re.compile(pattern), response, times)

    def up(self) -> None:
        with self._lock:
            self._down = False

    def settle(self, timeout: float = 3.0) -> None:
        """Give the server time to answer what a killed client had sent in full (a multipart completion,
        say), so that a next client does not race it: wait until every connection is closed, or timeout.
        (A connection cut in the middle of a request body may linger: the server waits for the rest.)"""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._closed = True
        _reset(self.listener)

    # ------------------------------------------------------------------ plumbing

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._down:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self.active += 1
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client), daemon=True).start()

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        head = b""
        parsed = False
        try:
            while True:
                chunk = client.recv(65536)
                if not chunk:
                    server.shutdown(socket.SHUT_WR)
                    return
                if not parsed:
                    head += chunk[:8192]
                    if b"\r\n\r\n" in head or len(head) >= 8192:
                        parsed = True
                        m, c = _REQUEST.match(head), _CREDENTIAL.search(head)
                        if m:
                            key = c.group(1).decode() if c else ""
                            request = Request(m.group(1).decode(), m.group(2).decode(), key)
                            with self._lock:
                                self.requests.append(request)
                                canned = self._canned(request)
                            if canned is not None:  # the server never sees this request
                                client.sendall(canned)
                                server.shutdown(socket.SHUT_RDWR)  # the other thread then closes the client side
                                return
                with self._lock:
                    budget = None if self._cut_after is None else self._cut_after - self.sent
                    if budget is not None and budget < len(chunk):
                        chunk = chunk[: max(budget, 0)]
                        self._cut_after = None
                        self.cuts += 1
                        self._down = self._down_after_cut
                        cut = True
                    else:
                        cut = False
                    self.sent += len(chunk)
                if chunk:
                    server.sendall(chunk)
                if cut:
                    _reset(client)
                    _reset(server)
                    return
        except OSError:
            _reset(client)
            _reset(server)

    def _canned(self, request: Request) -> bytes | None:
        """The canned answer for this request, if any (called under the lock)."""
        if self._answer is None:
            return None
        pattern, response, times = self._answer
        if not pattern.search(f"{request.method} {request.path}"):
            return None
        if times is not None:
            self._answer = None if times <= 1 else (pattern, response, times - 1)
        self.answered.append(request)
        return response

    def _downstream(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                chunk = server.recv(65536)
                if not chunk:
                    client.shutdown(socket.SHUT_WR)
                    return
                client.sendall(chunk)
        except OSError:
            _reset(client)
            _reset(server)
        finally:
            with self._lock:
                self.active -= 1


def s3_error(status: int, code: str, message: str = "test") -> bytes:
    """A whole HTTP response carrying an S3 error (``Proxy.answer``)."""
    body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body.encode()
