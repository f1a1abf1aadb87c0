"""Where the records live and how the database is opened.

The only module that knows which database is behind the store. A location is a file
path (SQLite, the default) or a SQLAlchemy URL (``postgresql+psycopg://...`` for a
clinic's shared server): everything above this module is portable SQLAlchemy Core.

SQLite is opened for durability, not speed: the file (and its ``-wal`` / ``-shm``
companions) is created owner-only (0600) before SQLite touches it, in a 0700
directory; WAL journal, ``synchronous=FULL`` (a commit is on disk before it returns),
foreign keys on, and a busy timeout so a report run during a session waits instead of
failing. Transactions begin explicitly: ``BEGIN IMMEDIATE`` for writes (the write lock
is taken up front, so a read-then-write cannot race another writer) and a plain
``BEGIN`` for reads.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from estim.errors import InputError, RecordsError

ENV_VAR = "ESTIM_DB"
DB_FILENAME = "records.db"
FILE_MODE = 0o600
DIR_MODE = 0o700
BUSY_TIMEOUT_MS = 10_000
_WRITE_OPTION = "estim_write"
_SQLITE_COMPANIONS = ("-wal", "-shm")


def default_location() -> Path:
    """The records file in the user's data directory (e.g. ``~/.local/share/estim``)."""
    return platformdirs.user_data_path("estim", appauthor=False) / DB_FILENAME


def resolve_location(db: str | Path | None) -> str:
    """``--db`` if given, else ``$ESTIM_DB``, else the user's data directory."""
    if db is not None and str(db).strip():
        return str(db)
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return env
    return str(default_location())


def is_url(location: str) -> bool:
    return "://" in location


def sqlite_path(location: str) -> Path | None:
    """The file behind a SQLite location, or None for another database."""
    if not is_url(location):
        return Path(location).expanduser()
    try:
        url = make_url(location)
    except ArgumentError as err:
        raise InputError(f"{location}: not a database URL ({err})") from err
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise InputError(
            f"{location}: the records need a file; give a path (an in-memory database "
            "would lose everything when estim exits)"
        )
    return Path(url.database).expanduser()


def prepare_sqlite_file(path: Path) -> list[str]:
    """Create the database file and its WAL companions owner-only; return warnings.

    Files are created with ``O_EXCL`` and then set to exactly 0600 (independent of
    the umask) before SQLite opens them, so no other account ever sees a readable
    records file, not even for an instant. An existing file is left as it is, but a
    mode that lets others read it is reported.
    """
    if path.exists() and path.is_dir():
        raise InputError(f"{path}: is a directory; give the path of a records file")
    if path.is_symlink() and not path.exists():
        raise InputError(
            f"{path}: is a link to {os.readlink(path)}, which does not exist; "
            "give the path of the records file itself"
        )
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(parents=True, mode=DIR_MODE)
            os.chmod(parent, DIR_MODE)
        for name in (path.name, *(path.name + s for s in _SQLITE_COMPANIONS)):
            _create_owner_only(parent / name)
    except OSError as err:
        raise RecordsError(f"{path}: cannot create the records file ({err.strerror})") from err
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return [
            f"{path} is readable by other accounts (mode {mode:o}); "
            f"restrict it with: chmod 600 {path}"
        ]
    return []


def _create_owner_only(path: Path) -> None:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def open_engine(location: str) -> tuple[Engine, list[str]]:
    """An engine for the location, set up for durability; plus warnings to show."""
    path = sqlite_path(location)
    if path is None:
        try:
            # REPEATABLE READ: a read transaction sees one snapshot (a log being written
            # by a running session verifies consistently), as SQLite's WAL readers do.
            engine = create_engine(location, pool_pre_ping=True, isolation_level="REPEATABLE READ")
            return engine, []
        except (ArgumentError, SQLAlchemyError, ImportError) as err:
            raise InputError(f"{location}: cannot use this database URL ({err})") from err
    warnings = prepare_sqlite_file(path)
    engine = create_engine(f"sqlite+pysqlite:///{path}")
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine, warnings


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the sqlite3 module (it would not BEGIN before
    # a SELECT); _sqlite_on_begin emits BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RecordsError(f"the records database refused WAL mode (got {mode!r})")
        cursor.execute("PRAGMA synchronous = FULL")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def writer(engine: Engine) -> Engine:
    """The same engine, marked so its transactions take the write lock at BEGIN."""
    return engine.execution_options(**{_WRITE_OPTION: True})


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn SQLAlchemy's errors into estim's, naming the operation."""
    try:
        yield
    except SQLAlchemyError as err:
        raise RecordsError(f"records: {what} failed ({err.__class__.__name__}: {err})") from err


def sqlite_settings(engine: Engine) -> dict[str, Any]:
    """The durability settings a connection actually runs with (SQLite only; for checks)."""
    with engine.connect() as conn:
        return {
            "journal_mode": conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
            "synchronous": conn.exec_driver_sql("PRAGMA synchronous").scalar(),
            "foreign_keys": conn.exec_driver_sql("PRAGMA foreign_keys").scalar(),
        }


def append_only_ddl(dialect_name: str, table: str) -> list[str]:
    """Statements that make the database itself refuse UPDATE and DELETE on ``table``.

    The hash chain *detects* an altered event; these triggers *prevent* accidental
    changes through any ordinary client. Unknown dialects get none (the chain still
    detects tampering).
    """
    if dialect_name == "sqlite":
        return [
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END",
        ]
    if dialect_name == "postgresql":
        return [
            "CREATE OR REPLACE FUNCTION estim_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$ "
            "LANGUAGE plpgsql",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION estim_append_only()",
        ]
    return []


def backup_sqlite(path: Path, suffix: str) -> Path:
    """A consistent copy of a SQLite records file (owner-only), e.g. before a migration."""
    import sqlite3
    from contextlib import closing

    target = path.with_name(f"{path.name}.{suffix}.bak")
    target.unlink(missing_ok=True)
    _create_owner_only(target)
    try:
        with closing(sqlite3.connect(path)) as source, closing(sqlite3.connect(target)) as copy:
            source.backup(copy)
    except sqlite3.Error as err:
        raise RecordsError(f"{path}: backup before migration failed ({err})") from err
    return target
