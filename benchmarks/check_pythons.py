"""Install, run and unit-test a fresh clone on each Python: the table of docs/getting-started.md#install.

For each version: a fresh `git clone` of this repository's HEAD, then, timed one by one,
`make install PYTHON=pythonX.Y`, `make run`, `make test-fast` (which adds the dev lock), and the
sizes of the runtime venv (after install) and of the dev venv (after the tests), and `pip check` of each.
CI stays on one version; this is the check for the others.

    python benchmarks/check_pythons.py                       # 3.11, 3.12, 3.13; TORCH=auto
    python benchmarks/check_pythons.py --pythons 3.12 --torch 3.12=cuda
    python benchmarks/check_pythons.py --serve               # also a serving-only venv per version: its size,
                                                             # and seconds from `textclf serve` to the first answer

A version whose step fails is reported with the step and the end of its output; the script exits
1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    python: str
    torch: str
    seconds: dict[str, float] = field(default_factory=dict)
    sizes_mb: dict[str, int] = field(default_factory=dict)
    tests: str = ""
    failed: str | None = None
    detail: str = ""


def seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def folder_mb(path: Path) -> int:
    return int(subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def step(outcome: Outcome, name: str, command: list[str], cwd: Path, log: Path) -> str | None:
    """Run one timed step; its output goes to `log`. None if it failed (recorded in `outcome`)."""
    print(f"  {outcome.python}: {name}: {' '.join(command)}", flush=True)
    start = time.monotonic()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    outcome.seconds[name] = time.monotonic() - start
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}\n")
    if done.returncode != 0:
        outcome.failed = name
        outcome.detail = (done.stdout + done.stderr)[-1500:]
        print(f"  {outcome.python}: {name} FAILED ({done.returncode}); log: {log}", flush=True)
        return None
    print(f"  {outcome.python}: {name}: {outcome.seconds[name]:.0f} s", flush=True)
    return done.stdout


def pip_check(outcome: Outcome, venv: Path, log: Path) -> bool:
    """`pip check` of one environment: its packages' requirements all met."""
    done = step(
        outcome, f"pip check {venv.name}", [str(venv / "bin" / "python"), "-m", "pip", "check"], venv.parent, log
    )
    outcome.seconds.pop(f"pip check {venv.name}", None)
    return done is not None


def check(python: str, torch: str, workdir: Path, serve: bool) -> Outcome:
    outcome = Outcome(python, torch)
    clone, log = workdir / f"py{python}", workdir / f"py{python}.log"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    make = ["make", f"PYTHON=python{python}", f"TORCH={torch}"]
    if step(outcome, "install", [*make, "install"], clone, log) is None:
        return outcome
    outcome.sizes_mb["runtime venv"] = folder_mb(clone / ".venv")
    if not pip_check(outcome, clone / ".venv", log):
        return outcome
    if step(outcome, "run", [*make, "run"], clone, log) is None:
        return outcome
    tests = step(outcome, "test-fast", [*make, "test-fast"], clone, log)
    if tests is None:
        return outcome
    summary = re.findall(r"=+ (.*(?:passed|failed).*) in [\d.]+s", tests)
    outcome.tests = summary[-1] if summary else "?"
    outcome.sizes_mb["dev venv"] = folder_mb(clone / ".venv")
    if not pip_check(outcome, clone / ".venv", log):
        return outcome
    if serve:
        if step(outcome, "install-serve", [*make, "install-serve"], clone, log) is None:
            return outcome
        outcome.sizes_mb["serve venv"] = folder_mb(clone / ".venv-serve")
        if not pip_check(outcome, clone / ".venv-serve", log):
            return outcome
        outcome.seconds["first answer"] = first_answer(clone / ".venv-serve" / "bin" / "textclf", clone / "registry")
    return outcome


def first_answer(textclf: Path, registry: Path, timeout_s: float = 60) -> float:
    """Seconds from starting `textclf serve` (in an empty folder: no params.yaml) to its first /predict answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "TEXTCLF_REGISTRY": str(registry), "TEXTCLF_SERVE_PORT": str(port)}
    body = json.dumps({"texts": ["a warm, clever film"]}).encode()
    with tempfile.TemporaryDirectory() as empty:
        start = time.monotonic()
        server = subprocess.Popen(
            [str(textclf), "serve"], cwd=empty, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            while time.monotonic() - start < timeout_s:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/predict", body, {"content-type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(request, timeout=5) as answer:
                        if answer.status == 200:
                            return time.monotonic() - start
                except OSError:
                    time.sleep(0.02)
            raise RuntimeError(f"textclf serve gave no answer within {timeout_s} s")
        finally:
            server.terminate()
            server.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythons", default="3.11,3.12,3.13")
    parser.add_argument("--torch", default="", help="VERSION=cpu|cuda|auto pairs, comma-separated (default auto)")
    parser.add_argument("--serve", action="store_true", help="also make a serving-only venv and report its size")
    parser.add_argument("--keep", action="store_true", help="keep the clones (printed)")
    args = parser.parse_args()
    torch = dict(pair.split("=", 1) for pair in args.torch.split(",") if pair)
    workdir = Path(tempfile.mkdtemp(prefix="check-pythons-"))
    shared = REPO.parent / "shared"  # the data sets some tests read, beside each clone as beside this one
    if shared.is_dir():
        (workdir / "shared").symlink_to(shared)
    outcomes = []
    try:
        for python in args.pythons.split(","):
            print(f"Python {python} in {workdir / f'py{python}'}", flush=True)
            outcomes.append(check(python, torch.get(python, "auto"), workdir, args.serve))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    sizes = sorted({name for outcome in outcomes for name in outcome.sizes_mb})
    steps = ["install", "run", "test-fast", *(["install-serve", "first answer"] if args.serve else [])]
    print(
        "\n| Python | TORCH | "
        + " | ".join(f"{s} (s)" for s in steps)
        + " | "
        + " | ".join(f"{s} (MB)" for s in sizes)
        + " | unit tests |"
    )
    print("|---" * (3 + len(steps) + len(sizes)) + "|")
    for outcome in outcomes:
        times = [seconds(outcome.seconds[s]) if s in outcome.seconds else "-" for s in steps]
        mbs = [str(outcome.sizes_mb.get(s, "-")) for s in sizes]
        result = f"FAILED at {outcome.failed}" if outcome.failed else outcome.tests
        print(f"| {outcome.python} | {outcome.torch} | " + " | ".join(times + mbs) + f" | {result} |")
    for outcome in outcomes:
        if outcome.failed:
            print(f"\n{outcome.python} failed at {outcome.failed}:\n{outcome.detail}")
    if args.keep:
        print(f"\nclones kept in {workdir}")
    return 1 if any(outcome.failed for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
