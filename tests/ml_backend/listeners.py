"""Recording HTTP servers for attack tests: they count every TCP connection made to
them and record every request, so a test can assert that nothing reached them."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: False: no Content-Length, the body ends when the connection closes.
    length: bool = True
    #: Seconds between single bytes of the body (a server that trickles).
    trickle: float = 0.0


@dataclass
class Seen:
    connections: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, routes: Mapping[str, Reply], default: Reply | None) -> None:
        self.routes, self.default, self.seen = routes, default, Seen()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address) -> None:
        self.seen.connections += 1  # counted before a byte of HTTP is read
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def do_GET(self) -> None:
        self.server.seen.requests.append((self.path, dict(self.headers)))
        path = self.path.split("?", 1)[0]
        reply = self.server.routes.get(path, self.server.default) or Reply(404, body=b"none")
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.length:
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        try:
            if reply.trickle:
                for i in range(len(reply.body)):
                    self.wfile.write(reply.body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(reply.trickle)
            else:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@contextmanager
def recording_server(routes: Mapping[str, Reply] | None = None,
                     default: Reply | None = None) -> Iterator[tuple[str, Seen]]:
    """``(origin, seen)`` of a server answering ``routes`` (path -> Reply)."""
    server = _Server(routes or {}, default)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", server.seen
    finally:
        server.shutdown()
        server.server_close()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its pixel data is not real)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
