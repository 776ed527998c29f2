"""Debian's PostgreSQL in a temporary cluster on loopback, for a test's Prefect server (docs/guides/team.md).

`initdb` and the server refuse to run as root: as root the cluster belongs to the `postgres` user the
Debian package made, and each program runs as that user (runuser). Its folder is a temporary one of
its own, not under pytest's (whose parents only their owner may enter), removed at stop.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.seaweedfs import free_port

DEBIAN_BIN = Path("/usr/lib/postgresql")


def _bin_folder() -> Path:
    """The newest installed major version's programs (initdb and pg_ctl are not on PATH in Debian)."""
    versions = sorted(DEBIAN_BIN.glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not versions:
        pytest.fail("no PostgreSQL: `make test` installs Debian's postgresql (apt-get install postgresql)")
    return versions[-1].parent


class PostgreSQL:
    """A cluster with a database `name` owned by a user `name` (trust authentication, loopback only)."""

    def __init__(self, name: str = "prefect"):
        self.folder, self.name, self.port = Path(tempfile.mkdtemp(prefix="textclf-postgres-")), name, free_port()
        self.bin = _bin_folder()
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        """SQLAlchemy's asyncpg URL, as Prefect's PREFECT_API_DATABASE_CONNECTION_URL takes it."""
        return f"postgresql+asyncpg://{self.name}@127.0.0.1:{self.port}/{self.name}"

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.as_owner, str(self.bin / program), *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, f"{program} {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def start(self) -> None:
        if self.as_owner:
            shutil.chown(self.folder, "postgres", "postgres")
        data = str(self.folder / "data")
        self._run("initdb", "-D", data, "-U", self.name, "--auth=trust", "--encoding=UTF8", "--no-instructions")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c max_connections=200"
        self._run("pg_ctl", "-D", data, "-o", options, "-l", str(self.folder / "server.log"), "-w", "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.name, self.name)

    def query(self, sql: str) -> str:
        """One statement's rows, `|`-separated (psql -tA)."""
        args = ("-h", "127.0.0.1", "-p", str(self.port), "-U", self.name, "-d", self.name, "-tAc", sql)
        return self._run("psql", *args).stdout.strip()

    def stop(self) -> None:
        subprocess.run(
            [*self.as_owner, str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(self.folder, ignore_errors=True)
