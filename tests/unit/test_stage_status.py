"""The flow asks DVC whether a stage will run (its API), and waits when a person's `dvc` holds the lock."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.pipeline import is_stale
from tests.support.repo import BIN, run

HOLD_LOCK = """
import sys, time
from dvc.repo import Repo
repo = Repo(sys.argv[1])
with repo.lock:
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def small_repo(root: Path) -> Path:
    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], root)
    (root / "in.txt").write_text("1\n")
    stage = {"cmd": "cp in.txt out.txt", "deps": ["in.txt"], "outs": ["out.txt"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"copy": stage}}))
    return root


def test_a_stage_is_stale_until_it_ran_and_again_when_its_input_changes(tmp_path):
    root = small_repo(tmp_path)
    assert is_stale(root, "copy")
    run([str(BIN / "dvc"), "repro", "-q"], root)
    assert not is_stale(root, "copy")
    (root / "in.txt").write_text("2\n")
    assert is_stale(root, "copy")


def test_a_held_dvc_lock_is_waited_for_not_failed_on(tmp_path):
    root = small_repo(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root), "6"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    said: list[str] = []
    assert is_stale(root, "copy", said.append)
    assert said == ["DVC's lock is held in this workspace: waiting for it"]
    assert holder.wait(timeout=5) == 0  # the answer came once the holder had let go


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


HANGS = "import os, time; open('pid', 'w').write(str(os.getpid())); time.sleep(300)"


def test_a_stage_past_its_timeout_is_stopped_with_what_it_started(tmp_path):
    from flows.pipeline import StageFailed, repro_stage

    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], tmp_path)
    stage = {"cmd": f'{sys.executable} -c "{HANGS}"', "outs": ["never.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"hang": stage}}))
    said: list[str] = []
    with pytest.raises(StageFailed, match=r"stage 'hang' ran past its 3 s \(dvc.yaml meta.timeout_seconds\)"):
        repro_stage(tmp_path, "hang", timeout_s=3, log=said.append)
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 15
    while alive(pid):
        assert time.monotonic() < deadline, "the stage's own process outlived the timeout"
        time.sleep(0.1)
    assert any("Running stage 'hang'" in line for line in said)


def test_the_run_report_says_a_restored_promotion_is_not_this_runs(make_params):
    """A run with no new data (every stage restored) reported `"promoted": true` from the promotion.json of an
    earlier run (issue 45, bug 3): the report says what this run did to production."""
    from flows.pipeline import StageResult, report_markdown
    from tasks.lib.artifacts import Promotion

    params = make_params()
    Promotion(promoted=True, version="v0001", variant="int8", model_md5="m", git_commit="c", previous=None).write(
        params
    )
    restored = report_markdown(params.root, [StageResult("promote", True, 0.1, [])], None)
    assert "Promotion: none in this run (promote restored from the run-cache" in restored
    assert "Its last result, from an earlier run: v0001 promoted" in restored
    ran = report_markdown(params.root, [StageResult("promote", True, 2.0, ["Running stage 'promote':"])], None)
    assert "Promotion: v0001 (int8) is production now (before: none)." in ran
