"""A real Label Studio on loopback, for the labelling tests and benchmarks/labelling_loop.py
(docs/guides/labelling.md).

It runs from `.venv-label-studio` (`make label-studio`, which `make test` runs: its pins conflict
with the project's), on SQLite in a temporary data folder, with a user made from environment
variables. Its API token is the personal access token a person would copy from their account
page: created here through the same session login and `POST /api/token/` the page uses.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tasks.lib.labelling.label_studio import Connection

PROGRAM = Path(__file__).resolve().parents[1] / ".venv-label-studio" / "bin" / "label-studio"
STARTUP_SECONDS = 600
USER, PASSWORD = "annotator@example.com", "a-long-test-password"


class LabelStudioServer:
    """`label-studio start` in its own session, and the token of its one user."""

    def __init__(self, folder: Path):
        if not PROGRAM.exists():
            raise RuntimeError(f"no Label Studio at {PROGRAM}: `make label-studio` (make test runs it) installs it")
        self.folder, self.port = folder, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "label-studio.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Connection:
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.folder),
            "LABEL_STUDIO_USERNAME": USER,
            "LABEL_STUDIO_PASSWORD": PASSWORD,
            # Nothing leaves the machine: no error reports to Sentry, no telemetry, no look-up of
            # the newest version on PyPI at start.
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        }
        command = [str(PROGRAM), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=self.folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        # The first start creates its database (Django's migrations): about 35 s on a quiet 2-core
        # machine, minutes beside a busy test suite.
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._healthy():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"Label Studio did not answer /health in {STARTUP_SECONDS} s:\n{self.log.read_text()[-4000:]}"
                )
            time.sleep(0.5)
        return Connection(self.url, self._personal_access_token())

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"label-studio exited {self.process.returncode}:\n{self.log.read_text()[-4000:]}")
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def _personal_access_token(self) -> str:
        """Log in as the user (Django's form, with its CSRF token) and create their access token."""
        with httpx.Client(base_url=self.url, timeout=30) as browser:
            browser.get("/user/login/")
            form = {"email": USER, "password": PASSWORD, "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
            logged_in = browser.post("/user/login/", data=form, headers={"Referer": f"{self.url}/user/login/"})
            assert logged_in.status_code == 302, logged_in.text[:500]
            made = browser.post("/api/token/", headers={"X-CSRFToken": browser.cookies["csrftoken"]})
            assert made.status_code == 201, made.text[:500]
            return str(made.json()["token"])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
