"""The retraining DAG as a Prefect flow, derived from dvc.yaml.

Prefect decides when and where; DVC decides what is stale. Each Prefect task
runs one stage with `dvc repro --single-item`, so a stage whose inputs did not
change is skipped by DVC, and after a flow run `dvc status` is clean. Prefect
result caching is off: it keys on task inputs, not on file contents.

One run per workspace at a time: a second one (a schedule, a trigger, a
person, another host of the team) waits for a slot of the workspace's Prefect
global concurrency limit (held on the server, leased: a killed run frees it),
and DVC is told to wait for its own lock rather than fail. With a DVC default
remote the run starts from the team's last successful run and publishes its own
(tasks.lib.storage.team_workspace). A failed or rejected run raises a notification
(tasks.lib.reporting.notify).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.states import State
from prefect.tasks import exponential_backoff

from flows.watchdog import mark
from tasks.lib.artifacts import (
    GATE_REPORT_FILE,
    QUANTIZE_REPORT_FILE,
    VALIDATION_REPORT_FILE,
    EntityEvaluateMetrics,
    EvaluateMetrics,
    Promotion,
    ValidateMetrics,
)
from tasks.lib.config import Params, load_params
from tasks.lib.data.incoming import incoming_lock
from tasks.lib.errors import PipelineError
from tasks.lib.io import lock_path
from tasks.lib.logs import FORMAT_VARIABLE, LEVELS
from tasks.lib.monitoring.job_metrics import PIPELINE_JOB, pipeline_metrics, publish_job_metrics
from tasks.lib.reporting.notify import notify
from tasks.lib.stage_runner import ERROR_PREFIX
from tasks.lib.storage.team_workspace import (
    PublishedReports,
    TeamSyncError,
    publish_reports,
    publish_workspace,
    pull_workspace,
    run_folder_name,
    team_remote,
    workspace_identity,
)


class StageFailed(PipelineError, RuntimeError):
    """A DVC stage exited non-zero; the message is what the stage said."""


@dataclass(frozen=True)
class StageSpec:
    name: str
    retries: int = 0
    timeout_s: float | None = None  # dvc.yaml meta.timeout_seconds: a hung stage is stopped, not waited for


# How `dvc repro` announces running a stage's command (absent when it restores it from the run-cache).
RUNNING_MARK = "Running stage '"


@dataclass
class StageResult:
    name: str
    stale: bool  # DVC had to bring it up to date: by running it, or from the run-cache
    seconds: float
    output: list[str] = field(default_factory=list)

    @property
    def action(self) -> str:
        """`ran` (its command ran), `restored` (outputs from the run-cache) or `skipped` (up to date)."""
        if any(line.startswith(RUNNING_MARK) for line in self.output):
            return "ran"
        return "restored" if self.stale else "skipped"


def dvc_stages(root: Path) -> list[StageSpec]:
    """The stages of `root/dvc.yaml` in dependency order (file order among equals), with meta.retries."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = [s for s in repo.index.stages if s.path_in_repo == "dvc.yaml"]
        position = {stage: i for i, stage in enumerate(stages)}
        # DVC's edges point from a stage to the stages it depends on.
        graph = repo.index.graph.reverse(copy=True).subgraph(stages)
        ordered = nx.lexicographical_topological_sort(graph, key=lambda stage: position[stage])
        specs = []
        for stage in ordered:
            meta = stage.meta or {}
            timeout = meta.get("timeout_seconds")
            specs.append(StageSpec(stage.name, int(meta.get("retries", 0)), float(timeout) if timeout else None))
        return specs


def _environment() -> dict[str, str]:
    """dvc.yaml calls `python`: make it this interpreter's environment, marked as this process's
    (flows.watchdog: dvc and the stage end with this process, also when it is killed outright)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TQDM_MININTERVAL", "5")  # progress bars become log lines: one per 5 s is plenty
    # The stage says level and message; the run's log adds the time and, in JSON, the run's ids.
    env[FORMAT_VARIABLE] = "relay"
    mark(env)
    return env


def relayed(line: str) -> tuple[int, str]:
    """The level and message of a stage's `relay` line; other lines (DVC's, a progress bar) are INFO."""
    level, _, message = line.partition(" ")
    return (logging.getLevelName(level), message) if level in LEVELS and message else (logging.INFO, line)


def _failure_message(name: str, code: int, output: list[str]) -> str:
    """What the stage itself said went wrong (its `error:` block), else the output's tail."""
    starts = [i for i, line in enumerate(output) if line.startswith(ERROR_PREFIX)]
    if starts:
        said = output[starts[-1] :]
        said[0] = said[0][len(ERROR_PREFIX) :]
        said = [line for line in said if not line.startswith("ERROR: failed to reproduce")]
    else:
        said = output[-30:]
    return f"stage '{name}' failed (exit {code}):\n" + "\n".join(said).strip()


