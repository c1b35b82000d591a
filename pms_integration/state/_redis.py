"""``redis://host:port/db`` (or ``rediss://`` for TLS): the state store a fleet of machines shares.

Needs the ``redis`` client (``pip install 'pms-integration[redis]'``), imported only when a Redis
URL is opened. Each step of :class:`~pms_integration.state.StateStore` is one Redis command or one
Lua script (atomic on the server), so it behaves exactly like the reference
:class:`~pms_integration.state._memory.MemoryStore`:

* values: ``pms:<namespace>:v:<key>`` (``SET ... PX`` when they expire);
* locks: ``...:l:<key>`` holding the fencing token, with the lease as its ``PX`` expiry;
* fencing counters: ``...:f:<key>`` (``INCR``), kept for the claim's ``ttl``;
* rate budgets: ``...:b:<budget>``, a sorted set of slots scored by the time (in ms, on the
  SERVER's clock, ``TIME``) until which each slot counts, so machines whose clocks disagree still
  share one budget.

Every step is bounded: the connect, the send and the read each get at most
min(the operation's remaining deadline, 5 s), and nothing is retried behind the caller's back.
Any failure (refused, timed out, wrong password, an error reply) becomes a
:class:`~pms_integration.errors.StateStoreError` naming the URL without its password. A dropped
connection is replaced on the next call, so work resumes as soon as Redis is back; the pool also
starts afresh in a forked child (redis-py notices the new process id).

Choices the protocol leaves open, made here:

* ``mark`` sets the pending mark only; it does not extend the lease (as ``MemoryStore``).
* A fencing counter lives as long as its claim's ``ttl``; after that, ``settle`` with the old
  token is refused (``MemoryStore`` may still accept it until its sweep runs). With the default
  ``ttl`` of days this never matters to a booking.
* One Redis endpoint (a server, or a primary behind a fixed address). Redis Cluster is not
  supported: a claim's script touches several keys that a cluster might place apart.
* The server must not evict these keys under memory pressure (``maxmemory-policy noeviction``,
  the default), and should persist them (AOF), or it forgets bookings in flight.
* redis-py >= 6.3 would ask the server for maintenance notices, which may relax timeouts: off.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import math
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._retry import current_deadline
from ..errors import ConfigurationError, StateStoreError
from . import PENDING, Claim

__all__ = ["RedisStore", "MAX_STEP_SECONDS"]

#: The longest any one step may take, whatever the deadline.
MAX_STEP_SECONDS = 5.0
INSTALL_HINT = "the redis:// state store needs the redis client: pip install 'pms-integration[redis]'"

# The seconds the step running in this thread (or task) may still take; read when connecting.
_step_timeout: contextvars.ContextVar[float] = contextvars.ContextVar("pms_redis_step", default=MAX_STEP_SECONDS)

# Lua helpers shared by the scripts: ms <= 0 means "already expired" (as in MemoryStore).
_SETPX = """
local function setpx(key, value, ms)
  if ms > 0 then redis.call('SET', key, value, 'PX', ms) else redis.call('DEL', key) end
end
"""

# KEYS: value, pending, lock, fence. ARGV: lease ms, fence ttl ms.
_CLAIM = """
local result = redis.call('GET', KEYS[1])
if result then return {'result', result} end
local left = redis.call('PTTL', KEYS[3])
if left > 0 then return {'busy', tostring(left)} end
local token = redis.call('INCR', KEYS[4])
redis.call('PEXPIRE', KEYS[4], math.max(tonumber(ARGV[1]), tonumber(ARGV[2])))
redis.call('SET', KEYS[3], token, 'PX', tonumber(ARGV[1]))
return {'held', tostring(token), redis.call('EXISTS', KEYS[2])}
"""

# KEYS: lock, pending. ARGV: token, pending ttl ms.
_MARK = (
    _SETPX
    + """
local held = redis.call('GET', KEYS[1])
if not held or tonumber(held) ~= tonumber(ARGV[1]) then return 0 end
setpx(KEYS[2], '1', tonumber(ARGV[2]))
return 1
"""
)

# KEYS: value, pending, lock, fence. ARGV: token, has result, result, pending, ttl ms.
_SETTLE = (
    _SETPX
    + """
local last = redis.call('GET', KEYS[4])
if not last or tonumber(last) ~= tonumber(ARGV[1]) then return 0 end
local ms = tonumber(ARGV[5])
if ARGV[2] == '1' then setpx(KEYS[1], ARGV[3], ms) end
if ARGV[4] == '1' then setpx(KEYS[2], '1', ms) else redis.call('DEL', KEYS[2]) end
local held = redis.call('GET', KEYS[3])
if held and tonumber(held) == tonumber(ARGV[1]) then redis.call('DEL', KEYS[3]) end
return 1
"""
)

# KEYS: budget. ARGV: limit, window ms, stale ms, a fresh id. Scores: ms on the server's clock.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local window, stale = tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  local slot = ARGV[4] .. ':' .. ARGV[2]
  redis.call('ZADD', KEYS[1], now + stale + window, slot)
  local keep = math.ceil(stale + window) + 1000
  if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
  return {slot, '0'}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = window
if first[2] then wait = tonumber(first[2]) - now end
return {'', tostring(math.max(wait, 1))}
"""

