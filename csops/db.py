"""Open the SQLite database the one safe way, and write to it in short IMMEDIATE transactions.

Every connection runs in WAL mode with a busy timeout and foreign keys on. Writes go through
:func:`write`, which starts with ``BEGIN IMMEDIATE``: a deferred transaction that later upgrades
to a write lock fails at once with SQLITE_BUSY under overlap, while an immediate one waits out
the busy timeout. Schema changes are applied on open (:mod:`csops.migrations`).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from csops.errors import ConfigError, CsopsError


class DatabaseError(CsopsError):
    code = "database_error"


# CPython's sqlite3 (3.11) binds int, float and str directly but sends every ``None`` through
# its adapter lookup, which fails twice with a formatted AttributeError before binding NULL:
# ~2,000 CPU instructions per None, 5 % of an import's writer (orders hold a dozen NULL
# columns each). An adapter registered for NoneType is found by one dict lookup instead;
# ``{}.get`` is a C function that returns None for any key, so None is still bound as NULL.
sqlite3.register_adapter(type(None), {}.get)


def connect(
    path: str | os.PathLike[str],
    *,
    synchronous: str = "NORMAL",
    busy_timeout_ms: int = 30000,
    migrate: bool = True,
    readonly: bool = False,
) -> sqlite3.Connection:
    """Open (creating if needed) the database at ``path``, migrated to the latest schema."""
    p = Path(path)
    if not readonly:
        try:
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the database folder: {exc.strerror}", file=str(p.parent)
            ) from None
    created = not p.exists()
    try:
        if readonly:
            conn = sqlite3.connect(
                f"file:{p}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
        else:
            conn = sqlite3.connect(str(p), isolation_level=None, check_same_thread=False)
        if created and not readonly:
            os.chmod(p, 0o600)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not readonly:
            mode = _set_wal(conn, busy_timeout_ms)
            if mode.lower() != "wal":
                raise DatabaseError(f"cannot switch to WAL mode (got {mode})", file=str(p))
        conn.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'FULL' else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(f"cannot open database: {exc}", file=str(p)) from None
    if migrate and not readonly:
        from csops.migrations import migrate as run_migrations

        run_migrations(conn)
        # an import killed midway left indexes set aside: rebuild them once its process is gone
        # (busy or read-only: the next connection, or the next import, does it)
        with suppress(sqlite3.Error):
            restore_deferred_indexes(conn)
    return conn


def _set_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> str:
    """Switch to WAL, retrying: SQLite may answer SQLITE_BUSY at once, without its busy handler,
    while another connection is creating or switching the same fresh file."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.005
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


@contextmanager
def write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One short write transaction: ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


