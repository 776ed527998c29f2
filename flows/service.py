"""Running unattended: the deployments of prefect.yaml, filled in from params.yaml, and the landing watcher.

`textclf service` serves the deployments and watches the landing folder from
one process (one machine); without a configured Prefect server it starts one
on loopback. `textclf deploy` hands the same deployments to `prefect deploy`
for a work pool, and `textclf watch` is then the watcher alone.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flows.pipeline import PIPELINE_FLOW
from tasks.apps.landing import STILL_BEING_WRITTEN, StillBeingWritten
from tasks.apps.watcher import LandingWatcher
from tasks.lib.config import Params
from tasks.lib.errors import ConfigError, PipelineError
from tasks.lib.notify import notify
from tasks.lib.redact import redact
from tasks.lib.team_workspace import team_remote, workspace_identity

PREFECT_FILE = "prefect.yaml"
DEFAULT_WORK_POOL = "textclf"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GitSource:
    """Where workers on other hosts clone the repository from (`textclf deploy --clone`)."""

    repository: str
    ref: str


def template_environment(
    params: Params, work_pool: str = DEFAULT_WORK_POOL, clone: GitSource | None = None
) -> dict[str, str]:
    """The values prefect.yaml's {{ $TEXTCLF_* }} placeholders take for this workspace.

    With `clone`, a flow run's workspace is its own clone (the working directory the pull steps set).
    """
    git = {"TEXTCLF_GIT_REPOSITORY": clone.repository, "TEXTCLF_GIT_REF": clone.ref} if clone else {}
    return {
        **git,
        "TEXTCLF_WORKSPACE": "." if clone else str(params.root),
        "TEXTCLF_WORKSPACE_ID": workspace_identity(params.root),
        "TEXTCLF_CRON": params.retrain.cron,
        "TEXTCLF_MONITOR_CRON": params.monitor.cron,
        "TEXTCLF_TIMEZONE": params.retrain.timezone,
        "TEXTCLF_DEBOUNCE": f"PT{params.retrain.debounce_seconds}S",
        "TEXTCLF_WORK_POOL": work_pool,
    }


_PLACEHOLDER = re.compile(r"\{\{\s*\$(\w+)\s*\}\}")


def fill_placeholders(value: Any, values: dict[str, str]) -> Any:
    """prefect.yaml's `{{ $NAME }}` placeholders replaced by `values`, as `prefect deploy` fills them from
    the environment. Written here because Prefect's own templating helper is not public API; the file
    uses no other kind of placeholder, and an unknown name is an error rather than a literal left in."""
    if isinstance(value, dict):
        return {key: fill_placeholders(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [fill_placeholders(item, values) for item in value]
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise ConfigError(f"{PREFECT_FILE}: unknown placeholder {match.group(0)} (known: {sorted(values)})")
        return values[match.group(1)]

    return _PLACEHOLDER.sub(lookup, value)


def deployment_specs(params: Params) -> list[dict[str, Any]]:
    """prefect.yaml's deployments with this workspace's values filled in (as `prefect deploy` fills them)."""
    path = params.root / PREFECT_FILE
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (the deployments are defined there)") from None
    specs: list[dict[str, Any]] = fill_placeholders(config["deployments"], template_environment(params))
    return specs


def runner_deployments(params: Params) -> list[Any]:
    """The deployments, built for `prefect.serve` (the work pool is the serving process itself)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron

    deployments = []
    for spec in deployment_specs(params):
        try:
            schedules = [Cron(s["cron"], timezone=s.get("timezone")) for s in spec.get("schedules") or []]
        except ValueError as exc:
            raise ConfigError(f"params.yaml retrain.cron / monitor.cron / retrain.timezone: {exc}") from None
        limit = spec.get("concurrency_limit")
        flow: Any = load_flow_from_entrypoint(str(params.root / spec["entrypoint"]))
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                parameters=spec.get("parameters"),
                tags=spec.get("tags"),
                schedules=schedules,
                triggers=[DeploymentEventTrigger(**trigger) for trigger in spec.get("triggers") or []],
                concurrency_limit=ConcurrencyLimitConfig(**limit) if limit else None,
            )
        )
    return deployments


