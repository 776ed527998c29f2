"""What a run started ends with the run, also when the run's process is killed outright (SIGKILL).

A process killed with SIGKILL runs no cleanup of its own: the stages it started (each in a process
group of its own, so that a timeout can stop one whole) and Prefect's temporary server went on
without it, a promotion moved production with dvc.lock never told, and the server held its port
and memory until someone stopped it. So the first `mark` in a process starts a watchdog: a small
process in a session of its own (a signal to the run's process group does not reach it) that
waits for the end of a pipe whose only writer is the run's process. The kernel closes that pipe
however the process ends, after its exit handlers (which stop the temporary server of a run that
ended normally). The watchdog then sends SIGTERM to every process whose environment carries the
run's mark, and SIGKILL to those still there `GRACE_S` later.

The mark is an environment variable, so it reaches all that is started with it, through fork and
exec, however deep and in whatever process group or session: dvc, the shell and the stage it
runs, the stage's own children, and the temporary server when `textclf run` marks its own
environment before Prefect starts one. Linux only (it reads /proc); elsewhere `mark` does nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

MARK_VARIABLE = "TEXTCLF_RUN_MARK"
# As long as flows.pipeline gives a stage stopped for its timeout: time to exit on its own.
GRACE_S = 10.0
PROC = Path("/proc")

_lock = threading.Lock()
_started: dict[str, Any] = {}  # this process's mark and its watchdog, once started


def mark(env: MutableMapping[str, str]) -> None:
    """Add this process's mark to `env`: whatever is started with `env` ends when this process does.

    Starts this process's watchdog on the first call. Marks already in `env` (a run started by
    another run) stay, so the outer run's watchdog ends this one's processes too.
    """
    if not (PROC / "self" / "environ").exists():
        return
    token = _watchdog()
    marks = env.get(MARK_VARIABLE, "").split()
    if token not in marks:
        env[MARK_VARIABLE] = " ".join([*marks, token])


def _watchdog() -> str:
    """This process's mark; the first call starts the watchdog that waits for this process's end."""
    with _lock:
        if "token" not in _started:
            token = secrets.token_hex(8)
            read, write = os.pipe()  # neither end is inherited by what this process starts later
            # By its file, isolated (-I): it needs the standard library only, whatever the folder holds.
            _started["process"] = subprocess.Popen(
                [sys.executable, "-I", __file__, token],
                stdin=read,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
            os.close(read)
            _started["writer"] = write  # never closed here: its closing at this process's end is the signal
            _started["token"] = token
        return str(_started["token"])


def marked(token: str) -> list[int]:
    """The processes (of this user, alive) whose environment carries `token`, this one excepted."""
    prefix = f"{MARK_VARIABLE}=".encode()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()  # empty for a zombie
        except OSError:  # gone, or another user's
            continue
        for variable in environ.split(b"\0"):
            if variable.startswith(prefix) and token in variable[len(prefix) :].decode(errors="replace").split():
                found.append(int(entry.name))
    return found


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def end_marked(token: str, grace_s: float = GRACE_S) -> None:
    """SIGTERM to every process marked with `token`, SIGKILL to those still there after `grace_s`."""
    told: set[int] = set()
    deadline = time.monotonic() + grace_s
    while (left := marked(token)) and time.monotonic() < deadline:
        _signal([pid for pid in left if pid not in told], signal.SIGTERM)  # also those started meanwhile
        told.update(left)
        time.sleep(0.1)
    _signal(left, signal.SIGKILL)


def main(token: str) -> None:
    """The watchdog: wait until the run's process has ended (its pipe's end), then end what it marked."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    end_marked(token)


if __name__ == "__main__":
    main(sys.argv[1])
