"""``sqlite:///path/to/state.db``: the state store every process on one host shares, no server.

The same steps as :class:`~pms_integration.state._memory.MemoryStore`, kept in one SQLite file:
WAL journal (readers never wait for the writer), ``synchronous=NORMAL``, each read-modify-write
in a ``BEGIN IMMEDIATE`` transaction (one writer at a time, across processes), a busy timeout of
min(the operation's remaining deadline, 5 s), one connection per thread (reopened in a forked
child), the wall clock for expiries (every process on the host shares it). Expired rows are
removed on a fraction of writes. Every SQLite or file-system failure is a
:class:`~pms_integration.errors.StateStoreError` naming the file.

Choices the protocol leaves open:

* the file is opened on a thread's first step, not by the constructor: a path that cannot be used
  is a ``StateStoreError`` then (and from ``pms-integration state check``); a new file is created
  with mode 0600 (it may hold refresh tokens) and its directory as needed; an existing file's mode
  is left alone. URL options other than ``namespace``, and ``:memory:``, are refused;
* a fencing counter goes on counting while its row exists, even past the claim's ``ttl`` (until a
  sweep removes it), so a token is never handed out twice for a key in that time;
* after any failure other than a lock wait the thread's connection is dropped (the next step
  opens the file afresh); ``close()`` closes this thread's connection, and the others reopen.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

from .._retry import current_deadline
from ..errors import ConfigurationError, StateStoreError
from . import PENDING, Claim

__all__ = ["SQLiteStore"]

T = TypeVar("T")

#: No store step waits longer than this for the file's write lock.
MAX_WAIT = 5.0
#: One write in this many also removes expired rows of every key.
SWEEP_ONE_IN = 50

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires REAL,"
    " PRIMARY KEY (ns, key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires) WHERE expires IS NOT NULL",
    # one row per key ever claimed: the last fencing token, its lease (0 once settled), kept until `forget`
    "CREATE TABLE IF NOT EXISTS fence (ns TEXT NOT NULL, key TEXT NOT NULL, token INTEGER NOT NULL,"
    " lease_ends REAL NOT NULL, forget REAL NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS fence_forget ON fence (forget)",
    # a budget's slots: each counts until `until` (taken: + stale + window; finished: + window)
    "CREATE TABLE IF NOT EXISTS slot (ns TEXT NOT NULL, budget TEXT NOT NULL, id TEXT NOT NULL,"
    " until REAL NOT NULL, window REAL NOT NULL, PRIMARY KEY (ns, budget, id)) WITHOUT ROWID",
)

# connections a forked child inherited: never used there, nor closed (a close in the child could
# release the POSIX locks its own new connection holds), only kept from the garbage collector
_inherited: list[sqlite3.Connection] = []


class SQLiteStore:
    """A :class:`~pms_integration.state.StateStore` in one SQLite file, shared by the processes
    and threads of one host."""

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, namespace: str = "", url: str | None = None) -> None:
        given = os.fspath(path)
        if not given or given == ":memory:" or given.startswith("file:"):
            raise ConfigurationError(
                "PMS_STATE_URL sqlite:/// needs a file path (sqlite:///path/to/state.db); use memory:// for "
                "a store in this process only",
                problems=["PMS_STATE_URL"],
            )
        self.path = os.path.abspath(os.path.expanduser(given))
        self.namespace = namespace
        self.url = url if url is not None else f"sqlite:///{given}"
        self._local = threading.local()
        self._generation = 0  # close() bumps it: every thread reopens on its next step

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "") -> SQLiteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        from urllib.parse import parse_qsl, unquote

        scheme, _, rest = url.partition("://")
        path, _, query = rest.partition("?")
        options = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(options) - {"namespace"})
        if scheme.lower() != "sqlite" or not path.startswith("/") or unknown:
            why = f"unknown option(s) {', '.join(unknown)}" if unknown else "three slashes, then the path"
            raise ConfigurationError(
                f"PMS_STATE_URL sqlite:///path/to/state.db expected ({why})", problems=["PMS_STATE_URL"]
            )
        return cls(unquote(path[1:]), namespace=namespace or options.get("namespace", ""), url=url.partition("?")[0])

    # -- running one step -------------------------------------------------------------------------

    def _connection(self, wait: float) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None:
            if local.pid == os.getpid() and local.generation == self._generation:
                return conn
            if local.pid != os.getpid():
                _inherited.append(conn)
            else:
                conn.close()
            local.conn = None
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        with _opening(self.path, wait):
            conn = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
                _use_wal(conn, wait)
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                conn.close()
                raise
        local.conn, local.pid, local.generation = conn, os.getpid(), self._generation
        return conn

    def _run(self, step: Callable[[sqlite3.Connection, float], T], *, write: bool = True) -> T:
        """Run ``step(connection, now)``, in one ``BEGIN IMMEDIATE`` transaction when it writes."""
        deadline = current_deadline()
        wait = MAX_WAIT if deadline is None else min(max(deadline.remaining(), 0.0), MAX_WAIT)
        conn: sqlite3.Connection | None = None
        drop = False
        try:
            conn = self._connection(wait)
            conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            if not write:
                return step(conn, time.time())
            conn.execute("BEGIN IMMEDIATE")
            now = time.time()  # read once the write lock is ours
            out = step(conn, now)
            if random.randrange(SWEEP_ONE_IN) == 0:
                self._sweep(conn, now)
            conn.execute("COMMIT")
            return out
        except (sqlite3.Error, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            if "locked" in reason or "busy" in reason:
                reason += f" (another writer held it for more than {wait:.1f} s)"
            else:  # anything else: the next step opens the file afresh
                drop = True
            raise StateStoreError(f"SQLite file {self.path}: {reason}", store=self.url) from None
        finally:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                if drop:
                    self._local.conn = None
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()

    @staticmethod
    def _sweep(conn: sqlite3.Connection, now: float) -> None:
        conn.execute("DELETE FROM kv WHERE expires <= ?", (now,))
        conn.execute("DELETE FROM fence WHERE forget <= ? AND lease_ends <= ?", (now, now))
        conn.execute("DELETE FROM slot WHERE until <= ?", (now,))

    def _live(self, conn: sqlite3.Connection, key: str, now: float) -> str | None:
        row = conn.execute(
            "SELECT value FROM kv WHERE ns = ? AND key = ? AND (expires IS NULL OR expires > ?)",
            (self.namespace, key, now),
        ).fetchone()
        return None if row is None else str(row[0])

    def _set(self, conn: sqlite3.Connection, key: str, value: str, ttl: float | None, now: float) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO kv (ns, key, value, expires) VALUES (?, ?, ?, ?)",
            (self.namespace, key, value, None if ttl is None else now + ttl),
        )

    def _fence(self, conn: sqlite3.Connection, key: str) -> tuple[int, float, float] | None:
        row = conn.execute(
            "SELECT token, lease_ends, forget FROM fence WHERE ns = ? AND key = ?", (self.namespace, key)
        ).fetchone()
        return None if row is None else (int(row[0]), float(row[1]), float(row[2]))

    # -- values -------------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        return self._run(lambda conn, now: self._live(conn, key, now), write=False)

    def put(self, key: str, value: str, ttl: float | None) -> None:
        self._run(lambda conn, now: self._set(conn, key, value, ttl, now))

    def delete(self, key: str) -> None:
        self._run(lambda conn, now: conn.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (self.namespace, key)))

    # -- claims -------------------------------------------------------------------------------------

    def claim(self, key: str, lease: float, ttl: float) -> Claim:
        def step(conn: sqlite3.Connection, now: float) -> Claim:
            result = self._live(conn, key, now)
            if result is not None:
                return Claim(key, result=result)
            fence = self._fence(conn, key)
            if fence is not None and fence[1] > now:
                return Claim(key, busy_for=fence[1] - now)
            # while the row lives (expired or not) the count goes on: a token is never handed out twice
            token = (fence[0] if fence is not None else 0) + 1
            conn.execute(
                "INSERT OR REPLACE INTO fence (ns, key, token, lease_ends, forget) VALUES (?, ?, ?, ?, ?)",
                (self.namespace, key, token, now + lease, now + max(ttl, lease)),
            )
            return Claim(key, token=token, pending=self._live(conn, key + PENDING, now) is not None)

        return self._run(step)

    def mark(self, claim: Claim, ttl: float) -> bool:
        def step(conn: sqlite3.Connection, now: float) -> bool:
            fence = self._fence(conn, claim.key)
            if claim.token is None or fence is None or fence[0] != claim.token or fence[1] <= now:
                return False
            self._set(conn, claim.key + PENDING, "1", ttl, now)
            return True

        return self._run(step)

    def settle(self, claim: Claim, result: str | None, pending: bool, ttl: float) -> bool:
        def step(conn: sqlite3.Connection, now: float) -> bool:
            fence = self._fence(conn, claim.key)
            if claim.token is None or fence is None or fence[0] != claim.token:
                return False
            if result is not None:
                self._set(conn, claim.key, result, ttl, now)
            if pending:
                self._set(conn, claim.key + PENDING, "1", ttl, now)
            else:
                conn.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (self.namespace, claim.key + PENDING))
            conn.execute("UPDATE fence SET lease_ends = 0 WHERE ns = ? AND key = ?", (self.namespace, claim.key))
            return True

        return self._run(step)

    # -- budgets ------------------------------------------------------------------------------------

    def take_slot(self, budget: str, limit: int, window: float, stale: float) -> tuple[str | None, float]:
        def step(conn: sqlite3.Connection, now: float) -> tuple[str | None, float]:
            where = (self.namespace, budget)
            conn.execute("DELETE FROM slot WHERE ns = ? AND budget = ? AND until <= ?", (*where, now))
            count, first = conn.execute(
                "SELECT COUNT(*), MIN(until) FROM slot WHERE ns = ? AND budget = ?", where
            ).fetchone()
            if count < limit:
                slot = uuid.uuid4().hex
                conn.execute("INSERT INTO slot VALUES (?, ?, ?, ?, ?)", (*where, slot, now + stale + window, window))
                return slot, 0.0
            return None, max((now + window if first is None else float(first)) - now, 0.001)

        return self._run(step)

    def finish_slot(self, budget: str, slot: str) -> None:
        query = "UPDATE slot SET until = ? + window WHERE ns = ? AND budget = ? AND id = ?"
        self._run(lambda conn, now: conn.execute(query, (now, self.namespace, budget, slot)))

    def close(self) -> None:
        """Close this thread's connection; other threads reopen theirs on their next step."""
        self._generation += 1
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            self._local.conn = None
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def __repr__(self) -> str:
        where = f", namespace={self.namespace!r}" if self.namespace else ""
        return f"SQLiteStore({self.path!r}{where})"


def _use_wal(conn: sqlite3.Connection, wait: float) -> None:
    """Put the file in WAL mode (it stays so for every later connection). SQLite's busy handler
    does not cover this switch: several processes opening a new file at once see "database is
    locked" at once, so the switch is tried again until ``wait`` runs out."""
    give_up = time.monotonic() + wait
    pause = 0.002
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > give_up:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


@contextlib.contextmanager
def _opening(path: str, wait: float) -> Iterator[None]:
    """Open connections to ``path`` one at a time across processes (an advisory lock on a file
    beside it). Connections racing to set up a brand-new file (the switch to WAL, the schema)
    saw "disk I/O error" and "database is locked" at once, outside SQLite's busy wait; once a
    connection is open, SQLite's own locking takes over. Without ``fcntl`` (Windows), no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on the platforms CI runs
        yield
        return
    fd = os.open(path + ".open-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        give_up = time.monotonic() + wait
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() + pause > give_up:
                    raise sqlite3.OperationalError("database is locked (another process is opening it)") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