# KEYS: budget. ARGV: slot (its window in ms is the part after the last ':').
_FINISH_SLOT = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local window = tonumber(string.match(ARGV[1], ':(%d+)$'))
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
redis.call('ZADD', KEYS[1], 'XX', now + window, ARGV[1])
local keep = math.ceil(window) + 1000
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return 1
"""


def _ms(seconds: float) -> int:
    """Seconds as whole milliseconds for PX: rounded up, so a positive time never becomes 0."""
    return math.ceil(seconds * 1000) if seconds > 0 else 0


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


def safe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log and show): the one in the
    address (``redis://:pw@host``) and one given as an option (``?password=pw``), which
    redis-py also accepts."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        options = [
            (name, "***" if name.lower() in _SECRET_OPTIONS else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(options, safe="*"))
    return urlunsplit(parts)


#: URL options that carry a secret (redis-py reads ``password`` from the query string too).
_SECRET_OPTIONS = frozenset({"password", "pass", "pwd", "auth", "ssl_password"})


@functools.lru_cache(maxsize=1)
def _connection_classes() -> tuple[type[Any], type[Any]]:
    """redis-py's TCP and TLS connections, taught to connect, send and read within the current
    step's time (the socket's timeout is set before each command is sent; its answer is read
    under the same timeout)."""
    import redis

    def bounded(base: Any) -> type[Any]:
        class Bounded(base):  # type: ignore[misc]
            def _connect(self) -> Any:
                timeout = _step_timeout.get()
                self.socket_connect_timeout = timeout
                self.socket_timeout = timeout
                return super()._connect()

            def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                if self._sock is not None:
                    self._sock.settimeout(_step_timeout.get())
                super().send_packed_command(command, check_health)

        Bounded.__name__ = Bounded.__qualname__ = f"Bounded{base.__name__}"
        return Bounded

    return bounded(redis.Connection), bounded(redis.SSLConnection)


class RedisStore:
    """A :class:`~pms_integration.state.StateStore` on a Redis server (``redis://``, ``rediss://``)."""

    kind = "redis"

    def __init__(self, pool: Any, *, url: str, namespace: str = "") -> None:
        self._pool = pool
        self.url = safe_url(url)
        self.namespace = namespace
        self._prefix = f"pms:{namespace}:" if namespace else "pms:"
        self._errors: tuple[type[BaseException], ...] = _redis_errors()
        # redis-py < 6 wants a command name here (ignored for a plain pool); later ones warn if given
        named = inspect.signature(pool.get_connection).parameters.get("command_name")
        self._connection_args: tuple[str, ...] = ("EVALSHA",) if named and named.default is named.empty else ()

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "") -> RedisStore:
        """A store on the server at ``url`` (``redis://[:password@]host:port/db``, ``rediss://``
        for TLS; ``?namespace=`` is read when ``namespace`` is not given). Nothing is sent until
        the first step; a URL redis-py cannot read is a
        :class:`~pms_integration.errors.ConfigurationError`."""
        try:
            import redis
        except ImportError:
            raise ConfigurationError(INSTALL_HINT, problems=["PMS_STATE_URL"]) from None
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        namespace = namespace or next((v for k, v in reversed(pairs) if k == "namespace"), "")
        bare = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in pairs if k != "namespace"])))
        plain, tls = _connection_classes()
        options: dict[str, Any] = {}
        try:  # redis-py >= 6.3 asks the server for maintenance notices (and relaxes timeouts): not here
            from redis.maint_notifications import MaintNotificationsConfig

            options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
        except ImportError:
            pass
        try:
            pool = redis.ConnectionPool.from_url(
                bare,
                connection_class=tls if parts.scheme.lower() == "rediss" else plain,
                decode_responses=True,
                socket_connect_timeout=MAX_STEP_SECONDS,
                socket_timeout=MAX_STEP_SECONDS,
                health_check_interval=0,
                **options,
            )
            if parts.path.strip("/") and not parts.path.strip("/").isdigit():
                raise ValueError("the path must be the database number")
            pool.connection_class(**pool.connection_kwargs)  # unknown ?options fail here, not at the first step
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"PMS_STATE_URL {safe_url(url)!r} is not a Redis URL redis-py can use "
                f"({type(exc).__name__}); expected redis://[:password@]host:port/db",
                problems=["PMS_STATE_URL"],
            ) from None
        return cls(pool, url=bare, namespace=namespace)

    # -- one bounded round trip --------------------------------------------------------------

    def _budget(self, what: str) -> float:
        """When this step must be over (monotonic), from the deadline and MAX_STEP_SECONDS."""
        deadline = current_deadline()
        seconds = MAX_STEP_SECONDS if deadline is None else min(deadline.remaining(), MAX_STEP_SECONDS)
        if seconds <= 0:
            raise StateStoreError(f"no time left in the operation's deadline to {what}", store=self.url)
        return time.monotonic() + seconds

    def _command(self, what: str, give_up: float, *args: Any) -> Any:
        """Send one command and read its answer, within ``give_up``; StateStoreError otherwise
        (except Redis's NOSCRIPT answer, which the caller handles)."""
        from redis.exceptions import NoScriptError

        left = give_up - time.monotonic()
        if left <= 0:
            raise StateStoreError(f"no time left in the operation's deadline to {what}", store=self.url)
        token = _step_timeout.set(left)
        connection = None
        try:
            connection = self._pool.get_connection(*self._connection_args)
            connection.send_command(*args)
            return connection.read_response()  # the socket's timeout was set to the step's when sending
        except NoScriptError:
            raise
        except self._errors as exc:
            raise StateStoreError(
                f"Redis could not {what} ({type(exc).__name__}: {self._scrub(str(exc))})", store=self.url
            ) from None
        finally:
            if connection is not None:
                self._pool.release(connection)
            _step_timeout.reset(token)

    def _scrub(self, text: str) -> str:
        password = self._pool.connection_kwargs.get("password")
        return text.replace(password, "***") if password else text

    def _script(self, what: str, script: str, keys: list[str], *args: Any) -> Any:
        """Run a Lua script (EVALSHA; EVAL once if the server does not have it yet)."""
        from redis.exceptions import NoScriptError

        give_up = self._budget(what)
        try:
            return self._command(what, give_up, "EVALSHA", _sha(script), len(keys), *keys, *args)
        except NoScriptError:
            return self._command(what, give_up, "EVAL", script, len(keys), *keys, *args)

    def _key(self, kind: str, key: str) -> str:
        return f"{self._prefix}{kind}:{key}"

    # -- values -----------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        value = self._command("read a value", self._budget("read a value"), "GET", self._key("v", key))
        return None if value is None else str(value)

    def put(self, key: str, value: str, ttl: float | None) -> None:
        what = "write a value"
        if ttl is None:
            self._command(what, self._budget(what), "SET", self._key("v", key), value)
        elif _ms(ttl) > 0:
            self._command(what, self._budget(what), "SET", self._key("v", key), value, "PX", _ms(ttl))
        else:
            self.delete(key)

    def delete(self, key: str) -> None:
        self._command("delete a value", self._budget("delete a value"), "DEL", self._key("v", key))

    # -- claims -----------------------------------------------------------------------------

    def _claim_keys(self, key: str) -> list[str]:
        return [self._key("v", key), self._key("v", key + PENDING), self._key("l", key), self._key("f", key)]

    def claim(self, key: str, lease: float, ttl: float) -> Claim:
        found = self._script("take a lock", _CLAIM, self._claim_keys(key), max(_ms(lease), 1), _ms(ttl))
        if found[0] == "result":
            return Claim(key, result=str(found[1]))
        if found[0] == "busy":
            return Claim(key, busy_for=float(found[1]) / 1000)
        return Claim(key, token=int(found[1]), pending=bool(int(found[2])))

    def mark(self, claim: Claim, ttl: float) -> bool:
        if claim.token is None:
            return False
        keys = [self._key("l", claim.key), self._key("v", claim.key + PENDING)]
        return bool(self._script("mark a booking pending", _MARK, keys, claim.token, _ms(ttl)))

    def settle(self, claim: Claim, result: str | None, pending: bool, ttl: float) -> bool:
        if claim.token is None:
            return False
        args = (claim.token, "0" if result is None else "1", result or "", "1" if pending else "0", _ms(ttl))
        return bool(self._script("record an outcome", _SETTLE, self._claim_keys(claim.key), *args))

    # -- budgets ----------------------------------------------------------------------------

    def take_slot(self, budget: str, limit: int, window: float, stale: float) -> tuple[str | None, float]:
        args = (limit, _ms(window), _ms(stale), uuid.uuid4().hex)
        slot, wait = self._script("take a rate-budget slot", _TAKE_SLOT, [self._key("b", budget)], *args)
        return (str(slot), 0.0) if slot else (None, max(float(wait) / 1000, 0.001))

    def finish_slot(self, budget: str, slot: str) -> None:
        self._script("finish a rate-budget slot", _FINISH_SLOT, [self._key("b", budget)], slot)

    def close(self) -> None:
        """Close the pool's connections (a later step opens new ones)."""
        self._pool.disconnect()

    def __repr__(self) -> str:
        where = f", namespace {self.namespace!r}" if self.namespace else ""
        return f"RedisStore({self.url!r}{where})"


def _redis_errors() -> tuple[type[BaseException], ...]:
    """Every failure a Redis step can raise (redis-py's own errors, and socket and TLS errors)."""
    from redis.exceptions import ChildDeadlockedError, RedisError

    return (RedisError, ChildDeadlockedError, OSError, UnicodeError)
