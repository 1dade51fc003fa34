"""Real peers that keep what phiguard sends them: an SMTP server and a webhook receiver.

Both run in this process on loopback ports, so a ``phiguard`` subprocess (the server,
``monitor scan``, ``monitor watch``) delivers to them over real sockets, and a test
can read every byte that left.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller

from .components import free_port


@dataclass
class Inbox:
    """Messages an SMTP peer accepted, raw as they came over the wire."""

    messages: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(bytes(envelope.original_content or envelope.content))
        return "250 OK"


@contextmanager
def smtp_peer() -> Iterator[tuple[Inbox, int]]:
    """A plain SMTP server on loopback (no STARTTLS: the content is what is tested)."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@dataclass
class Hooks:
    """Requests a webhook receiver took: the raw target, headers and body of each."""

    targets: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def everything(self) -> bytes:
        parts = [t.encode() for t in self.targets]
        parts += [f"{k}: {v}".encode() for h in self.headers for k, v in h.items()]
        return b"\n".join([*parts, *self.bodies])


@contextmanager
def webhook_peer() -> Iterator[tuple[Hooks, str]]:
    """An HTTP receiver on loopback answering 204 to every POST; yields (hooks, URL)."""
    got = Hooks()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            got.targets.append(self.path)
            got.headers.append(dict(self.headers.items()))
            got.bodies.append(self.rfile.read(length))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield got, f"http://127.0.0.1:{server.server_address[1]}/hooks/phiguard"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
