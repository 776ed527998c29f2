"""A failed pipeline run notifies from the Prefect server itself (a run killed outright runs no hook of its own)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_textclf_deploys_an_automation_that_reports_failed_runs(make_params, tmp_path):
    from prefect import flow
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import PIPELINE_FLOW
    from flows.service import ensure_failure_automation, local_server
    from tasks.lib.errors import ConfigError

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the name http.server calls
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    params = make_params({"retrain": {"notify_block": "custom-webhook/ops"}})
    with local_server(free_port(), tmp_path / "prefect-home") as url, temporary_settings({PREFECT_API_URL: url}):
        with pytest.raises(ConfigError, match=r"retrain\.notify_block 'custom-webhook/ops': no such block"):
            ensure_failure_automation(params)
        CustomWebhookNotificationBlock(
            name="ops",
            url=f"http://127.0.0.1:{hook.server_port}/hook",
            json_data={"subject": "{{subject}}", "text": "{{body}}"},
        ).save("ops", overwrite=True)
        name = ensure_failure_automation(params)
        assert name is not None and ensure_failure_automation(params) == name  # replaced, not doubled
        automation = Automation.read(name=name)
        assert automation.trigger.expect == {
            "prefect.flow-run.Failed",
            "prefect.flow-run.Crashed",
            "prefect.flow-run.TimedOut",
        }

        @flow(name=PIPELINE_FLOW)
        def failing() -> None:
            raise RuntimeError("stage 'train' ran past its 3 s")

        with pytest.raises(RuntimeError):
            failing()
        deadline = time.monotonic() + 90
        while not received:
            assert time.monotonic() < deadline, "the server sent no notification"
            time.sleep(0.5)
    hook.shutdown()
    assert "Failed" in received[0]["subject"] and "ran past its 3 s" in received[0]["text"]
