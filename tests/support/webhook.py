"""A real HTTP endpoint on loopback that records what is posted to it (notification tests)."""

from __future__ import annotations

import json
import threading
from typing import Any


class Webhook:
    """A real HTTP endpoint on loopback that records the JSON bodies posted to it."""

    def __init__(self, status: int = 200):
        from http.server import BaseHTTPRequestHandler, HTTPServer

        received: list[dict[str, Any]] = []
        self.received, self.status = received, status
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
