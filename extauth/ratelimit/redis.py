"""Redis storage, standalone or Cluster, chosen by URL; GCRA runs in `lua/gcra.lua`, loaded once.

URL forms:
  redis://[user:password@]host:port[/db]          standalone (`rediss://` for TLS, `unix:///path.sock?db=0`)
  redis+cluster://[user:password@]host:port[,host:port...]   Cluster, the nodes are startup nodes
  rediss+cluster://...                             Cluster over TLS

Standalone: every check of every request in one EVALSHA (one round trip), packed here and sent on a connection
of the storage's own (`ScriptConnection`), not through redis-py's command path and pool: the batcher sends one
call at a time, so one connection suffices, and a call that finds it busy (unbatched use) takes a pooled one.

Cluster: checks are grouped by hash slot, one EVALSHA per slot, issued concurrently, through redis-py's cluster
client; all windows of one key share a slot (`rl:{<key>}:...`), so a request's checks are all-or-nothing per
slot, not across slots.

One entry cannot fail the others: a key the script cannot read fails only its own request (`CheckError`), and
a Cluster slot whose call fails fails only the requests with checks in it.
"""

import asyncio
import hashlib
from collections.abc import Sequence
from importlib import resources
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.retry import Retry

from extauth.ratelimit.model import LimitCheck, LimitOutcome
from extauth.ratelimit.storage import Answer, CheckError, StorageError

GCRA_LUA = resources.files("extauth.ratelimit").joinpath("lua/gcra.lua").read_text()
GCRA_SHA = hashlib.sha1(GCRA_LUA.encode()).hexdigest()  # Redis names scripts by SHA-1
BACKEND_ERRORS = (RedisError, RedisClusterException, OSError)

Placed = tuple[int, int, LimitCheck]  # (request index, check index, check)


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in ("redis+cluster", "rediss+cluster")


def slot_of(check: LimitCheck) -> int:
    return key_slot(check.storage_key.encode())


def script_args(placed: Sequence[Placed], now_ms: int) -> tuple[list[str], list[int | str]]:
    """KEYS and ARGV for one script call; a request boundary wherever the request index changes."""
    keys: list[str] = []
    args: list[int | str] = [now_ms]
    for i, (request, _, check) in enumerate(placed):
        last = i + 1 == len(placed) or placed[i + 1][0] != request
        keys.append(check.storage_key)
        args += [check.limit.limit, check.limit.period_ms, check.cost, int(check.shadow), int(last)]
    return keys, args


def pack_evalsha(sha: str, keys: Sequence[str], args: Sequence[int | str]) -> bytes:
    """`EVALSHA sha numkeys keys... args...` in RESP, as redis-py's `pack_command` writes it, in one pass."""
    parts = [f"*{3 + len(keys) + len(args)}\r\n$7\r\nEVALSHA\r\n${len(sha)}\r\n{sha}\r\n".encode()]
    count = str(len(keys))
    parts.append(f"${len(count)}\r\n{count}\r\n".encode())
    for key in keys:
        data = key.encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    tail = []
    for arg in args:
        text = str(arg)
        tail.append(f"${len(text.encode())}\r\n{text}\r\n")
    parts.append("".join(tail).encode())
    return b"".join(parts)


class ScriptConnection:
    """One connection of the storage's own for the GCRA script: a call packs one EVALSHA and reads one reply, without
    redis-py's pool checkout, per-argument encoding, response callbacks or a task per send. The connection comes
    from the client's pool settings (host, TLS, AUTH, db, connect timeout), reconnects on the next call after any
    error, and the whole call is bounded by one timeout (`bound_seconds`) instead of one per send and per read."""

    def __init__(self, client: Redis, bound_seconds: float | None) -> None:
        settings = {**client.connection_pool.connection_kwargs, "socket_timeout": None}
        self._connection: AbstractConnection = client.connection_pool.connection_class(**settings)
        self._bound_seconds = bound_seconds
        self.busy = False

    async def evalsha(self, keys: Sequence[str], args: Sequence[int | str]) -> list[int]:
        self.busy = True
        try:
            async with asyncio.timeout(self._bound_seconds):
                try:
                    return await self._call(pack_evalsha(GCRA_SHA, keys, args))
                except NoScriptError:  # a restarted or flushed server: load once, then the call again
                    await self._call(self._connection.pack_command("SCRIPT", "LOAD", GCRA_LUA))
                    return await self._call(pack_evalsha(GCRA_SHA, keys, args))
        finally:
            self.busy = False

    async def _call(self, packed: bytes | list[bytes]) -> list[int]:
        """redis-py closes the connection when a send or read fails or is cancelled (our timeout), so a late
        reply can never answer the next call; the next call opens a new one."""
        await self._connection.send_packed_command(packed, check_health=False)
        return await self._connection.read_response()

    async def close(self) -> None:
        await self._connection.disconnect(nowait=True)


