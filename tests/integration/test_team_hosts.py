"""A team on loopback: a real Prefect server (on PostgreSQL), a real S3 server (SeaweedFS), process workers
on "hosts" that are separate folders with their own HOME, a serving host with no git, no DVC and no
params.yaml, in a serving-only environment.

- host A (a worker: a fresh clone per flow run) retrains, pushes data, models and the run-cache,
  and promotes v0001 into the bucket's registry; host B serves it;
- host C (another worker) runs with no new data and recomputes no stage;
- new data lands on host L (the landing host): the trigger retrains on A, v0002 is promoted, B follows;
- two runs started at once on A and C while the team's slot is taken: they take turns, the registry
  stays whole;
- `textclf gc` shrinks the DVC remote, and a fresh worker still restores every stage (none runs);
- host K is killed (SIGKILL) while its promotion's upload hangs: no partial version is visible,
  production does not move, and its registry lease and team slot are free again within about a minute;
- the S3 server stops: B keeps answering with v0002 and says `degraded`.

Each host has only its role's keys (the store's `-s3.config` is what `textclf policies --format
seaweedfs` prints), and every set-up command is taken from docs/guides/team.md (tests/support/team_guide.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.lib.data.demo_data import generate_reviews
from tasks.lib.storage.object_store import ObjectStore, StoreError
from tasks.lib.storage.registry import Registry
from tasks.lib.storage.team_workspace import workspace_identity
from tests.support.browser import api_operations, chromium
from tests.support.postgres import PostgreSQL
from tests.support.repo import BIN, copy_repo, deep_merge, repo_params, run, tiny_overrides
from tests.support.seaweedfs import SeaweedFS, free_port
from tests.support.serve_venv import PIPELINE_ONLY, importable
from tests.support.stalling_proxy import StallingProxy
from tests.support.team_guide import GuideCommands

pytestmark = pytest.mark.slow
POOL = "textclf"  # the guide's
SCHEDULED = "retraining-pipeline/scheduled"
ON_NEW_DATA = "retraining-pipeline/on-new-data"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
WAITING = "another pipeline run holds this workspace"


@dataclass
class Host:
    """A machine of the team: its own folder, HOME, Prefect home and caches."""

    name: str
    home: Path
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self, command: list[str], cwd: Path | None = None) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                cwd=cwd or self.home,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_for_log(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            assert self.process is None or self.process.poll() is None, f"{self.name} exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"{self.name}: no {text!r} in {timeout:.0f} s:\n{self.tail()}"
            time.sleep(1)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        """SIGKILL to the host's process and everything it started (a machine that dies)."""
        import psutil

        if self.process is None:
            return
        parent = psutil.Process(self.process.pid)
        for process in [*parent.children(recursive=True), parent]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def role_keys(role: str) -> dict[str, str]:
    """The credentials of a role in the test's store."""
    return {"AWS_ACCESS_KEY_ID": f"{role}-key", "AWS_SECRET_ACCESS_KEY": f"{role}-secret"}


def make_host(base: Path, name: str, api: str | None, endpoint: str, role: str) -> Host:
    home = base / name
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_"))},
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "PREFECT_HOME": str(home / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the worker image's PATH
        # The store: every host reaches it through the usual variables, the DVC remote included,
        # with its role's keys only.
        "AWS_ENDPOINT_URL": endpoint,
        **role_keys(role),
    }
    if api:
        env["PREFECT_API_URL"] = api
    return Host(name, home, env, base / f"{name}.log")


def start_worker(guide: GuideCommands, host: Host, *queues: str) -> None:
    # The guide's command; the test names each worker and routes runs to it through queues.
    command = [str(BIN / "prefect"), *guide.take("prefect", "worker", "start")[1:], "--name", host.name]
    for queue in queues:
        command += ["--work-queue", queue]
    host.start(command)
    host.wait_for_log("started!")


@contextlib.contextmanager
def team_slot(api: str, workspace: Path) -> Iterator[None]:
    """Hold the team's workspace slot (the one every pipeline run takes first) from this process."""
    from prefect.concurrency.sync import concurrency
    from prefect.settings import PREFECT_API_URL, temporary_settings

    name = workspace_identity(workspace)
    with temporary_settings(updates={PREFECT_API_URL: api}), concurrency(name, timeout_seconds=120, strict=True):
        yield


def flow_run(api: str, run_id: Any) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def start_run(api: str, queue: str, deployment: str = SCHEDULED) -> Any:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        return run_deployment(deployment, work_queue_name=queue, timeout=0).id


def wait_run(api: str, run_id: Any, hosts: list[Host], timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = flow_run(api, run_id)
        if found.state_type and found.state_type.value in TERMINAL:
            assert found.state_type.value == "COMPLETED", (found.state.message, *(h.tail() for h in hosts))
            return found
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} did not end in {timeout:.0f} s:\n" + "\n".join(h.tail() for h in hosts))


