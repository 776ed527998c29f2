"""Build the worker and serving images with podman, run each, and print their sizes and timings.

    python benchmarks/images.py                                  # serve and worker-cpu on a debootstrap base
    python benchmarks/images.py --images serve,worker-cpu,worker-cuda --no-cache
    python benchmarks/images.py --base python:3.11-slim-bookworm # where a registry of images is reachable

Made for a host without a Docker daemon or Docker Hub (docs/guides/team.md#a-worker-image): podman
with Debian's runc (`--runtime`; crun refuses hybrid cgroups), host networking and ulimits below the
host's. The base is a Debian 12 root file system made once with debootstrap (minbase, plus
ca-certificates; the mirror from the host's apt sources, and the host's own extra CA certificates,
so that a TLS-intercepting proxy the host trusts is trusted inside) and `podman import`ed as
`localhost/debian-bookworm-base`; later runs reuse it (`--rebuild-base` makes it again). A folder of
wheels (`--wheels`, default /opt/wheels when it exists) is mounted into the builds as PIP_FIND_LINKS,
a stand-in for PyTorch's CPU index.

Each image, once built, is run:

- `serve`: as its non-root user, the registry (`--registry`, default ./registry after `make run`)
  mounted read-only; waits until the image's own HEALTHCHECK passes, then POSTs /predict.
- `worker-cpu`: `textclf run` on the demo data in a copy of this working tree (committed in a
  fresh git repository, as a `--clone` deployment's pull step would have it), then the promotion.
- `worker-cuda`: torch imports with CUDA compiled in (no GPU needed; `--run-cuda-demo` runs the
  demo as for worker-cpu).

Any failed step stops the script with its command and the end of its output, exit status 1.
Needs root (debootstrap, rootful podman). Builds use podman's layer cache unless --no-cache.
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
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "localhost/debian-bookworm-base"
SUITE = "bookworm"
# Options every `podman build` and `podman run` here needs on these hosts (DESIGN: operations parts).
HOST_OPTIONS = ["--network", "host", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
# What a run makes (DVC's outputs and lock): a workspace copy starts without them, as a clone would.
RUN_STATE = {"data", "models", "registry", "metrics", "reports", "dvc.lock", "landing", "logs"}


@dataclass(frozen=True)
class Image:
    """One image this script builds: its recipe and build arguments."""

    name: str
    dockerfile: str
    tag: str
    build_args: dict[str, str] = field(default_factory=dict)


IMAGES = {
    "serve": Image("serve", "serve.Dockerfile", "localhost/textclf-serve:latest"),
    "worker-cpu": Image("worker-cpu", "Dockerfile", "localhost/textclf-worker:cpu", {"TORCH": "cpu"}),
    "worker-cuda": Image("worker-cuda", "Dockerfile", "localhost/textclf-worker:cuda", {"TORCH": "cuda"}),
}


@dataclass
class Row:
    """One line of the final table."""

    image: str
    tag: str
    build_s: float | None = None
    size_mb: float | None = None
    run: str = ""
    run_s: float | None = None


class StepFailed(RuntimeError):
    """A command this script ran failed; the message names it and ends with its output."""


def say(message: str) -> None:
    print(f"[images {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    echo: re.Pattern[str] | None = None,
    stdin: int | None = None,
    capture: bool = False,
    timeout: float | None = None,
) -> str:
    """Run `argv`; its output goes to `log` (lines matching `echo` also to the terminal) or is returned.

    Raises:
        StepFailed: a non-zero exit status or a timeout, with the last lines of the output.
    """
    shown = " ".join(argv)
    if not capture and log is None:
        say(f"$ {shown}")
    lines: list[str] = []
    handle = log.open("a", encoding="utf-8") if log else None
    try:
        if handle:
            handle.write(f"$ {shown}\n")
            handle.flush()
        with subprocess.Popen(
            list(argv), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        ) as process:
            assert process.stdout is not None
            started = time.monotonic()
            for line in process.stdout:
                lines.append(line)
                if handle:
                    handle.write(line)
                    handle.flush()
                if (echo is not None and echo.search(line)) or (not capture and log is None):
                    shown_line = line.rstrip()
                    print(f"    {shown_line[:160]}{' ...' if len(shown_line) > 160 else ''}", flush=True)
                if timeout is not None and time.monotonic() - started > timeout:
                    process.kill()
                    raise StepFailed(f"timed out after {timeout:.0f} s: {shown}\n{''.join(lines[-40:])}")
            status = process.wait()
    finally:
        if handle:
            handle.close()
    if status != 0:
        where = f" (whole output: {log})" if log else ""
        raise StepFailed(f"exit status {status}: {shown}{where}\n{''.join(lines[-40:])}")
    return "".join(lines)


class Podman:
    """`podman --runtime RUNTIME ...` with this host's options."""

    def __init__(self, runtime: str) -> None:
        self.base = ["podman", "--runtime", runtime]

    def __call__(
        self,
        *args: str,
        log: Path | None = None,
        echo: re.Pattern[str] | None = None,
        stdin: int | None = None,
        capture: bool = False,
        timeout: float | None = None,
    ) -> str:
        return run([*self.base, *args], log=log, echo=echo, stdin=stdin, capture=capture, timeout=timeout)

    def exists(self, image: str) -> bool:
        return subprocess.run([*self.base, "image", "exists", image], check=False).returncode == 0

    def size_mb(self, image: str) -> float:
        return int(self("image", "inspect", "--format", "{{.Size}}", image, capture=True).strip()) / 1e6


