"""The tracking store before MLflow touches it: reachable, writable, really a store, created once.

MLflow retries an unreachable server or an unopenable SQLite file for minutes, job after job, and
writes its tables into any SQLite file it is given. :func:`check_store` answers within seconds
instead: a bounded retry (:data:`ATTEMPTS` tries, :data:`PAUSE_S` apart, :data:`TIMEOUT_S` each)
that says what it tried, and a :class:`StoreError` naming the fix. :func:`store_lock` serializes
the creation of a new SQLite store (and the job claims, :mod:`pipeline.tracking.claims`) across processes
with a ``filelock`` lock on ``<store>.lock`` beside it, so concurrent sweeps never race on the schema
(on Linux an ``flock`` the kernel releases when its process dies: a killed job leaves no stale lock).

The standard library and ``filelock`` only (MLflow and torch are not imported): the analysis uses the
same checks.
"""

from __future__ import annotations

import socket
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from filelock import FileLock

from pipeline.errors import PipelineError
from pipeline.tracking.redact import redact

ATTEMPTS = 3  # tries before a store counts as unreachable
PAUSE_S = 1.0  # between tries
TIMEOUT_S = 5.0  # per try (connect / HTTP request / SQLite busy wait)
SQLITE_PREFIX = "sqlite:///"
SQLITE_HEADER = b"SQLite format 3\x00"
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs"})
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


class StoreError(PipelineError):
    """The tracking store cannot be used; the message says why and what to do."""


class _Retry(Exception):
    """A failure worth another try (refused, timed out, locked)."""


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URI, None for other stores."""
    return Path(uri[len(SQLITE_PREFIX) :]) if uri.startswith(SQLITE_PREFIX) else None


def check_store(uri: str, create: bool) -> None:
    """Raise :class:`StoreError` unless the store at ``uri`` can be used.

    ``create``: the pipeline may create a new SQLite store (so it must be writable); the analysis
    (``create=False``) only reads an existing MLflow store and never creates one.
    """
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite(path, create)
        return
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if scheme in ("http", "https"):
        _retry(lambda: _http_probe(uri), f"tracking server {redact(uri)} is unreachable", _server_hint(uri))
    elif scheme in DATABASE_PORTS:
        _retry(lambda: _tcp_probe(uri, DATABASE_PORTS[scheme]), f"database {redact(uri)} is unreachable",
               "start the database or fix tracking.uri")  # fmt: skip


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<store>.lock`` for SQLite stores (no-op for servers)."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with FileLock(path.with_name(path.name + ".lock")):
        yield


# SQLite -------------------------------------------------------------------------------------


def _check_sqlite(path: Path, create: bool) -> None:
    if path.is_dir():
        raise StoreError(f"tracking.uri points at the folder {path}: use sqlite:///{path}/mlflow.db")
    if not path.exists():
        if not create:
            return  # the analysis says itself that there is no store yet
        _make_folder(path)
    elif path.stat().st_size > 0 and _header(path) != SQLITE_HEADER:
        raise StoreError(
            f"{path} is not an SQLite database (tracking.uri): point tracking.uri at an MLflow store, "
            "or at a new file such as sqlite:///outputs/mlflow.db"
        )
    elif path.stat().st_size > 0 and not MLFLOW_TABLES <= (tables := _tables(path)):
        raise StoreError(
            f"{path} is an SQLite database of another application (tables: {', '.join(sorted(tables)) or 'none'}), "
            "not an MLflow store; MLflow would add its tables to it. Point tracking.uri at an MLflow store, "
            "or at a new file"
        )
    elif not create and path.stat().st_size == 0:
        raise StoreError(f"{path} is an empty file, not an MLflow store: point tracking.uri at the pipeline's store")
    if create:
        _retry(lambda: _sqlite_write_probe(path), f"cannot write the tracking store {path}",
               f"make {path.parent} and {path.name} writable, or point tracking.uri at a writable place")  # fmt: skip


def _sqlite_write_probe(path: Path) -> None:
    """A new store's folder takes a new file; an existing store gives SQLite's write lock."""
    if not path.exists():  # MLflow creates the file itself, under store_lock: no empty file meanwhile
        try:
            tempfile.TemporaryFile(dir=path.parent).close()
        except OSError as exc:
            raise _Retry(f"{exc.strerror or exc}: {path.parent}") from None
        return
    _sqlite_lock_probe(path)


def _make_folder(path: Path) -> None:
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise StoreError(f"tracking.uri={path} lies under {blocker}, which is a file: point tracking.uri at a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create {path.parent} for the tracking store ({exc.strerror or exc}): "
            "point tracking.uri at a writable place"
        ) from None


def _sqlite_lock_probe(path: Path) -> None:
    """Open the file read-write and take SQLite's write lock."""
    try:
        connection = sqlite3.connect(path, timeout=TIMEOUT_S)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.rollback()
        finally:
            connection.close()
    except sqlite3.OperationalError as exc:  # read-only, unopenable, locked: worth a bounded retry
        raise _Retry(f"sqlite3: {exc}") from None
    except sqlite3.DatabaseError as exc:
        message = f"{path} is not a usable SQLite database ({exc}): point tracking.uri at another file"
        raise StoreError(message) from None


def _header(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SQLITE_HEADER))
    except OSError:
        return b""


def _tables(path: Path) -> set[str]:
    """Table names of an SQLite file, read-only."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=TIMEOUT_S)
        try:
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError:
        return set()
    return {name for (name,) in rows}


# servers ------------------------------------------------------------------------------------


def _http_probe(uri: str) -> None:
    """Any HTTP answer counts as reachable; MLflow reports what the server says."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    url = parts._replace(netloc=netloc, path=parts.path.rstrip("/") + "/health", query="").geturl()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as exc:
        raise _Retry(_reason(exc)) from None


def _tcp_probe(uri: str, default_port: int) -> None:
    parts = urlsplit(uri)
    if not parts.hostname:
        return  # a local socket: nothing to probe cheaply
    try:
        socket.create_connection((parts.hostname, parts.port or default_port), timeout=TIMEOUT_S).close()
    except OSError as exc:
        raise _Retry(_reason(exc)) from None


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "reason", None)
    return f"{type(inner or exc).__name__}: {inner or exc}"


def _server_hint(uri: str) -> str:
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"start it (`mlflow server --host {parts.hostname} --port {port} ...`) or fix tracking.uri"


def _retry(probe: Callable[[], None], problem: str, hint: str) -> None:
    """Run ``probe`` up to :data:`ATTEMPTS` times; a :class:`StoreError` that says so when all fail."""
    start = time.monotonic()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            probe()
            return
        except _Retry as exc:
            reason = str(exc)
        if attempt < ATTEMPTS:
            time.sleep(PAUSE_S)
    seconds = time.monotonic() - start
    raise StoreError(f"{problem} ({reason}; tried {ATTEMPTS} times over {seconds:.1f} s): {hint}")
