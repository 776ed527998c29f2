"""A `textclf run` killed outright (SIGKILL) takes its stage and its temporary Prefect server with it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support.repo import BIN, REPO, run

# The stage: it starts a child of its own (as a stage's tokenizer or data loader workers are), says who
# they are, then works for longer than any test waits.
WORKS = (
    "import json, os, subprocess, sys, time; "
    "child = subprocess.Popen(sys.argv[1:] or ['sleep', '600']); "
    "open('started.tmp', 'w').write(json.dumps([os.getpid(), child.pid])); "
    "os.replace('started.tmp', 'started'); "
    "time.sleep(600)"
)
# A child that needs two seconds to finish after SIGTERM (as one that flushes its files does): dvc, the
# stage and `sleep` are gone before it.
SLOW_TO_STOP = (
    "import signal, sys, time; "
    "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(2), sys.exit())); "
    "open('child_ready', 'w').close(); "
    "time.sleep(600)"
)


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def ancestors(pid: int, until: int) -> list[int]:
    """The processes between `pid` and its ancestor `until`."""
    found = []
    while (pid := parent(pid)) != until:
        assert pid > 1, f"{until} is not an ancestor"
        found.append(pid)
    return found


def temporary_server(run_pid: int) -> tuple[int, int]:
    """The pid and port of the uvicorn process that Prefect started for the run, as a child of it."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if "uvicorn" in argv and parent(int(entry.name)) == run_pid:
                return int(entry.name), int(argv[argv.index("--port") + 1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    raise AssertionError(f"no temporary Prefect server among the children of {run_pid}")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def slow_workspace(root: Path) -> Path:
    """A workspace whose one stage works for 10 minutes: the run is killed while it does."""
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], root)
    stage = {"cmd": f'python -c "{WORKS}"', "outs": ["never.txt"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"work": stage}}))
    return root


def test_a_killed_run_takes_its_stage_and_temporary_server_with_it(tmp_path: Path):
    (tmp_path / "workspace").mkdir()
    (tmp_path / "home").mkdir()
    workspace = slow_workspace(tmp_path / "workspace")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path / "home")}
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        textclf = subprocess.Popen(
            [sys.executable, "-m", "tasks", "run"], cwd=workspace, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    leftovers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not (workspace / "started").exists():
            assert textclf.poll() is None, f"exited {textclf.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the stage did not start in 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        stage, child = json.loads((workspace / "started").read_text())
        server, port = temporary_server(textclf.pid)
        leftovers = [stage, child, *ancestors(stage, textclf.pid), server]  # dvc, and the shell it runs it in
        textclf.kill()  # SIGKILL: the run cleans up nothing itself
        textclf.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(map(alive, leftovers)) or not port_free(port):
            assert time.monotonic() < deadline, (
                f"outlived the killed run: {[pid for pid in leftovers if alive(pid)]} "
                f"(stage {stage}, its child {child}, Prefect server {server} on port {port}; run {textclf.pid})"
            )
            time.sleep(0.2)
    finally:
        if textclf.poll() is None:
            textclf.kill()
            textclf.wait()
        for pid in leftovers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("slow_child", [False, True], ids=["child", "child-slow-to-stop"])
def test_an_interrupted_stage_is_stopped_before_the_run_goes(tmp_path: Path, slow_child: bool):
    """Ctrl-C, or SIGTERM (Prefect raises it as TerminationSignal), while a stage runs in its own session."""
    from flows.pipeline import repro_stage

    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], tmp_path)
    (tmp_path / "slow_child.py").write_text(SLOW_TO_STOP)
    child_argv = " python slow_child.py" if slow_child else ""
    stage = {"cmd": f'python -c "{WORKS}"{child_argv}', "outs": ["never.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"work": stage}}))

    ready = [tmp_path / "started", *([tmp_path / "child_ready"] if slow_child else [])]

    def interrupt_once_started(line: str) -> None:
        deadline = time.monotonic() + 60
        while line.startswith("Running stage") and not all(path.exists() for path in ready):
            assert time.monotonic() < deadline, "the stage did not start in 60 s"
            time.sleep(0.1)
        if line.startswith("Running stage"):
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        repro_stage(tmp_path, "work", log=interrupt_once_started)
    stage_pid, child = json.loads((tmp_path / "started").read_text())
    # Stopped, not merely left behind: gone before repro_stage let the interrupt through.
    assert not alive(stage_pid) and not alive(child), f"still running after {time.monotonic() - started:.1f} s"