def configured_api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def local_server(port: int, home: Path | None = None, timeout: float = 180) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1:`port` for the duration of the block; yields its API URL.

    Args:
        home: PREFECT_HOME for the server (its SQLite database); None: Prefect's default.
    Raises:
        PipelineError: the server exited or was not healthy within `timeout` seconds.
    """
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        env["PREFECT_HOME"] = str(home)
    prefect = Path(sys.executable).parent / "prefect"
    process = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if process.poll() is not None:
                raise PipelineError(
                    f"`prefect server start --port {port}` exited {process.returncode} (is the port in use?)"
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
        raise StillBeingWritten(f"{path.name} changed while it was read: read again once it settles")
    if code in (0, 1) and not os.path.lexists(path):
        return  # accepted, or rejected: moved away, logged and notified by the flow
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
    print(f"watching {params.path('landing')} for new data (README: Run it as a service)", flush=True)
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
            print(f"started a Prefect server: UI http://127.0.0.1:{port}, API {url}", flush=True)
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


def failure_automation_name(params: Params) -> str:
    return f"textclf: failed retraining runs ({workspace_identity(params.root)})"


def ensure_failure_automation(params: Params) -> str | None:
    """A server-side automation: a crashed or timed-out pipeline run sends `retrain.notify_block`.

    A failed run notifies from its own process (the flow's hook); a run killed outright (the
    out-of-memory killer) cannot, but the runner or worker reports it crashed, and the server
    then sends this. The trigger matches the flow's name: one Prefect server (or workspace) per
    deployed copy, as for the deployments. Replaces an earlier one of the same name. Returns the
    automation's name, or None without a notification block.
    """
    block = params.retrain.notify_block
    if not block:
        return None
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.exceptions import ObjectNotFound

    kind, _, name = block.partition("/")
    with get_client(sync_client=True) as client:
        try:
            block_id = client.read_block_document_by_name(name=name, block_type_slug=kind).id
        except ObjectNotFound:
            raise ConfigError(
                f"retrain.notify_block '{block}': no such block on the Prefect server "
                "(create it with `prefect block create` or in the UI)"
            ) from None
    title = failure_automation_name(params)
    with contextlib.suppress(ValueError):  # none yet ("Automation ... not found")
        existing: Any = Automation.read(name=title)  # the sync variant (Prefect's stubs type both)
        existing.delete()
    Automation(
        name=title,
        description="Created by `textclf deploy` (README: Running unattended, Notifications)",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": PIPELINE_FLOW},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="retraining run {{ flow_run.name }}: {{ flow_run.state.name }}",
                body="Retraining run {{ flow_run.name }} ended {{ flow_run.state.name }}: {{ flow_run.state.message }}",
            )
        ],
    ).create()
    return title


def _prefect_file_for(params: Params, clone: GitSource | None, folder: Path) -> Path:
    """prefect.yaml itself, or (with `clone`) a copy in `folder` whose pull steps are `definitions.pull_from_git`."""
    path = params.root / PREFECT_FILE
    if clone is None:
        return path
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        config["pull"] = config["definitions"]["pull_from_git"]
    except (KeyError, TypeError):
        raise ConfigError(f"{path}: definitions.pull_from_git is missing (the pull steps of cloning workers)") from None
    copy = folder / PREFECT_FILE
    copy.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return copy


def deploy(params: Params, work_pool: str, clone: GitSource | None = None) -> None:
    """`prefect deploy --all` with this workspace's values: the work-pool route.

    With `clone`, workers on other hosts run each flow in a fresh clone of `clone.repository` at `clone.ref`;
    they share data and models through the DVC remote, which must be configured (`textclf remote`).
    """
    if configured_api_url() is None:
        raise PipelineError("no Prefect server configured: set PREFECT_API_URL to the server the work pool is on")
    if clone is not None and team_remote(params.root) is None:
        raise ConfigError(
            "--clone: workers on other hosts share data and models through a DVC remote, and this workspace has "
            "none; `textclf remote URL` sets one (README: Running as a team)"
        )
    prefect = Path(sys.executable).parent / "prefect"
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [
                str(prefect),
                "--no-prompt",
                "deploy",
                "--all",
                "--prefect-file",
                str(_prefect_file_for(params, clone, Path(folder))),
            ],
            cwd=params.root,
            env={**os.environ, **template_environment(params, work_pool, clone)},
            check=False,
        )
    if done.returncode != 0:
        raise PipelineError(f"prefect deploy exited {done.returncode}")
    created = ensure_failure_automation(params)
    print(
        f"automation '{created}' sends {params.retrain.notify_block} when a run crashes"
        if created
        else "no retrain.notify_block: failed runs are written to the notifications file by the run itself only"
    )


def _stay_in(root: Path) -> None:
    """Served flow runs resolve prefect.yaml's entrypoints against the working directory."""
    os.chdir(root)
