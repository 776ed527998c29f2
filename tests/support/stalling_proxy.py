"""An HTTP proxy in front of the test S3 server that can stall one kind of request: a network that
hangs at the worst moment, so a test can kill a client there, deterministically.

Written here because it is a few lines over `http.server`, and what it must do (hold one matching
request until told, forward everything else byte for byte) is not what general proxies offer.
"""

from __future__ import annotations

import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te", "trailer"}


class StallingProxy:
    """Forwards to `upstream`; a request matching `stall(method, path)` waits until `release()`."""

    def __init__(self, upstream: str):
        self.upstream = urlsplit(upstream)
        self.pattern: re.Pattern[str] | None = None
        self.method = "PUT"
        self.stalled = threading.Event()  # set when a matching request arrived
        self._release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                if proxy.pattern is not None and self.command == proxy.method and proxy.pattern.search(self.path):
                    proxy.stalled.set()
                    proxy._release.wait()
                    self.send_error(503, "released by the test")
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status, answer.reason)
                head = self.command == "HEAD"  # its Content-Length is the object's size: passed on as is
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_BY_HOP and (head or key.lower() != "content-length"):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stall(self, pattern: str, method: str = "PUT") -> None:
        """From now on, hold every `method` request whose path matches `pattern`."""
        self.method, self.pattern = method, re.compile(pattern)

    def release(self) -> None:
        """Answer the held requests with 503 and stop stalling."""
        self.pattern = None
        self._release.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