def _dvc() -> str:
    return str(Path(sys.executable).parent / "dvc")


def is_stale(root: Path, name: str, on_wait: Callable[[str], object] = print) -> bool:
    """Whether DVC would run stage `name` now (its own deps, params, command or outputs changed).

    DVC's API answers in a fraction of a second; while a person's `dvc`
    command holds the workspace lock, `dvc status --json` waits for it instead.
    """
    from dvc.lock import LockError
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            # Addressed through its dvc.yaml: a bare name would be looked up in the current folder.
            return bool(repo.status(targets=[f"{root / 'dvc.yaml'}:{name}"]))
    except LockError:
        on_wait("DVC's lock is held in this workspace: waiting for it")
        done = subprocess.run(
            [_dvc(), "--wait-for-lock", "status", "--json", name],
            cwd=root,
            env=_environment(),
            capture_output=True,
            text=True,
            check=True,
        )
        return bool(json.loads(done.stdout or "{}"))


def _group_members(pgid: int) -> list[psutil.Process]:
    """The processes of group `pgid` that still run (a zombie has finished; its parent reaps it)."""
    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
    return members


def _group_ended(pgid: int, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for group `pgid` to have no running member; True if it has none."""
    deadline = time.monotonic() + timeout_s
    while _group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _stop(process: subprocess.Popen[str], grace_s: float = 10) -> None:
    """SIGTERM to the stage's whole process group (dvc and all the stage started), SIGKILL to what is
    left after `grace_s`; returns once none of it runs."""
    pgid = process.pid
    deadline = time.monotonic() + grace_s
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    # dvc, the group's leader, can exit before the processes it started: wait for every member.
    if process.poll() is None or not _group_ended(pgid, deadline - time.monotonic()):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait()
        _group_ended(pgid, 5)


def repro_stage(
    root: Path,
    name: str,
    timeout_s: float | None = None,
    log: Callable[[str], object] | None = None,
    pull: bool = False,
) -> StageResult:
    """`dvc repro --single-item <name>` in `root`, streaming its output to the run log.

    `pull`: fetch from the DVC remote the outputs of a run-cache entry that restores the stage.

    Raises:
        StageFailed: the stage failed, or ran past `timeout_s` and was stopped (with all it started).
    """
    # A caller's `log` takes every line; the run's logger takes each at the level the stage gave it.
    emit = (lambda _level, message: log(message)) if log else get_run_logger().log
    started = time.perf_counter()
    stale = is_stale(root, name, lambda message: emit(logging.INFO, message))
    # --wait-for-lock: a person's `dvc` command in the workspace delays the stage instead of failing it.
    # Its own process group: a timeout stops the stage's processes too, not only dvc.
    process = subprocess.Popen(
        [_dvc(), "--wait-for-lock", "repro", "--single-item", *(["--pull"] if pull else []), name],
        cwd=root,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    timed_out = threading.Event()

    def stop_on_timeout() -> None:
        if process.poll() is None:  # not if it ended just now
            timed_out.set()
            _stop(process)

    timer = threading.Timer(timeout_s, stop_on_timeout) if timeout_s else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    output: list[str] = []
    try:
        for raw in process.stdout:
            line = raw.rstrip("\n").split("\r")[-1].rstrip()  # progress bars: keep their last state
            if line:
                level, message = relayed(line)
                output.append(message)
                emit(level, message)
        code = process.wait()
    except BaseException:
        # SIGTERM (Prefect raises it as TerminationSignal) or Ctrl-C: the stage's own session hears neither.
        _stop(process)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if timed_out.is_set():
        raise StageFailed(
            f"stage '{name}' ran past its {timeout_s:.0f} s (dvc.yaml meta.timeout_seconds) and was stopped with "
            "everything it started; DVC re-runs it next time (its persisted outputs and the registry are untouched)"
        )
    if code != 0:
        raise StageFailed(_failure_message(name, code, output))
    return StageResult(name, stale, round(time.perf_counter() - started, 2), output)


DATA_DOCS_PAGE = "data_docs/index.html"  # under paths.reports (tasks/stages/validate.py publishes it)


def report_markdown(
    root: Path, results: list[StageResult], failure: str | None, published: PublishedReports | None = None
) -> str:
    """The run report: what each stage did, the headline metrics and the gate decision.

    Args:
        published: this run's reports in the team's remote: pages are linked there (a worker's clone goes
            when the run ends); None links the workspace's own files.
    """
    params = load_params(root)
    reports = params.path("reports")
    link = _page_link(reports, published)
    lines = [
        "# Retraining run",
        "",
        f"Source: `{params.data.source}`",
        "",
        "| stage | action | seconds |",
        "|---|---|---|",
    ]
    actions = {"ran": "ran", "restored": "restored from the run-cache", "skipped": "up to date (skipped by DVC)"}
    lines += [f"| {r.name} | {actions[r.action]} | {r.seconds} |" for r in results]
    if ValidateMetrics.path(params).exists():
        validation = ValidateMetrics.read(params)
        verdict = "passed" if validation.passed else "FAILED (" + ", ".join(validation.failed_rules) + ")"
        # This workspace's pages: the metrics name the folder of the run that validated, which may be
        # another host's clone (restored from the run-cache), long gone.
        data_docs = reports / DATA_DOCS_PAGE
        docs = f", [Data Docs]({link(data_docs)})" if validation.data_docs and data_docs.exists() else ""
        lines += [
            "",
            f"Validation {verdict}: {validation.rows_kept} of {validation.rows_read} rows kept, "
            f"{validation.rows_quarantined} quarantined. "
            f"Report: [{VALIDATION_REPORT_FILE}]({link(reports / VALIDATION_REPORT_FILE)}){docs}",
        ]
    if EvaluateMetrics.path(params).exists() and params.task == "token_classification":
        tagger = EntityEvaluateMetrics.read(params)
        low, high = tagger.interval["f1"]
        lines += [
            "",
            f"Test split, PyTorch: entity F1 {tagger.f1:.4f} ({low:.4f}-{high:.4f}), "
            + ", ".join(f"{kind} {found['f1']:.4f}" for kind, found in tagger.per_type.items())
            + f"; word accuracy {tagger.accuracy:.4f}.",
        ]
    elif EvaluateMetrics.path(params).exists():
        evaluate = EvaluateMetrics.read(params)
        low, high = evaluate.accuracy_interval()
        lines += [
            "",
            f"Test split, PyTorch: accuracy {evaluate.accuracy:.4f} ({low:.4f}-{high:.4f}), "
            f"macro-F1 {evaluate.macro_f1:.4f}, ECE {evaluate.ece:.4f}.",
        ]
    for report in (QUANTIZE_REPORT_FILE, GATE_REPORT_FILE):  # serving variants measured; the gate's decision
        if (reports / report).exists():
            lines += ["", (reports / report).read_text(encoding="utf-8")]
    promotion = Promotion.path(params)
    if promotion.exists() and failure is None:
        lines += ["", _promotion_line(Promotion.read(params), results, actions)]
    if published is not None:
        lines += ["", f"Reports of this run: `{published.url}/` (links valid 7 days where the store signs them)."]
    if failure:
        lines += ["", "## Run failed", "", "```", failure, "```"]
    return "\n".join(lines) + "\n"


def _page_link(reports: Path, published: PublishedReports | None) -> Callable[[Path], str]:
    """How the report links a page of `reports`: in the team's remote once published, else the local file."""

    def link(page: Path) -> str:
        if published is not None and page.is_relative_to(reports):
            return published.link(page.relative_to(reports).as_posix())
        return page.as_uri()

    return link


def _promotion_line(promotion: Promotion, results: list[StageResult], actions: dict[str, str]) -> str:
    """What this run did to production. promotion.json is promote's last output: restored from the run-cache
    or left up to date, it tells of an earlier run, and this run promoted nothing."""
    action = next((r.action for r in results if r.name == "promote"), None)
    if action == "ran":
        if promotion.promoted:
            before = promotion.previous or "none"
            return f"Promotion: {promotion.version} ({promotion.variant}) is production now (before: {before})."
        return f"Promotion: none: {promotion.reason}"
    did = actions[action] if action else "not part of this run"
    return (
        f"Promotion: none in this run (promote {did}: no new candidate). Its last result, from an earlier run: "
        f"{promotion.version} {'promoted' if promotion.promoted else 'not promoted'}."
    )


def _notify_failure(flow: Any, flow_run: FlowRun, state: State) -> None:
    """Flow hook: a failed, rejected or crashed run tells a person (log file, notification block)."""
    name = state.name or state.type.value
    message = state.message or name
    headline = next((line for line in message.splitlines() if line.startswith("## Gate:")), message.splitlines()[0])
    root = (flow_run.parameters or {}).get("root", ".")
    notify(
        load_params(root),
        f"pipeline.{name.lower()}",
        f"retraining run {flow_run.name} {name}: {headline}",
        message,
    )


# Report pages linked from every run: (artifact key, file under paths.reports, link text, description).
LINKED_REPORTS = [
    ("data-docs", DATA_DOCS_PAGE, "Great Expectations Data Docs", "The validation run, rule by rule"),
    (
        "training-curves",
        "train/report.html",
        "Training curves (DVCLive)",
        "Training loss, learning rate and validation accuracy per optimizer step; `dvc plots show` draws them too",
    ),
]


def _link_reports(reports: Path, published: PublishedReports | None) -> None:
    link = _page_link(reports, published)
    for key, name, text, description in LINKED_REPORTS:
        page = reports / name
        if page.exists():
            create_link_artifact(key=key, link=link(page), link_text=text, description=description)


# Seconds a run's slot outlives its holder: Prefect renews it every 3/4 of this while the run lives; after a
# crash its server frees it once this has passed (its repossessor looks every 15 s). 60 s is the least
# Prefect's API takes: a killed worker holds the team's runs for 60-75 s, not 5 minutes.
SLOT_LEASE_S = 60


@contextlib.contextmanager
def workspace_slot(workspace: Path) -> Iterator[None]:
    """One pipeline per workspace (per team, with a DVC remote) at a time, on every host: a slot of a Prefect
    global concurrency limit named after the workspace; says so in the run log when it has to wait.

    On a temporary Prefect server (`textclf run` without PREFECT_API_URL) the slot is a file lock in the
    workspace instead. Such a server keeps leases in its own memory and runs no service that frees
    expired ones, so a run killed while it held a Prefect slot left the limit's count taken in
    PREFECT_HOME's database, and every later run of the workspace waited for a release that never came. The OS
    releases a file lock when its holder dies; runs on a temporary server can only share a workspace
    on this host, which is what a file lock covers.
    """
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.settings import get_current_settings

    name = workspace_identity(workspace)
    slot: Callable[[float | None], contextlib.AbstractContextManager[Any]]
    if get_current_settings().api.url is None:
        lock = FileLock(str(lock_path(workspace, "pipeline")))

        def slot(timeout_s: float | None) -> contextlib.AbstractContextManager[Any]:
            return lock.acquire(timeout=-1 if timeout_s is None else timeout_s)  # released on the context's exit

    else:
        with get_client(sync_client=True) as client:
            client.upsert_global_concurrency_limit_by_name(name, limit=1)

        def slot(timeout_s: float | None) -> contextlib.AbstractContextManager[Any]:
            # A renewal that fails once (a server restart) must not kill hours of training.
            return concurrency(
                name,
                timeout_seconds=timeout_s,
                lease_duration=SLOT_LEASE_S,
                strict=True,
                raise_on_lease_renewal_failure=False,
            )

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(slot(1))
        except TimeoutError:  # filelock's Timeout is one too
            get_run_logger().info(f"another pipeline run holds this workspace ({name}): waiting for it to finish")
            stack.enter_context(slot(None))
        yield


def _run_stage(workspace: Path, spec: StageSpec, pull: bool) -> StageResult:
    """One stage as a Prefect task; stages safe to repeat (meta.retries) retry with backoff (5, 10, 20 s...)."""
    stage_task = task(
        name=f"dvc-{spec.name}",
        cache_policy=NO_CACHE,
        persist_result=False,
        retries=spec.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=5),
        retry_jitter_factor=0.2,
    )(repro_stage)
    if spec.name != "ingest":
        return stage_task(workspace, spec.name, spec.timeout_s, pull=pull)
    with incoming_lock(workspace):  # no batch lands between reading the batches and DVC's record
        return stage_task(workspace, spec.name, spec.timeout_s, pull=pull)