def apt_mirror(root: Path = Path("/etc/apt")) -> tuple[str, str]:
    """(Debian mirror, Debian security mirror) of this host's apt sources (deb822 or one-line)."""
    mirror, security = "", ""
    texts = [path.read_text(encoding="utf-8") for path in sorted((root / "sources.list.d").glob("*.sources"))]
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            enabled = not re.search(r"^Enabled:\s*no", stanza, re.MULTILINE | re.IGNORECASE)
            if not (uris and suites and enabled):
                continue
            names = suites.group(1).split()
            if SUITE in names and not mirror:
                mirror = uris.group(1)
            if f"{SUITE}-security" in names and not security:
                security = uris.group(1)
    listing = root / "sources.list"
    if listing.exists():
        for line in listing.read_text(encoding="utf-8").splitlines():
            found = re.match(r"deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if found and found.group(2) == SUITE and not mirror:
                mirror = found.group(1)
            if found and found.group(2) == f"{SUITE}-security" and not security:
                security = found.group(1)
    return mirror or "http://deb.debian.org/debian", security or "http://deb.debian.org/debian-security"


def pem_blocks(path: Path) -> list[str]:
    """The PEM certificates of a bundle, normalised."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return [
        block.strip() for block in re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S)
    ]


def make_base(podman: Podman, name: str, workdir: Path, host_ca: bool) -> None:
    """Debian 12 minbase by debootstrap, with ca-certificates, imported as `name`."""
    if shutil.which("debootstrap") is None:
        raise StepFailed("no debootstrap: apt-get install -y --no-install-recommends debootstrap")
    mirror, security = apt_mirror()
    rootfs = workdir / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    say(f"base: debootstrap --variant=minbase {SUITE} from {mirror} (about a minute)")
    run(
        ["debootstrap", "--variant=minbase", "--include=ca-certificates", SUITE, str(rootfs), mirror],
        log=workdir / "debootstrap.log",
        echo=re.compile(r"^I: (Retrieving Release|Base system installed)"),
    )
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    sources = "".join(
        f"Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        for uri, suites in ((mirror, f"{SUITE} {SUITE}-updates"), (security, f"{SUITE}-security"))
    )
    (rootfs / "etc/apt/sources.list.d/debian.sources").write_text(sources.rstrip() + "\n", encoding="utf-8")
    if host_ca:
        known = set(pem_blocks(rootfs / "etc/ssl/certs/ca-certificates.crt"))
        extra = [block for block in pem_blocks(Path("/etc/ssl/certs/ca-certificates.crt")) if block not in known]
        for number, block in enumerate(extra, 1):
            (rootfs / f"usr/local/share/ca-certificates/host-{number}.crt").write_text(block + "\n", encoding="utf-8")
        if extra:
            say(f"base: the host's {len(extra)} CA certificate(s) beyond Debian's added (--no-host-ca to leave out)")
            run(["chroot", str(rootfs), "update-ca-certificates"], capture=True)
    for leftover in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    for path in (rootfs / "var/cache/apt").glob("*.bin"):
        path.unlink()
    say(f"base: podman import as {name}")
    with subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        podman(
            "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["bash"]', "-", name,
            stdin=tar.stdout.fileno() if tar.stdout else None, capture=True,
        )  # fmt: skip
        if tar.wait() != 0:
            raise StepFailed("tar of the root file system failed")
    shutil.rmtree(rootfs)


def build(podman: Podman, image: Image, base: str, wheels: Path | None, no_cache: bool, log: Path) -> float:
    """`podman build` of one image; the seconds it took."""
    argv = ["build", *HOST_OPTIONS, "--format", "docker", "-f", str(REPO / image.dockerfile), "-t", image.tag]
    argv += ["--build-arg", f"BASE_IMAGE={base}"]
    for key, value in image.build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    if wheels is not None and "TORCH" in image.build_args:  # torch's CPU build; serving has no torch
        argv += ["-v", f"{wheels}:{wheels}:ro", "--build-arg", f"PIP_FIND_LINKS={wheels}"]
    if no_cache:
        argv.append("--no-cache")
    argv.append(str(REPO))
    say(f"{image.name}: podman {' '.join(argv)}  (log: {log})")
    started = time.monotonic()
    podman(*argv, log=log, echo=re.compile(r"^(STEP \d+/\d+: (FROM|RUN|COPY)|torch |installing torch|COMMIT|Error)"))
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_serve(podman: Podman, image: Image, registry: Path, workdir: Path) -> tuple[str, float]:
    """Serve `registry` read-only as the image's user; wait for the HEALTHCHECK, then POST /predict."""
    if not (registry / "production.json").is_file():
        raise StepFailed(f"no registry with a production model at {registry} (`make run` makes one; or --registry)")
    port, container = free_port(), f"textclf-images-serve-{os.getpid()}"
    subprocess.run([*podman.base, "rm", "-f", container], capture_output=True, check=False)
    started = time.monotonic()
    podman(
        "run", "-d", "--name", container, *HOST_OPTIONS, "-e", f"TEXTCLF_SERVE_PORT={port}",
        "-v", f"{registry.resolve()}:/registry:ro", image.tag, capture=True,
    )  # fmt: skip
    try:
        user = podman("exec", container, "id", "-u", capture=True).strip()
        if user == "0":
            raise StepFailed("the serving image runs as root")
        say(f"serve: running as uid {user} on port {port}; waiting for its HEALTHCHECK")
        deadline = time.monotonic() + 120
        while True:
            check = subprocess.run([*podman.base, "healthcheck", "run", container], capture_output=True, text=True)
            if check.returncode == 0:
                break
            state = podman("inspect", "--format", "{{.State.Status}}", container, capture=True).strip()
            if state != "running" or time.monotonic() > deadline:
                logs = subprocess.run([*podman.base, "logs", container], capture_output=True, text=True)
                raise StepFailed(
                    f"serve: not healthy ({state}; healthcheck: {check.stdout.strip() or check.stderr.strip()})\n"
                    f"{(logs.stdout + logs.stderr)[-4000:]}"
                )
            time.sleep(1)
        healthy_s = time.monotonic() - started
        status = podman("inspect", "--format", "{{.State.Health.Status}}", container, capture=True).strip()
        say(f"serve: healthy after {healthy_s:.1f} s (podman: {status})")
        body = json.dumps({"texts": ["a warm, clever film", "tedious and far too long"]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=body, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise StepFailed(f"serve: POST /predict answered {exc.code}: {exc.read().decode()[:2000]}") from exc
        say(f"serve: POST /predict -> {answer}")
        # The API page and its files come from the image itself (web-assets.lock's Swagger UI), not a CDN.
        for page in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{page}", timeout=30) as response:
                    size = len(response.read())
            except urllib.error.HTTPError as exc:
                raise StepFailed(f"serve: GET {page} answered {exc.code}: {exc.read().decode()[:500]}") from exc
            say(f"serve: GET {page} -> 200, {size:,} bytes")
        try:
            podman("exec", container, "touch", "/registry/.written", capture=True)
        except StepFailed:
            pass
        else:
            raise StepFailed("serve: the registry mount is writable")
        return "healthy; /predict answered", healthy_s
    finally:
        subprocess.run([*podman.base, "rm", "-f", "-t", "5", container], capture_output=True, check=False)


def workspace_copy(workdir: Path) -> Path:
    """This working tree (tracked and untracked, not ignored files) in a fresh git repository."""
    workspace = workdir / "workspace"
    if workspace.exists():
        shutil.rmtree(workspace)

    def ls_files(*flags: str) -> list[str]:
        argv = ["git", "-C", str(REPO), "ls-files", "-z", *flags]
        return [
            name for name in subprocess.run(argv, capture_output=True, check=True).stdout.decode().split("\0") if name
        ]

    # Tracked files, and the untracked ones not ignored (work in progress) except a run's outputs.
    untracked = [name for name in ls_files("--others", "--exclude-standard") if name.split("/")[0] not in RUN_STATE]
    for relative in ls_files("--cached") + untracked:
        source = REPO / relative
        if source.is_file() or source.is_symlink():
            target = workspace / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    identity = {"GIT_AUTHOR_NAME": "images", "GIT_AUTHOR_EMAIL": "images@localhost"}
    env = {**os.environ, **identity, "GIT_COMMITTER_NAME": "images", "GIT_COMMITTER_EMAIL": "images@localhost"}
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "workspace for the image's demo run"]):
        subprocess.run(["git", "-C", str(workspace), *argv], env=env, check=True, capture_output=True)
    return workspace


def run_worker(podman: Podman, image: Image, workdir: Path, demo: bool, log: Path) -> tuple[str, float]:
    """torch's build in the image; with `demo`, `textclf run` on the demo data in a workspace copy."""
    started = time.monotonic()
    probe = "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    found = podman("run", "--rm", *HOST_OPTIONS, image.tag, "python", "-c", probe, capture=True).strip()
    say(f"{image.name}: {found}")
    want_cuda = image.build_args.get("TORCH") == "cuda"
    if ("cuda None" in found) == want_cuda:
        raise StepFailed(f"{image.name}: expected torch {'with' if want_cuda else 'without'} CUDA, got: {found}")
    if not demo:
        return found, time.monotonic() - started
    workspace = workspace_copy(workdir)
    say(f"{image.name}: textclf run in {workspace} (the demo data; several minutes; log: {log})")
    started = time.monotonic()
    mount = f"{workspace}:{workspace}"
    podman(
        "run", "--rm", *HOST_OPTIONS, "-v", mount, "--workdir", str(workspace), image.tag, "textclf", "run",
        log=log, echo=re.compile(r"(Running stage|Flow run .* Finished|Gate: |Promotion: |Error|Traceback)"),
    )  # fmt: skip
    seconds = time.monotonic() - started
    promotion = json.loads((workspace / "reports/promotion.json").read_text(encoding="utf-8"))
    production = json.loads((workspace / "registry/production.json").read_text(encoding="utf-8"))
    summary = {key: promotion[key] for key in ("promoted", "version", "variant", "previous") if key in promotion}
    say(f"{image.name}: promotion {json.dumps(summary)}; production {json.dumps(production)}")
    return f"textclf run: {summary or promotion}", seconds


def table(rows: list[Row], base: str) -> str:
    out = [f"base: {base}", "| image | tag | build s | size MB | run | run s |", "|---|---|---:|---:|---|---:|"]
    for row in rows:
        build_s = f"{row.build_s:.0f}" if row.build_s is not None else ""
        size = f"{row.size_mb:.0f}" if row.size_mb is not None else ""
        run_s = f"{row.run_s:.1f}" if row.run_s is not None else ""
        out.append(f"| {row.image} | {row.tag} | {build_s} | {size} | {row.run} | {run_s} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="serve,worker-cpu", help=f"comma-separated, of {','.join(IMAGES)}")
    parser.add_argument("--base", default=DEFAULT_BASE, help="the base image (default: made by debootstrap, once)")
    parser.add_argument("--rebuild-base", action="store_true", help="make the debootstrap base again")
    parser.add_argument("--no-host-ca", action="store_true", help="leave the host's extra CA certificates out")
    parser.add_argument("--runtime", default="/usr/sbin/runc", help="podman's OCI runtime")
    parser.add_argument("--wheels", type=Path, default=Path("/opt/wheels"), help="wheels for PIP_FIND_LINKS")
    parser.add_argument("--registry", type=Path, default=REPO / "registry", help="what the serving image serves")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/textclf-images"), help="logs, base, runs")
    parser.add_argument("--no-cache", action="store_true", help="build every layer again (for build times)")
    parser.add_argument("--build-only", action="store_true", help="build, do not run")
    parser.add_argument("--no-demo", action="store_true", help="worker images: check torch only, no demo run")
    parser.add_argument("--run-cuda-demo", action="store_true", help="run the demo in the CUDA image too")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.images.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in IMAGES]
    if unknown or not chosen:
        parser.error(f"--images: unknown {unknown}; choose from {', '.join(IMAGES)}")
    if shutil.which("podman") is None:
        print("images: no podman (apt-get install -y --no-install-recommends podman runc)", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("images: needs root (debootstrap, rootful podman)", file=sys.stderr)
        return 1
    args.workdir.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="logs-", dir=args.workdir))
    podman = Podman(args.runtime)
    wheels = args.wheels if args.wheels and args.wheels.is_dir() else None
    rows: list[Row] = []
    try:
        if args.base == DEFAULT_BASE and (args.rebuild_base or not podman.exists(DEFAULT_BASE)):
            started = time.monotonic()
            make_base(podman, DEFAULT_BASE, args.workdir, host_ca=not args.no_host_ca)
            say(f"base: {DEFAULT_BASE} made in {time.monotonic() - started:.0f} s")
        elif args.base == DEFAULT_BASE:
            say(f"base: {DEFAULT_BASE} (made earlier; --rebuild-base to make it again)")
        for name in chosen:
            image = IMAGES[name]
            row = Row(name, image.tag)
            rows.append(row)
            row.build_s = build(podman, image, args.base, wheels, args.no_cache, logs / f"build-{name}.log")
            row.size_mb = podman.size_mb(image.tag)
            say(f"{name}: built in {row.build_s:.0f} s, {row.size_mb:.0f} MB")
            if args.build_only:
                continue
            if name == "serve":
                row.run, row.run_s = run_serve(podman, image, args.registry, args.workdir)
            else:
                demo = not args.no_demo and (name == "worker-cpu" or args.run_cuda_demo)
                row.run, row.run_s = run_worker(podman, image, args.workdir, demo, logs / f"run-{name}.log")
    except StepFailed as exc:
        print(table(rows, args.base), flush=True)
        print(f"images: FAILED: {exc}", file=sys.stderr)
        return 1
    print(table(rows, args.base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
