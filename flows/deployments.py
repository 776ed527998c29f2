"""The deployments of prefect.yaml, filled in from params.yaml: served by `textclf service`
(tasks/apps/service.py) or handed to `prefect deploy` for a work pool (`textclf deploy`).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flows.pipeline import PIPELINE_FLOW
from tasks.lib.config import Params
from tasks.lib.errors import ConfigError, PipelineError
from tasks.lib.storage.team_workspace import team_remote, workspace_identity

PREFECT_FILE = "prefect.yaml"
DEFAULT_WORK_POOL = "textclf"


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
    return with_params_schedules(specs, params)


SCORE_DEPLOYMENT = "score"
LABEL_SYNC_DEPLOYMENT = "label-sync"


def score_schedules(params: Params) -> list[dict[str, Any]]:
    """params.yaml score.schedules as prefect.yaml schedules: a cron in retrain.timezone, and the run's parameters."""
    return [
        {
            "cron": schedule.cron,
            "timezone": params.retrain.timezone,
            "parameters": {"input": schedule.input, "output": schedule.output, "version": schedule.version},
        }
        for schedule in params.score.schedules
    ]


def label_sync_schedules(params: Params) -> list[dict[str, Any]]:
    """params.yaml labelling.sync_minutes as a prefect.yaml interval schedule (none while it is null)."""
    minutes = params.labelling.sync_minutes
    return [{"interval": round(minutes * 60)}] if minutes else []


def with_params_schedules(deployments: list[dict[str, Any]], params: Params) -> list[dict[str, Any]]:
    """The deployments, `score` with params.yaml's score.schedules and `label-sync` with labelling.sync_minutes
    (lists, or absent: no placeholder holds one)."""
    scheduled = {SCORE_DEPLOYMENT: score_schedules(params), LABEL_SYNC_DEPLOYMENT: label_sync_schedules(params)}
    return [
        {**spec, "schedules": scheduled[spec["name"]]} if spec.get("name") in scheduled else spec
        for spec in deployments
    ]


def runner_deployments(params: Params) -> list[Any]:
    """The deployments, built for `prefect.serve` (the work pool is the serving process itself)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron, Interval

    deployments = []
    for spec in deployment_specs(params):
        try:
            schedules = [
                Interval(s["interval"], parameters=s.get("parameters") or {})
                if "interval" in s
                else Cron(s["cron"], timezone=s.get("timezone"), parameters=s.get("parameters") or {})
                for s in spec.get("schedules") or []
            ]
        except ValueError as exc:
            raise ConfigError(
                f"params.yaml retrain.cron / monitor.cron / score.schedules / retrain.timezone: {exc}"
            ) from None
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
        description="Created by `textclf deploy` (docs/guides/unattended.md#notifications)",
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
    """prefect.yaml itself, or a copy in `folder`: with params.yaml's score.schedules and labelling.sync_minutes,
    and (with `clone`) the pull steps `definitions.pull_from_git`."""
    path = params.root / PREFECT_FILE
    if clone is None and not params.score.schedules and not params.labelling.sync_minutes:
        return path
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["deployments"] = with_params_schedules(config["deployments"], params)
    if clone is not None:
        try:
            config["pull"] = config["definitions"]["pull_from_git"]
        except (KeyError, TypeError):
            raise ConfigError(
                f"{path}: definitions.pull_from_git is missing (the pull steps of cloning workers)"
            ) from None
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
            "none; `textclf remote URL` sets one (docs/guides/team.md)"
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