#: The script connection abandons a call (and re-opens) after max(this, 4 x the socket timeout). Longer than the
#: limiter's own timeout on purpose: the Checks waiting on a call are answered by their failure modes at
#: `timeout_ms` anyway, while the call, shared by a whole batch, is kept through an event-loop stall (timers
#: fire before the reply that came meanwhile is read): its answer then closes the breaker at once, instead of
#: a discarded call, a reconnect and a full cool-down (measured: ~1 s of failure modes per stall under load).
CALL_BOUND_SECONDS = 1.0

_RETRY_BROKEN_CONNECTION = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


class RedisStorage:
    """`redis.asyncio.Redis` or `RedisCluster` behind the `Storage` interface; backend errors become `StorageError`."""

    def __init__(self, client: Redis | RedisCluster) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.name = "redis-cluster" if self.cluster else "redis"
        self._script = client.register_script(GCRA_LUA)
        self._own: ScriptConnection | None = None
        if isinstance(client, Redis):
            timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
            self._own = ScriptConnection(client, max(CALL_BOUND_SECONDS, 4 * timeout) if timeout else None)

    @classmethod
    def from_url(cls, url: str, timeout_ms: float = 50, connect_timeout_ms: float | None = None,
                 max_connections: int = 64) -> "RedisStorage":
        """Socket timeouts in milliseconds. One immediate retry on a broken connection only: after Redis
        restarts, every pooled connection is dead, and without it each would cost a failed Check and re-open
        the breaker. Timeouts are never retried (the limiter's timeout and breaker decide)."""
        timeouts = {"socket_timeout": timeout_ms / 1000,
                    "socket_connect_timeout": (connect_timeout_ms or timeout_ms) / 1000}
        if not is_cluster_url(url):
            return cls(Redis.from_url(url, retry=_RETRY_BROKEN_CONNECTION, max_connections=max_connections,
                                      **timeouts))
        parts = urlsplit(url)
        nodes = []
        for address in parts.netloc.rpartition("@")[2].split(","):
            host, _, port = address.rpartition(":")
            nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
        auth = {"username": unquote(parts.username) if parts.username else None,
                "password": unquote(parts.password) if parts.password else None}
        client = RedisCluster(startup_nodes=nodes, ssl=parts.scheme == "rediss+cluster", retry=_RETRY_BROKEN_CONNECTION,
                              max_connections=max_connections, **auth, **timeouts)
        return cls(client)

    async def acquire(self, checks: Sequence[LimitCheck], now_ms: int) -> list[LimitOutcome]:
        answer = (await self.acquire_many([checks], now_ms))[0]
        if isinstance(answer, StorageError):
            raise answer
        return answer

    async def acquire_many(self, requests: Sequence[Sequence[LimitCheck]], now_ms: int) -> list[Answer]:
        placed = [(r, j, check) for r, checks in enumerate(requests) for j, check in enumerate(checks)]
        results: list[list[LimitOutcome | None] | StorageError] = [[None] * len(checks) for checks in requests]
        if not placed:
            return results  # type: ignore[return-value]
        if self.cluster:
            by_slot: dict[int, list[Placed]] = {}
            for p in placed:
                by_slot.setdefault(slot_of(p[2]), []).append(p)
            calls = list(by_slot.values())
        else:
            calls = [placed]
        try:
            if self.cluster:
                # Idempotent and locked: concurrent first calls on an uninitialised client (or one that
                # reinitialises after a node error) otherwise race inside redis-py and break connections.
                await self.client.initialize()
            if len(calls) == 1:
                replies: list[list[int] | BaseException] = [await self._run(calls[0], now_ms)]
            else:
                replies = await asyncio.gather(*(self._run(call, now_ms) for call in calls), return_exceptions=True)
        except (*BACKEND_ERRORS, TimeoutError) as error:
            if isinstance(error, RedisConnectionError) and not self.cluster:
                # The server went away: every idle pooled connection is dead too. Drop them now, so the first
                # Checks after Redis returns do not fail one by one on stale sockets and re-open the breaker.
                await self.client.connection_pool.disconnect(inuse_connections=False)
            raise StorageError(f"{self.name}: {type(error).__name__}: {error}") from error
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, BaseException):  # one Cluster slot failed: only the requests with checks in it
                failure = StorageError(f"{self.name}: {type(reply).__name__}: {reply}")
                for r, _, _ in call:
                    results[r] = failure
                continue
            for i, (r, j, check) in enumerate(call):
                answer = results[r]
                if isinstance(answer, StorageError):
                    continue
                raw = reply[4 * i:4 * i + 4]
                if raw[0] < 0:
                    results[r] = CheckError(f"{self.name}: the script could not read {check.storage_key!r}")
                else:
                    answer[j] = LimitOutcome.from_backend(check, raw)
        return results  # type: ignore[return-value]

    async def _run(self, call: Sequence[Placed], now_ms: int) -> list[int]:
        keys, args = script_args(call, now_ms)
        own = self._own
        if own is None or own.busy:
            return await self._script(keys=keys, args=args)
        try:
            return await own.evalsha(keys, args)
        except RedisConnectionError:  # a connection broken since its last call (e.g. Redis restarted): once more
            return await own.evalsha(keys, args)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except BACKEND_ERRORS:
            return False

    async def close(self) -> None:
        if self._own is not None:
            await self._own.close()
        await self.client.aclose()