def stage_actions(api: str, run_id: Any) -> dict[str, str]:
    """{stage: ran | restored | skipped} from the run's report artifact."""
    rows = [line.split("|")[1:3] for line in run_report(api, run_id).splitlines() if line.count("|") == 4]
    words = {"ran": "ran", "restored from the run-cache": "restored", "up to date (skipped by DVC)": "skipped"}
    return {stage.strip(): words[action.strip()] for stage, action in rows if action.strip() in words}


def http_json(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode() if body else None, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(1)


def reviews_csv(path: Path, rows: int, seed: int) -> Path:
    generate_reviews(rows, 0.0, seed, ("negative", "positive"))[["text", "label"]].to_csv(path, index=False)
    return path


def run_report(api: str, run_id: Any) -> str:
    """The run's report artifact (markdown)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), key=ArtifactFilterKey(any_=["retraining-report"])
            )
        )
    return str(found[0].data)


def textclf(guide: GuideCommands, *words: str, cwd: Path, env: dict[str, str]) -> str:
    """Run the guide's `textclf` command that starts with `words`; its output."""
    done = subprocess.run(
        [str(BIN / "textclf"), *guide.take("textclf", *words)[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def team(tmp_path: Path, tiny_model_dir: Path) -> Iterator[dict[str, Any]]:
    """The origin repository (a bare git repo), a store with one identity per role, and a Prefect server
    with a process pool; every command as the team guide writes it."""
    from tasks.apps.service import local_server

    prefix = "s3://team/ml"
    origin = copy_repo(tmp_path / "work")
    branch = run(["git", "branch", "--show-current"], origin).stdout.strip()
    guide = GuideCommands(
        {
            "s3://bucket": prefix,
            "https://git.internal/ml/textclf.git": f"file://{tmp_path / 'origin.git'}",
            "main": branch,
            "week1.csv": str(tmp_path / "l" / "week1.csv"),  # the landing host's file (make_host's folder)
        }
    )
    params = deep_merge(
        repo_params(),
        deep_merge(
            tiny_overrides(tiny_model_dir),
            {
                "paths": {"registry": f"{prefix}/registry"},
                "retrain": {"debounce_seconds": 5},
                "retention": {"remote_runs": {"keep_last": 1, "max_age_days": 1e-6}},  # textclf gc: 1 run
            },
        ),
    )
    (origin / "params.yaml").write_text(yaml.safe_dump(params))
    textclf(guide, "remote", cwd=origin, env=dict(os.environ))
    run([*GIT, "commit", "-qam", "the team's remote and registry"], origin)
    run(["git", "clone", "-q", "--bare", str(origin), str(tmp_path / "origin.git")], tmp_path)

    # The store's identities: the guide's `textclf policies --format seaweedfs`, each role's keys filled in.
    config = json.loads(textclf(guide, "policies", "--format", "seaweedfs", cwd=origin, env=dict(os.environ)))
    for identity in config["identities"]:
        keys = role_keys(identity["name"])
        identity["credentials"] = [{"accessKey": keys["AWS_ACCESS_KEY_ID"], "secretKey": keys["AWS_SECRET_ACCESS_KEY"]}]
    (tmp_path / "s3.json").write_text(json.dumps(config))
    aws = json.loads(textclf(guide, "policies", cwd=origin, env=dict(os.environ)))
    assert sorted(aws) == ["landing", "serving", "worker"] and all(p["Version"] == "2012-10-17" for p in aws.values())
    store = SeaweedFS(tmp_path / "store", bucket="team", options=(f"-s3.config={tmp_path / 's3.json'}",))
    store.start()
    database = PostgreSQL()
    database.start()
    server_log = tmp_path / "prefect-server.log"
    port = free_port()
    guide.substitutions |= {"0.0.0.0": "127.0.0.1", "4200": str(port)}
    server = [str(BIN / "prefect"), *guide.take("prefect", "server", "start")[1:]]
    on_postgres = {"PREFECT_API_DATABASE_CONNECTION_URL": database.url}  # the guide's export, this cluster's URL
    try:
        with local_server(port, tmp_path / "server-home", 240, server, on_postgres, server_log) as api:
            admin = make_host(tmp_path, "admin", api, store.endpoint, "worker")
            pool = guide.take("prefect", "work-pool", "create")
            queues = (["work-queue", "create", queue, "--pool", POOL] for queue in ("host-a", "host-c", "host-k"))
            for command in (pool[1:], *queues):
                subprocess.run([str(BIN / "prefect"), *command], env=admin.env, check=True, capture_output=True)
            textclf(guide, "deploy", cwd=origin, env=admin.env)
            yield {
                "api": api,
                "base": tmp_path,
                "prefix": prefix,
                "origin": tmp_path / "origin.git",
                "params": params,
                "store": store,
                "guide": guide,
                "database": database,
            }
        # The server ran on PostgreSQL (its runs are there) and SQLite's lock never showed.
        assert int(database.query("select count(*) from flow_run")) > 0
        assert "database is locked" not in server_log.read_text()
    finally:
        store.stop(grace_s=5)
        database.stop()


def test_a_team_of_hosts_shares_data_models_and_one_registry(team: dict[str, Any], serve_bin: Path):
    api, base, prefix, store, guide = team["api"], team["base"], team["prefix"], team["store"], team["guide"]
    proxy = StallingProxy(store.endpoint)
    roles = {"a": "worker", "b": "serving", "c": "worker", "l": "landing", "k": "worker"}
    hosts = {
        name: make_host(base, name, api if name != "b" else None, proxy.url if name == "k" else store.endpoint, role)
        for name, role in roles.items()
    }
    a, b, c, landing, k = (hosts[n] for n in ("a", "b", "c", "l", "k"))
    os.environ |= {"AWS_ENDPOINT_URL": store.endpoint, **role_keys("worker")}  # this process reads the registry too
    registry = Registry(f"{prefix}/registry")
    try:
        start_worker(guide, a, "host-a", "default")  # A also takes the runs the new-data trigger starts
        start_worker(guide, c, "host-c")

        # Host A: the first run computes every stage and promotes v0001 into the bucket.
        first = wait_run(api, start_run(api, "host-a"), [a])
        assert set(stage_actions(api, first.id).values()) == {"ran"}
        assert registry.production()["version"] == "v0001"

        # Host B: a serving-only environment (no torch, Prefect, DVC or GX), no clone, no params.yaml, the
        # serving role's keys (read the registry, nothing else): the guide's commands.
        assert importable(serve_bin, PIPELINE_ONLY) == []
        port = free_port()
        b.env |= {"TEXTCLF_SERVE_PORT": str(port), "PATH": f"{serve_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
        b.start([str(serve_bin / "textclf"), *guide.take("textclf", "serve")[1:]])
        serving = f"http://127.0.0.1:{port}"
        wait_for(lambda: _status(serving) == 200, 120, "host B to serve")
        code, answer = http_json(f"{serving}/predict", {"texts": ["a warm, clever film"]})
        assert code == 200 and answer["version"] == "v0001", answer
        with chromium() as browser:  # its API page, from the serving install's own copy of Swagger UI
            operations, problems = api_operations(browser, serving)
        assert problems == [] and {"POST /predict", "POST /feedback", "GET /readyz"} <= set(operations), operations
        listed = subprocess.run(
            [str(serve_bin / "textclf"), *guide.take("textclf", "registry")[1:]],
            cwd=b.home,
            env=b.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert listed.returncode == 0 and "v0001" in listed.stdout and "damaged" not in listed.stdout, listed
        # ...and cannot change production: the store refuses the serving role's write (so would it the
        # landing role's); the registry's own error names the key and the role's policy.
        for role in ("serving", "landing"):
            key, secret = role_keys(role).values()
            as_role = ObjectStore(f"{prefix}/registry", key=key, secret=secret)
            with pytest.raises(StoreError, match=r"production\.json: cannot write .*access denied"):
                as_role.put("production.json", b"{}")
        assert registry.production()["version"] == "v0001"

        # Host C: a bare clone, no new data: every stage comes from the remote, none is computed.
        again = wait_run(api, start_run(api, "host-c"), [c])
        actions = stage_actions(api, again.id)
        assert "ran" not in actions.values() and set(actions) == set(stage_actions(api, first.id)), actions
        print(f"\nhost A computed the DAG in {first.total_run_time}; host C restored it in {again.total_run_time}")
        # Its reports are in the store, linked from its own report: A's clone and C's are gone (bug 4).
        for run_id in (first.id, again.id):
            report = run_report(api, run_id)
            assert f"Reports of this run: `{prefix}/dvc/textclf/reports/" in report, report
            docs = re.search(r"\[Data Docs\]\((\S+)\)", report)
            assert docs and docs.group(1).startswith(store.endpoint), report
            with urllib.request.urlopen(docs.group(1), timeout=10) as page:  # no credentials: presigned
                assert b"<html" in page.read(2000).lower()

        # New data lands on host L (the landing role: incoming/ only): shared through the remote; the
        # trigger retrains on A; v0002; B follows.
        subprocess.run(["git", "clone", "-q", str(team["origin"]), "repo"], cwd=landing.home, check=True)
        reviews_csv(landing.home / "week1.csv", 120, 101)
        accepted = subprocess.run(
            [str(BIN / "textclf"), *guide.take("textclf", "ingest-new")[1:]],
            cwd=landing.home / "repo",
            env=landing.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
        wait_for(lambda: (registry.production() or {}).get("version") == "v0002", 600, "v0002 from the trigger")
        wait_for(lambda: http_json(f"{serving}/health")[1].get("version") == "v0002", 60, "host B to follow")

        # Two runs at once on two workers, of the two deployments (each deployment's own limit of one
        # does not hold them apart): the team's slot makes them take turns; the registry stays whole.
        # The test holds the slot while both start, so both find it taken whatever their start-up takes.
        waited = a.log.read_text().count(WAITING) + c.log.read_text().count(WAITING)
        with team_slot(api, base / "work"):
            both = [start_run(api, "host-a"), start_run(api, "host-c", ON_NEW_DATA)]
            wait_for(
                lambda: a.log.read_text().count(WAITING) + c.log.read_text().count(WAITING) == waited + 2,
                300,
                "both runs to wait for the team's slot",
            )
        for run_id in both:
            wait_run(api, run_id, [a, c])
        assert registry.list_versions() == ["v0001", "v0002"] and registry.production()["version"] == "v0002"

        # Garbage collection (retention.remote_runs keeps 1 run per stage here): the remote shrinks, a dry
        # run removes nothing, and afterwards a fresh worker still restores every stage and B still serves.
        def remote_bytes() -> int:  # DVC's objects and run-cache entries
            registry.store.fs.invalidate_cache()
            return sum(int(registry.store.fs.du(f"{prefix}/dvc/{part}")) for part in ("files", "runs"))

        def gc(*flags: str) -> dict[str, Any]:
            done = run([str(BIN / "textclf"), "gc", "--min-age-hours", "0", *flags], base / "work")
            return json.loads(done.stdout)

        before = remote_bytes()
        planned = gc("--dry-run")
        assert remote_bytes() == before and planned["objects_removed"] > 0 and planned["bytes_before"] == before
        collected = gc()
        after = remote_bytes()
        assert after == before - collected["bytes_removed"] and collected["objects_removed"] > 0, collected
        print(f"textclf gc: the DVC remote from {before:,} to {after:,} bytes ({collected})")
        restored = wait_run(api, start_run(api, "host-c"), [c])
        actions = stage_actions(api, restored.id)
        assert "ran" not in actions.values() and set(actions) == set(stage_actions(api, first.id)), actions
        code, answer = http_json(f"{serving}/predict", {"texts": ["a warm, clever film"]})
        assert code == 200 and answer["version"] == "v0002"

        # Host K dies while its promotion's upload hangs: nothing half-written is visible.
        state = registry.store.fs.cat(f"{prefix}/dvc/textclf/state/dvc.lock")
        quiet = {k: v for k, v in landing.env.items() if k != "PREFECT_API_URL"}  # no trigger: K runs it
        subprocess.run(
            [str(BIN / "textclf"), "ingest-new", str(reviews_csv(landing.home / "week2.csv", 120, 202))],
            cwd=landing.home / "repo",
            env=quiet,
            check=True,
            capture_output=True,
        )
        proxy.stall(r"/registry/versions/v0003/version\.json$")
        start_worker(guide, k, "host-k")
        start_run(api, "host-k")
        assert proxy.stalled.wait(timeout=600), k.tail()
        k.kill()
        killed_at = time.monotonic()
        proxy.release()
        assert registry.list_versions() == ["v0001", "v0002"] and registry.production()["version"] == "v0002"
        assert registry.store.fs.cat(f"{prefix}/dvc/textclf/state/dvc.lock") == state
        # K's registry lease and team slot are free again within about a minute (they held for 10 and 5
        # minutes before issue 44): each wait below fails after 120 s.
        with registry.locked(timeout_s=120):
            lease_free_s = time.monotonic() - killed_at
        with team_slot(api, base / "work"):
            slot_free_s = time.monotonic() - killed_at
        print(f"\nafter K's SIGKILL: registry lease free in {lease_free_s:.0f} s, the slot in {slot_free_s:.0f} s")

        # The store goes away: B keeps answering with what it has, and says why it is degraded.
        store.stop(grace_s=5)
        wait_for(lambda: http_json(f"{serving}/health")[1].get("status") == "degraded", 60, "B degraded")
        code, answer = http_json(f"{serving}/predict", {"texts": ["a dull, tired plot"]})
        assert code == 200 and answer["version"] == "v0002"
        # Every set-up command of the team guide was one of this test's.
        assert guide.not_taken() == [], "docs/guides/team.md has commands this test does not run"
    finally:
        for host in hosts.values():
            host.stop()
        proxy.close()
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.pop(name, None)


def _status(url: str) -> int | None:
    try:
        return http_json(f"{url}/health")[0]
    except OSError:
        return None