@contextmanager
def background_checkpoints(
    conn: sqlite3.Connection,
    *,
    every: float = 0.05,
    restart_pages: int = 4_000,
    max_pages: int = 20_000,
) -> Iterator[None]:
    """Checkpoint the WAL from a helper thread while a long write loop runs on ``conn``.

    SQLite's automatic checkpoint runs inside whichever COMMIT crosses the threshold: that
    writer stalls while pages are copied into the database file and both files are fsynced
    (measured: 0.15-0.2 ms per delivered message, a fifth of an SMTP exchange). SQLite's own
    advice for such loops is to turn the automatic checkpoint off and checkpoint from another
    thread: a PASSIVE checkpoint never blocks the writer, and Python's sqlite3 releases the
    GIL while SQLite works. Durability is unchanged (a commit is in the WAL either way); a
    run killed meanwhile leaves a longer WAL that the next connection checkpoints.

    A passive checkpoint that runs while the writer appends never ends with every frame
    copied, so the writer never starts the WAL over and the file grows (135 MB for 3,000
    messages). Once the WAL holds ``restart_pages`` frames the helper asks for a RESTART
    checkpoint: it waits for the writer's current transaction, copies the few frames the
    passive ones left, and lets the next commit start the WAL from the beginning — a short
    pause of the writer every few hundred messages. Should the helper fall behind anyway, the
    writer checkpoints itself once the WAL passes ``max_pages``.
    """
    row = conn.execute("PRAGMA database_list").fetchone()
    path = row[2] if row else ""
    previous = int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    if not path or previous <= 0 or conn.in_transaction:
        yield
        return
    stop = threading.Event()

    def checkpointer() -> None:
        helper = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            helper.execute("PRAGMA busy_timeout = 2000")
            while not stop.wait(every):
                try:
                    frames = helper.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
                    if frames >= restart_pages:
                        helper.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                except sqlite3.Error:
                    continue  # busy or locked: the next turn (or the writer) does it
        finally:
            helper.close()

    thread = threading.Thread(target=checkpointer, name="csops-checkpoint", daemon=True)
    conn.execute(f"PRAGMA wal_autocheckpoint = {int(max_pages)}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        conn.execute(f"PRAGMA wal_autocheckpoint = {previous}")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def integrity_ok(conn: sqlite3.Connection) -> bool:
    return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def backup(conn: sqlite3.Connection, dest: str | os.PathLike[str]) -> Path:
    """A consistent copy: ``VACUUM INTO`` a temporary name, integrity-check it, then rename.

    A partial copy only ever exists under the temporary name, so anything found under the final
    name is a whole, checked snapshot.
    """
    final = Path(dest).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    _sweep_dead_partials(final)
    if tmp.exists():
        tmp.unlink()
    conn.execute("VACUUM INTO ?", (str(tmp),))
    check = sqlite3.connect(str(tmp))
    try:
        result = check.execute("PRAGMA integrity_check").fetchone()[0]
        check.execute("PRAGMA journal_mode = DELETE")
    finally:
        check.close()
    if result != "ok":
        tmp.unlink(missing_ok=True)
        raise DatabaseError(f"backup failed its integrity check: {result}", file=str(final))
    os.chmod(tmp, 0o600)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not reaped, does not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _sweep_dead_partials(final: Path) -> None:
    """Remove partial copies left by backups that were killed (their pid no longer runs)."""
    for partial in final.parent.glob(f".{final.name}.*.tmp*"):
        pid, _, rest = partial.name[len(final.name) + 2 :].partition(".tmp")
        if rest not in ("", "-journal", "-wal", "-shm"):
            continue
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        if not pid_alive(int(pid)):
            partial.unlink(missing_ok=True)


# ---------------------------------------------------------------- bulk loads

_OWNED: set[str] = set()  # run ids whose index deferrals this process holds


def defer_indexes(
    conn: sqlite3.Connection, tables: tuple[str, ...], run_id: str, now: str
) -> list[str]:
    """Drop the non-unique secondary indexes of ``tables`` for a bulk load; returns their names.

    Building an index once over loaded rows (a sort) is far cheaper than maintaining it row by
    row. Each dropped index is recorded in ``deferred_indexes`` in the same transaction as its
    DROP, so a loader killed before :func:`restore_deferred_indexes` leaves the record behind:
    the next connection that finds its owner dead (or the next import) rebuilds them. Unique
    indexes stay: they enforce keys. Readers meanwhile get the same answers, only slower.
    """
    host = socket.gethostname()
    names: list[str] = []
    _OWNED.add(run_id)
    with write(conn):
        for table in tables:
            for _seq, name, unique, origin, *_ in conn.execute(
                f"PRAGMA index_list({table})"
            ).fetchall():
                if unique or origin != "c":
                    continue
                sql = conn.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
                ).fetchone()[0]
                conn.execute(
                    "INSERT OR REPLACE INTO deferred_indexes (name, tbl, sql, owner_pid, "
                    "owner_host, run_id, dropped_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, table, sql, os.getpid(), host, run_id, now),
                )
                conn.execute(f'DROP INDEX "{name}"')
                names.append(name)
    return names


def _owner_alive(pid: int, host: str, run_id: str | None) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell from here: the next import on that host rebuilds them
    if pid == os.getpid():
        return run_id in _OWNED
    return pid_alive(pid)


def restore_deferred_indexes(
    conn: sqlite3.Connection, *, run_id: str | None = None, force: bool = False
) -> list[str]:
    """Rebuild indexes set aside by :func:`defer_indexes`; returns the names rebuilt.

    With ``run_id``: that run's (the loader finishing). With ``force``: all of them (a new
    loader holding the job lock knows no other is running). Otherwise only those whose loader
    process is dead (every :func:`connect` checks this, so a killed import heals itself).
    """
    try:
        pending = conn.execute(
            "SELECT name, owner_pid, owner_host, run_id FROM deferred_indexes"
        ).fetchall()
    except sqlite3.OperationalError:
        return []  # an unmigrated database: nothing can have been deferred
    if not pending:
        return []

    def chosen(row: Any) -> bool:
        if force:
            return True
        if run_id is not None:
            return row[3] == run_id
        return not _owner_alive(row[1], row[2], row[3])

    if not any(chosen(r) for r in pending):
        return []
    rebuilt: list[str] = []
    with write(conn):  # read again under the write lock: another process may have restored
        for row in conn.execute(
            "SELECT name, owner_pid, owner_host, run_id, sql FROM deferred_indexes"
        ).fetchall():
            if not chosen(row):
                continue
            present = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (row[0],)
            ).fetchone()
            if present is None:
                conn.execute(row[4])
                rebuilt.append(row[0])
            conn.execute("DELETE FROM deferred_indexes WHERE name = ?", (row[0],))
    if run_id is not None:
        _OWNED.discard(run_id)
    return rebuilt
