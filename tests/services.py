"""Real services for the scale-out tests: a PostgreSQL server and an ``mlflow server`` backed by it.

:func:`postgres_server` runs Debian's ``postgresql`` (``initdb`` + ``pg_ctl``) in a temporary folder on a
free loopback port. PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` system user
(``runuser -u postgres --``, or ``su postgres`` where runuser is missing); as any other user it runs as
that user, no sudo needed. Clients get the password from a ``PGPASSFILE`` (libpq's password file), so it
is in no URI, command line or environment.

:func:`tracking_server` runs ``mlflow server`` on 127.0.0.1 over a database URI, with artifacts served
through the server into a folder (``--artifacts-destination``), optionally behind MLflow's basic-auth
app (clients authenticate with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``).

Both are context managers that stop their processes and delete their folders on exit, also when the
body or the start-up failed.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.ui import free_port, healthy, stop

HOST = "127.0.0.1"
START_S = 60.0  # PostgreSQL start-up
SERVER_START_S = 120.0  # mlflow server start-up (imports, schema migrations)
SERVICE_USER = "postgres"  # Debian's postgresql package creates it


def postgres_bin() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``: Debian's newest ``/usr/lib/postgresql/N/bin``, else PATH's."""
    debian = [folder for folder in Path("/usr/lib/postgresql").glob("*/bin") if (folder / "initdb").exists()]
    if debian:
        return max(debian, key=lambda folder: int(re.sub(r"\D", "", folder.parent.name) or 0))
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def missing_postgres() -> str | None:
    """Why :func:`postgres_server` cannot run here (None when it can)."""
    if postgres_bin() is None:
        return "no PostgreSQL server binaries (initdb): run scripts/setup-system.sh (Debian's postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
        except KeyError:
            return f"running as root but there is no {SERVICE_USER!r} user to run PostgreSQL as"
    return None


def _as_service_user(command: list[str]) -> list[str]:
    """``command`` run as the ``postgres`` user when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVICE_USER, "--", *command]
    return ["su", SERVICE_USER, "-s", "/bin/sh", "-c", shlex.join(command)]


@dataclass(frozen=True)
class Postgres:
    """A running server: its port, its superuser and password, and the password file clients use."""

    bin: Path
    port: int
    user: str
    password: str
    passfile: Path
    host: str = HOST

    def uri(self, database: str, with_password: bool = False) -> str:
        """A SQLAlchemy URI (psycopg 3 driver); without the password libpq reads it from ``PGPASSFILE``."""
        secret = f":{self.password}" if with_password else ""
        return f"postgresql+psycopg://{self.user}{secret}@{self.host}:{self.port}/{database}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client process: where libpq finds the password."""
        return {"PGPASSFILE": str(self.passfile)}

    def _client(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), "-h", self.host, "-p", str(self.port), "-U", self.user, *args]
        return subprocess.run(command, env={**os.environ, **self.env}, capture_output=True, check=True, timeout=60)

    def create_database(self, name: str) -> None:
        self._client("createdb", name)

    def dump(self, database: str) -> bytes:
        """Everything stored in ``database`` (schema and rows), as ``pg_dump`` writes it."""
        return self._client("pg_dump", "--no-owner", database).stdout


@contextmanager
def postgres_server(user: str = "mlflow", password: str | None = None) -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster on 127.0.0.1 (password auth), stopped and deleted on exit."""
    reason = missing_postgres()
    if reason:
        raise RuntimeError(reason)
    binaries = postgres_bin()
    assert binaries is not None
    password = password or "pg-" + secrets.token_hex(12)
    folder = Path(tempfile.mkdtemp(prefix="cnp-postgres-"))  # in /tmp: the postgres user must reach it
    data, log = folder / "data", folder / "server.log"
    started = False
    try:
        pwfile = folder / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVICE_USER)
            for path in (folder, pwfile):
                os.chown(path, account.pw_uid, account.pw_gid)
        folder.chmod(0o700)
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"]  # fmt: skip
        _run(_as_service_user(initdb), "initdb")
        pwfile.unlink()

        port = free_port()
        options = f"-p {port} -k {folder} -c listen_addresses={HOST} -c fsync=off -c full_page_writes=off"
        start = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                 "-w", "-t", str(int(START_S)), "start"]  # fmt: skip
        started = True
        _run(_as_service_user(start), "pg_ctl start", log)

        passfile = folder / "pgpass"  # owned by us (the client), mode 0600 as libpq requires
        passfile.write_text(f"{HOST}:{port}:*:{user}:{password}\n")
        passfile.chmod(0o600)
        yield Postgres(binaries, port, user, password, passfile)
    finally:
        if started:
            _stop_postgres(binaries, data)
        shutil.rmtree(folder, ignore_errors=True)


def _stop_postgres(binaries: Path, data: Path) -> None:
    """``pg_ctl stop -m immediate``; SIGKILL to the postmaster when that did not end it."""
    command = [str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"]
    try:
        subprocess.run(_as_service_user(command), capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        pass
    pid_file = data / "postmaster.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError, IndexError):
            pass


def _run(command: list[str], what: str, log: Path | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=START_S + 30)
    if result.returncode != 0:
        detail = result.stdout + result.stderr + (_tail(log) if log else "")
        raise RuntimeError(f"{what} failed ({result.returncode}):\n{detail[-4000:]}")


# mlflow server ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackingServer:
    """A running ``mlflow server``: its URL, its artifact folder and what a client needs to log in."""

    url: str
    folder: Path  # its working folder: log, basic-auth user store
    artifacts: Path  # --artifacts-destination
    client_env: dict[str, str] = field(default_factory=dict)  # MLFLOW_TRACKING_USERNAME / _PASSWORD


@contextmanager
def tracking_server(
    backend_uri: str,
    folder: Path,
    env: dict[str, str] | None = None,
    admin_password: str | None = None,
) -> Iterator[TrackingServer]:
    """``mlflow server`` on 127.0.0.1 over ``backend_uri``, artifacts served into ``folder/artifacts``.

    The store URI goes in through ``MLFLOW_BACKEND_STORE_URI`` (not the command line); ``env`` adds the
    database client's settings (``PGPASSFILE``). With ``admin_password`` the server runs MLflow's
    basic-auth app (user store ``folder/basic_auth.db``) and clients log in as ``admin``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = folder / "artifacts"
    port = free_port()
    url = f"http://{HOST}:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(port), "--workers", "1",
        "--artifacts-destination", str(artifacts),
    ]  # fmt: skip
    environment = {
        **os.environ,
        **(env or {}),
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no huey job consumers: nothing here uses them
        "PYTHONUNBUFFERED": "1",
    }
    client_env: dict[str, str] = {}
    if admin_password is not None:
        command += ["--app-name", "basic-auth"]
        environment["MLFLOW_AUTH_ADMIN_PASSWORD"] = admin_password  # read once, to create the admin user
        environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
        client_env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": admin_password}
    log_path = folder / "mlflow-server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=folder, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {SERVER_START_S:.0f} s:\n{_tail(log_path)}")
            time.sleep(0.5)
        yield TrackingServer(url, folder, artifacts, client_env)
    finally:
        stop(process)


def _tail(path: Path | None, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path and path.exists() else ""