PIPELINE_FLOW = "retraining-pipeline"


@flow(name=PIPELINE_FLOW, log_prints=True, on_failure=[_notify_failure], on_crashed=[_notify_failure])
def pipeline(root: str = ".") -> dict[str, str]:
    """Run every dvc.yaml stage in order; DVC skips the up-to-date ones.

    Returns:
        {stage name: "ran" | "restored" (from the run-cache) | "skipped" (up to date)}.
    Raises:
        StageFailed: a stage failed (for the gate: the gate report); later stages do not run.
    """
    workspace = Path(root).resolve()
    params = load_params(workspace)  # a bad params.yaml fails here, before any stage
    results: list[StageResult] = []
    failure: str | None = None
    with workspace_slot(workspace):
        started = time.time()  # after the wait: reports written before this are another run's
        team = team_remote(workspace) is not None
        try:
            if team:
                task(name="team-pull", cache_policy=NO_CACHE, persist_result=False)(_pull)(workspace)
            for spec in dvc_stages(workspace):
                results.append(_run_stage(workspace, spec, pull=team))
            if team:
                task(name="team-publish", cache_policy=NO_CACHE, persist_result=False)(_publish)(workspace)
            _publish_success(params, results)
        except (StageFailed, TeamSyncError) as exc:
            failure = str(exc)
            raise
        finally:
            published = _publish_reports(workspace, params.path("reports")) if team else None
            report = report_markdown(workspace, results, failure, published)
            get_run_logger().info(report)
            create_markdown_artifact(
                key="retraining-report",
                markdown=report,
                description="Stages, validation, test metrics and the gate decision of this run",
            )
            gate = params.path("reports") / GATE_REPORT_FILE
            if gate.exists() and gate.stat().st_mtime >= started:  # written by this run's gate stage
                create_markdown_artifact(
                    key="gate-report",
                    markdown=gate.read_text(encoding="utf-8"),
                    description="Every gate rule of this run, its value, bound and result",
                )
            _link_reports(params.path("reports"), published)
            _apply_retention(workspace)
    return {r.name: r.action for r in results}


