"""Sharing a workspace through the DVC default remote: accepted batches, identity, cloning workers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.deployments import GitSource, _prefect_file_for, deployment_specs, template_environment
from tasks.lib.data.incoming import LEDGER, batch_files, consolidate
from tasks.lib.io import write_table
from tasks.lib.storage.team_workspace import mirror_down, share_batches, team_remote, workspace_identity
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
