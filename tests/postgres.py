"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temporary folder on a free port, trust auth.

Debian installs the server binaries under /usr/lib/postgresql/<version>/bin (not on PATH); $SOFTPROMPT_PG_BIN
overrides. As root the server runs as the `postgres` user (PostgreSQL refuses to run as root).
`PostgresServer.start()` raises `Unavailable` with the reason when it cannot start; tests skip on it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


class Unavailable(RuntimeError):
    pass


def find_bin() -> Path | None:
    override = os.environ.get("SOFTPROMPT_PG_BIN")
    candidates = [override] if override else sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.bin = find_bin()
        self.folder: Path | None = None
        self.port = 0
        self.prefix: list[str] = []
        self.running = False

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> PostgresServer:
        try:
            import psycopg  # noqa: F401
        except ImportError as err:
            raise Unavailable('psycopg is not installed (pip install "psycopg[binary]")') from err
        if self.bin is None:
            raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found; scripts/setup.sh installs them")
        self.folder = Path(tempfile.mkdtemp(prefix="softprompt-pg-"))
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise Unavailable("running as root without runuser: cannot start PostgreSQL as the postgres user")
            try:
                shutil.chown(self.folder, user="postgres", group="postgres")
            except (LookupError, OSError) as err:
                raise Unavailable(f"no postgres user to run the server as: {err}") from err
            self.prefix = [runuser, "-u", "postgres", "--"]
        data = self.folder / "data"
        done = self._run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        if done.returncode != 0:
            raise Unavailable(f"initdb failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        self.port = free_port()
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = self.folder / "server.log"
        done = self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
        if done.returncode != 0:
            raise Unavailable(f"pg_ctl start failed: {(done.stderr or done.stdout).strip()[-300:]}")
        self.running = True
        return self

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """A fresh, empty database on this server; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.running and self.bin is not None and self.folder is not None:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
            self.running = False
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