def _pull(workspace: Path) -> None:
    """The team's accepted batches, workspace state and run-cache entries (tasks.lib.storage.team_workspace)."""
    pull_workspace(workspace, load_params(workspace).path("incoming"), _dvc(), get_run_logger().info)


def _publish(workspace: Path) -> None:
    """This run's outputs, run-cache and workspace state, for the team's next run on any host."""
    publish_workspace(workspace, _dvc(), get_run_logger().info)


def _publish_reports(workspace: Path, reports: Path) -> PublishedReports | None:
    """This run's reports to the team's remote, passed or failed; a failure to upload is logged, never the
    run's failure (the report then links the worker's files)."""
    from prefect.runtime import flow_run

    logger = get_run_logger()
    try:
        published = publish_reports(workspace, reports, run_folder_name(flow_run.name or "run"))
    except TeamSyncError as exc:
        logger.warning("the run's reports stay on this worker: %s", exc)
        return None
    if published is not None:
        logger.info(f"reports of this run: {published.url}/")
    return published


def _publish_success(params: Params, results: list[StageResult]) -> None:
    """A run that ended well, for Prometheus (alerts/textclf.rules.yml): when, and whether it promoted."""
    ran_promote = any(r.name == "promote" and r.action == "ran" for r in results)
    promoted = ran_promote and Promotion.path(params).exists() and Promotion.read(params).promoted
    went = publish_job_metrics(params, PIPELINE_JOB, pipeline_metrics(promoted))
    get_run_logger().info("metrics of this run: %s", ", ".join(went))


def _apply_retention(workspace: Path) -> None:
    """params.yaml `retention` after every run; a failure to prune is logged, never the run's failure."""
    from tasks.lib.storage.retention import prune

    logger = get_run_logger()
    try:
        removed = prune(load_params(workspace))
    except (OSError, PipelineError) as exc:
        logger.warning("retention: could not prune (%s: %s)", type(exc).__name__, exc)
        return
    if any(removed.values()):
        logger.info("retention removed: %s", removed)


if __name__ == "__main__":
    pipeline()
