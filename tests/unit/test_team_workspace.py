"""Sharing a workspace through the DVC default remote: accepted batches, identity, cloning workers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.deployments import GitSource, _prefect_file_for, deployment_specs, template_environment
from tasks.lib.data.incoming import LEDGER, batch_files, consolidate
from tasks.lib.io import write_table
from tasks.lib.storage.team_workspace import (
    mirror_down,
    prune_team_reports,
    publish_reports,
    run_folder_name,
    share_batches,
    team_remote,
    workspace_identity,
)
from tests.support.repo import BIN, REPO, run


def dvc_repo(folder: Path, remote: Path | None) -> Path:
    folder.mkdir(parents=True)
    run(["git", "init", "-q"], folder)
    run([str(BIN / "dvc"), "init", "-q"], folder)
    if remote is not None:
        run([str(BIN / "dvc"), "remote", "add", "-d", "storage", str(remote)], folder)
    return folder


def batch(folder: Path, number: int, rows: int = 3) -> Path:
    path = folder / f"b{number:04d}-{number:016x}.parquet"
    write_table(path, pd.DataFrame({"text": [f"text {number}.{i}" for i in range(rows)], "label": "positive"}))
    return path


def test_batches_accepted_on_the_landing_host_reach_a_worker_and_merges_follow(tmp_path):
    remote = tmp_path / "remote"
    landing = dvc_repo(tmp_path / "landing", remote)
    worker = dvc_repo(tmp_path / "worker", remote)
    incoming, copy = landing / "data" / "incoming", worker / "data" / "incoming"
    incoming.mkdir(parents=True)
    first, second = batch(incoming, 1), batch(incoming, 2)
    assert share_batches(landing, incoming) == [f"+{first.name}", f"+{second.name}"]
    assert share_batches(landing, incoming) == []  # nothing changed

    shared = team_remote(worker)
    assert shared is not None
    assert mirror_down(shared, "incoming", copy) == [f"+{first.name}", f"+{second.name}"]
    assert [p.read_bytes() for p in batch_files(copy)] == [first.read_bytes(), second.read_bytes()]
    # A batch the worker has and the team does not (accepted here, not shared yet) is kept, and read.
    stray = batch(copy, 7)

    # The landing host merges its batches: the worker gets the merged file and drops what it holds.
    batch(incoming, 3)
    merged = consolidate(incoming, 2)
    assert merged is not None
    changed = share_batches(landing, incoming)
    assert changed[0] == f"+{LEDGER}" and f"-{first.name}" in changed  # the ledger first, removals last
    mirror_down(shared, "incoming", copy)
    assert sorted(p.name for p in copy.iterdir()) == sorted([LEDGER, merged.name, stray.name])
    assert [p.name for p in batch_files(copy)] == sorted([merged.name, stray.name])


def test_one_identity_per_team_and_one_per_workspace_without_a_remote(tmp_path):
    shared = tmp_path / "remote"
    first, second = dvc_repo(tmp_path / "one", shared), dvc_repo(tmp_path / "two", shared)
    alone, other = dvc_repo(tmp_path / "alone", None), dvc_repo(tmp_path / "other", None)
    assert workspace_identity(first) == workspace_identity(second)
    assert len({workspace_identity(first), workspace_identity(alone), workspace_identity(other)}) == 3
    assert team_remote(alone) is None and team_remote(tmp_path / "not-a-repo") is None


def test_cloning_workers_get_the_git_pull_steps_and_run_in_their_clone(make_params, tmp_path):
    params = make_params()
    (params.root / "prefect.yaml").write_text((REPO / "prefect.yaml").read_text())
    clone = GitSource("https://git.example.com/team/textclf.git", "release")
    written = yaml.safe_load(_prefect_file_for(params, clone, tmp_path).read_text())
    steps = [next(iter(step)) for step in written["pull"]]
    assert steps == [
        "prefect.deployments.steps.git_clone",
        "prefect.deployments.steps.run_shell_script",
        "prefect.deployments.steps.set_working_directory",
    ]
    values = template_environment(params, "pool", clone)
    assert values["TEXTCLF_GIT_REPOSITORY"] == clone.repository and values["TEXTCLF_GIT_REF"] == "release"
    assert values["TEXTCLF_WORKSPACE"] == "."
    # Without --clone the file is prefect.yaml itself: the worker runs in this workspace.
    assert _prefect_file_for(params, None, tmp_path) == params.root / "prefect.yaml"
    assert {spec["parameters"]["root"] for spec in deployment_specs(params)} == {str(params.root)}


@pytest.mark.parametrize("url", ["s3://key:secret@bucket/dvc"])
def test_credentials_in_a_remote_url_are_refused(tmp_path, url):
    repo = dvc_repo(tmp_path / "repo", None)
    done = run([str(BIN / "textclf"), "--root", str(repo), "remote", url], repo, check=False)
    assert done.returncode == 1 and "credentials in the URL" in done.stderr
    assert "remote" not in (repo / ".dvc" / "config").read_text()


def test_a_runs_reports_go_to_the_teams_store_and_their_links_open_without_credentials(s3_url, tmp_path):
    """Issue 45, bug 4: the run report linked pages in the worker's temporary clone, deleted when the run
    ended (on worker C the Data Docs link pointed into A's old folder)."""
    import urllib.request

    worker = dvc_repo(tmp_path / "worker", None)
    run([str(BIN / "dvc"), "remote", "add", "-d", "storage", f"{s3_url}/dvc"], worker)
    reports = worker / "reports"
    (reports / "data_docs").mkdir(parents=True)
    (reports / "data_docs" / "index.html").write_text("<h1>rules</h1>")
    (reports / "gate.md").write_text("## Gate: passed")
    (reports / ".gitignore").write_text("*")
    day = 86_400.0
    for age_days, run_name in ((40, "old-run"), (20, "older-run"), (0, "this-run")):
        published = publish_reports(worker, reports, run_folder_name(run_name, now=1.8e9 - age_days * day))
        assert published is not None
    assert published.url.startswith(f"{s3_url}/dvc/textclf/reports/") and published.url.endswith("-this-run")

    link = published.link("data_docs/index.html")
    assert link.startswith("http://127.0.0.1:") and "Signature=" in link  # presigned: a browser opens it as is
    with urllib.request.urlopen(link, timeout=10) as page:
        assert page.read() == b"<h1>rules</h1>"
    shared = team_remote(worker)
    assert shared is not None
    names = shared.fs.find(published.folder)
    assert sorted(name.removeprefix(published.folder + "/") for name in names) == ["data_docs/index.html", "gate.md"]

    # Retention: the newest run stays; of the older ones, those past 30 days go.
    gone = prune_team_reports(worker, keep_last=1, max_age_days=30, now=1.8e9)
    assert len(gone) == 1 and gone[0].endswith("-old-run")
    fresh = team_remote(worker)  # another host's view: nothing cached
    assert fresh is not None
    left = sorted(fresh.fs.name(entry) for entry in fresh.fs.ls(fresh.path("reports")))
    assert [name.split("-", 1)[1] for name in left] == ["older-run", "this-run"]
