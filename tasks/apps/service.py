"""Running unattended: `textclf service` serves the deployments and watches the landing folder from
one process (one machine); without a configured Prefect server it starts one on loopback.
`textclf watch` is the watcher alone (the work-pool route, after `textclf deploy`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from flows.deployments import configured_api_url, runner_deployments
from tasks.lib.config import Params
from tasks.lib.data.landing import NOT_STORED, STILL_BEING_WRITTEN, StillBeingWritten
from tasks.lib.data.watcher import LandingWatcher
from tasks.lib.errors import PipelineError
from tasks.lib.reporting.notify import notify
from tasks.lib.reporting.redact import redact

log = logging.getLogger(__name__)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def local_server(
    port: int,
    home: Path | None = None,
    timeout: float = 180,
    command: list[str] | None = None,
    environment: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1:`port` for the duration of the block; yields its API URL.

    Args:
        home: PREFECT_HOME for the server (its SQLite database); None: Prefect's default.
        command: the server's command line instead (e.g. the team guide's, on that port).
        environment: more variables for the server (PREFECT_API_DATABASE_CONNECTION_URL: PostgreSQL).
        log: the server's output into this file instead of this process's.
    Raises:
        PipelineError: the server exited or was not healthy within `timeout` seconds.
    """
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **(environment or {})}
    env.pop("PREFECT_API_URL", None)
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        env["PREFECT_HOME"] = str(home)
    prefect = Path(sys.executable).parent / "prefect"
    command = command or [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with contextlib.ExitStack() as files:
        out = files.enter_context(log.open("w")) if log is not None else None
        joined = subprocess.STDOUT if out is not None else None
        process = subprocess.Popen(command, env=env, start_new_session=True, stdout=out, stderr=joined)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if process.poll() is not None:
                said = f"; its output: {log}" if log is not None else ""
                raise PipelineError(
                    f"`prefect server start --port {port}` exited {process.returncode} (is the port in use?){said}"
                )
            if time.monotonic() > deadline:
                raise PipelineError(f"the Prefect server on port {port} was not healthy after {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# `textclf ingest-new`, run as a child process per landed file (tests point it elsewhere).
INGEST_COMMAND = [sys.executable, "-m", "tasks"]


class IngestionFailed(PipelineError, RuntimeError):
    """The child process that ingests a landed file died or failed; the file stays in landing."""


def ingest_landed(params: Params, path: Path) -> None:
    """The watcher's callback: `textclf ingest-new` on a landed file (moved, never copied), in a child process.

    A file that exhausts memory gets that process killed, not the service: the file stays in
    landing, a notification says so, and it is tried again only once it changes.
    """
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    url = configured_api_url()  # this thread's server (a temporary setting, not the environment)
    if url:
        env["PREFECT_API_URL"] = url
    command = [*INGEST_COMMAND, "--root", str(params.root), "ingest-new", str(path)]
    timeout = params.retrain.watch.ingest_timeout_seconds
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=timeout)
        code, output, errors = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        code, output, errors = None, str(exc.stdout or ""), str(exc.stderr or "")
    for line in (output + errors).splitlines():
        if line.strip():
            log.info("ingest-new %s: %s", path.name, redact(line))
    if code == STILL_BEING_WRITTEN:
        raise StillBeingWritten(f"{path.name} was still being written: read again once it settles, closed")
    if code in (0, 1) and not os.path.lexists(path):
        return  # accepted, or rejected: moved away, logged and notified by the flow
    if code == NOT_STORED:  # a full disk: the flow has notified, with the folder to make room in
        raise IngestionFailed(f"{path.name}: could not be stored; it stays in landing until it changes")
    if code is None:
        how = f"ran past retrain.watch.ingest_timeout_seconds ({timeout:.0f} s) and was stopped"
    elif code < 0:
        how = f"was killed by signal {-code} (out of memory?)"
    else:
        how = f"failed (exit {code})"
    message = f"{path.name}: the ingestion process {how}; the file stays in landing until it changes"
    notify(params, "data.error", message, errors[-4000:])
    raise IngestionFailed(message)


def landing_watcher(params: Params) -> LandingWatcher:
    watch = params.retrain.watch
    return LandingWatcher(
        params.path("landing"),
        lambda path: ingest_landed(params, path),
        watch.poll_seconds,
        watch.settle_seconds,
        marker=watch.completion == "marker",
    )


@contextlib.contextmanager
def _watching(params: Params) -> Iterator[None]:
    """The landing watcher in a background thread (with this thread's Prefect settings)."""
    stop = threading.Event()
    params.path("landing").mkdir(parents=True, exist_ok=True)
    log.info("watching %s for new data (docs/guides/unattended.md#run-it-as-a-service)", params.path("landing"))
    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(landing_watcher(params).run, stop),
        name="landing-watcher",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


def _stop_on_sigterm() -> None:
    """SIGTERM (systemd, docker stop, a test) shuts down like Ctrl-C: the runner and watcher stop cleanly."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _run_service(params: Params) -> None:
    from prefect import serve

    deployments = runner_deployments(params)
    with _watching(params):
        serve(*deployments)


def service(params: Params, port: int) -> None:
    """Serve the deployments and watch the landing folder until interrupted.

    Uses the configured Prefect server (PREFECT_API_URL); without one, starts
    `prefect server start` on 127.0.0.1:`port` and stops it on exit.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _stay_in(params.root)
    _stop_on_sigterm()
    url = configured_api_url()
    with contextlib.ExitStack() as stack:
        if url is None:
            url = stack.enter_context(local_server(port))
            log.info("started a Prefect server: UI http://127.0.0.1:%d, API %s", port, url)
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        with contextlib.suppress(KeyboardInterrupt):
            _run_service(params)


def watch(params: Params) -> None:
    """The landing watcher alone (the work-pool route: workers run the pipeline)."""
    if configured_api_url() is None:
        raise PipelineError("no Prefect server configured: set PREFECT_API_URL (the server the deployments are on)")
    _stay_in(params.root)
    _stop_on_sigterm()
    with contextlib.suppress(KeyboardInterrupt):
        landing_watcher(params).run(threading.Event())


def _stay_in(root: Path) -> None:
    """Served flow runs resolve prefect.yaml's entrypoints against the working directory."""
    os.chdir(root)
