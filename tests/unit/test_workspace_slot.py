"""One pipeline run per workspace on a temporary Prefect server (`textclf run`), also after a run was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.repo import REPO

HOLD = """
import sys, time
from pathlib import Path
from prefect import flow
from flows.pipeline import workspace_slot

@flow
def hold(root: str, seconds: float) -> None:
    with workspace_slot(Path(root)):
        print("held", flush=True)
        time.sleep(seconds)

hold(sys.argv[1], float(sys.argv[2]))
"""


def start_holder(workspace: Path, seconds: float, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", HOLD, str(workspace), str(seconds)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for_text(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, f"exited {process.returncode} before {text!r}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {timeout:.0f} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def test_a_killed_run_does_not_keep_the_workspace_from_the_next_one(tmp_path: Path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    # Both runs share one Prefect home, as two `textclf run` of one user do; no PREFECT_API_URL:
    # each starts its own temporary server.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    first = start_holder(workspace, 600, tmp_path / "first.log", env)
    second = None
    try:
        wait_for_text(tmp_path / "first.log", "held", first)
        second = start_holder(workspace, 0, tmp_path / "second.log", env)
        # While the first run lives, the second waits for it and says so.
        wait_for_text(tmp_path / "second.log", "another pipeline run holds this workspace", second)
        assert "held" not in (tmp_path / "second.log").read_text()
        os.killpg(first.pid, signal.SIGKILL)  # the holder dies without releasing anything
        first.wait(timeout=30)
        # Before, a temporary server's slot stayed taken after its holder died (seen still taken 8 min later).
        assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()[-3000:]
        assert "held" in (tmp_path / "second.log").read_text()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
