"""Liveness and readiness for an orchestrator: `/livez` and `/readyz`, on the service's port and, with
`serve.probe_port`, on a listener of their own (docs/guides/serving.md, "Probes").

On the service's port a probe waits its turn on the event loop with every other request: under a
flood of requests it answered /health in up to 4 s (benchmarks/serving.py --overload), and a
Kubernetes liveness probe with a 1 s timeout would restart the server exactly when it is busiest.
The probe listener is a plain `http.server` in a thread of its own, on its own socket: no
request of the flood reaches it, and it needs the GIL only for the few microseconds of an answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from tasks.apps.batcher import QueueStatus

ProbeAnswer = tuple[int, dict[str, Any]]


def liveness() -> ProbeAnswer:
    """The process answers: nothing else is asked (a restart would not fix anything else)."""
    return 200, {"status": "alive"}


def readiness(model_status: dict[str, Any], queue: QueueStatus) -> ProbeAnswer:
    """Ready when a verified model is loaded and the queue can admit a request: 200, else 503 and why.

    A degraded model (production could not be loaded; its rollback target serves) is ready: it
    answers. A full queue is not: the orchestrator sends new connections elsewhere until it drains.
    """
    if model_status["status"] == "unavailable":
        reason = f"no model is loaded: {model_status['error']}"
    elif queue.draining:
        reason = "shutting down: draining the requests in flight"
    elif not queue.worker_alive:
        reason = "the batcher's worker thread has stopped"
    elif queue.texts >= queue.capacity:
        reason = f"the queue is full ({queue.texts} of {queue.capacity} texts)"
    else:
        return 200, {"status": "ready", "version": model_status["version"]}
    return 503, {"status": "not ready", "reason": reason}


class ProbeServer:
    """`/livez` and `/readyz` on their own port, answered by a thread that no other request reaches."""

    def __init__(self, host: str, port: int, ready: Callable[[], ProbeAnswer]):
        answers: dict[str, Callable[[], ProbeAnswer]] = {"/livez": liveness, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # seconds: a client that connects and says nothing does not hold the listener

            def do_GET(self) -> None:  # http.server's name
                answer = answers.get(self.path.split("?", 1)[0])
                code, body = answer() if answer else (404, {"detail": "only /livez and /readyz here"})
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # http.server's names
                pass  # a probe every few seconds is not news

        # Bound now, in the caller: a port that is taken is the service's start-up error, not a thread's.
        self.server = HTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="probes", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
