"""What only the Redis backends do: the script cache, Cluster slots, URL forms, wrapped errors."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from extauth.devstack.redis import RedisCluster, RedisServer, free_port, redis_command
from extauth.devtools.certs import DevCerts, create_dev_certs
from extauth.ratelimit.backends import open_storage
from extauth.ratelimit.model import Limit, LimitCheck
from extauth.ratelimit.redis import GCRA_SHA, RedisStorage, pack_evalsha, slot_of
from extauth.ratelimit.storage import StorageError

pytestmark = pytest.mark.redis

NOW = 1_700_000_000_000


async def test_the_script_is_reloaded_after_script_flush(redis_storage, key):
    """After SCRIPT FLUSH (a restart, a failover) the next call gets NOSCRIPT, reloads the script and succeeds."""
    check = LimitCheck(key, Limit(2, 10))
    await redis_storage.acquire([check], NOW)
    await redis_storage.client.script_flush()
    outcome = (await redis_storage.acquire([check], NOW))[0]
    assert (outcome.allowed, outcome.remaining) == (True, 0)


async def test_every_window_of_a_key_lands_in_the_slot_of_its_hash_tag(redis_cluster: RedisCluster, key):
    """`CLUSTER KEYSLOT` of each window key is the slot of the bare key, and the node owning it holds the key."""
    storage = RedisStorage.from_url(redis_cluster.url, timeout_ms=2000)
    checks = [LimitCheck(key, Limit(2, 10)), LimitCheck(key, Limit(100, 86_400))]
    try:
        await storage.acquire(checks, NOW)
    finally:
        await storage.close()
    port = redis_cluster.ports[0]
    expected = int(redis_command(port, "CLUSTER", "KEYSLOT", key)[1:].strip())
    for check in checks:
        assert int(redis_command(port, "CLUSTER", "KEYSLOT", check.storage_key)[1:].strip()) == expected
        assert slot_of(check) == expected
        holders = [p for p in redis_cluster.ports if redis_command(p, "EXISTS", check.storage_key).startswith(b":1")]
        assert len(holders) == 1
        assert b"-MOVED" not in redis_command(holders[0], "GET", check.storage_key)


async def test_keys_spread_over_the_cluster_nodes(redis_cluster: RedisCluster, key):
    """Different keys go to different slots and, across many keys, to every master."""
    storage = RedisStorage.from_url(redis_cluster.url, timeout_ms=2000)
    checks = [LimitCheck(f"{key}/{i}", Limit(5, 10)) for i in range(30)]
    try:
        await storage.acquire(checks, NOW)
    finally:
        await storage.close()
    per_node = [int(redis_command(p, "DBSIZE")[1:].strip()) for p in redis_cluster.ports]
    assert all(count > 0 for count in per_node)


async def test_on_cluster_all_or_nothing_holds_per_slot_only(redis_cluster: RedisCluster, key):
    """Keys in different slots are separate script calls: a rejection in one slot does not undo the other."""
    storage = RedisStorage.from_url(redis_cluster.url, timeout_ms=2000)
    tight, loose = LimitCheck(key, Limit(1, 10)), LimitCheck(key + "/elsewhere", Limit(10, 10))
    assert slot_of(tight) != slot_of(loose)
    try:
        await storage.acquire([tight], NOW)
        assert [o.allowed for o in await storage.acquire([loose, tight], NOW)] == [True, False]
        assert (await storage.acquire([loose], NOW))[0].remaining == 8
    finally:
        await storage.close()


async def test_a_dead_server_raises_storage_error():
    """Connection refused is a `StorageError`, whatever redis-py raised."""
    storage = open_storage(f"redis://127.0.0.1:{free_port()}/0", timeout_ms=200)
    try:
        with pytest.raises(StorageError, match="redis"):
            await storage.acquire([LimitCheck("k", Limit(1, 1))], NOW)
        assert not await storage.ping()
    finally:
        await storage.close()


async def test_a_dead_cluster_raises_storage_error():
    """Unreachable startup nodes are a `StorageError` too."""
    storage = open_storage(f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}", timeout_ms=200)
    try:
        with pytest.raises(StorageError, match="redis-cluster"):
            await storage.acquire([LimitCheck("k", Limit(1, 1))], NOW)
    finally:
        await storage.close()


@pytest.mark.parametrize(("url", "name"), [
    (None, "memory"), ("", "memory"), ("memory://", "memory"),
    ("redis://127.0.0.1:6379/0", "redis"), ("rediss://user:secret@cache.internal:6380/2", "redis"),
    ("unix:///run/redis.sock?db=1", "redis"), ("redis+cluster://10.0.0.1:7000,10.0.0.2:7000", "redis-cluster"),
])
def test_the_url_chooses_the_backend(url, name):
    """No URL is the embedded in-process backend; the scheme picks standalone or Cluster."""
    assert open_storage(url).name == name


def test_cluster_urls_list_every_startup_node():
    """`redis+cluster://a:1,b:2` gives two startup nodes with their credentials."""
    storage = RedisStorage.from_url("rediss+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001")
    nodes = [(n.host, n.port) for n in storage.client.nodes_manager.startup_nodes.values()]
    assert nodes == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert storage.client.connection_kwargs["password"] == "p@ss"



@dataclass
class SecuredRedis:
    """A redis-server whose data only an ACL user with a password reaches, over TCP, TLS or a Unix socket."""

    server: RedisServer
    tls_port: int
    socket: Path
    certs: DevCerts


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[SecuredRedis]:
    certs = create_dev_certs(tmp_path / "certs")
    tls_port, socket = free_port(), tmp_path / "redis.sock"
    server = RedisServer(tmp_path / "redis", extra_args=[
        "--user", "default", "on", "nopass", "-@all", "+ping",  # PING alone, so start() can wait for it
        "--user", "limiter", "on", ">s3cret", "~*", "+@all",
        "--unixsocket", str(socket), "--unixsocketperm", "700",
        "--tls-port", str(tls_port), "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key), "--tls-ca-cert-file", str(certs.ca_cert),
        "--tls-auth-clients", "no"]).start()
    yield SecuredRedis(server, tls_port, socket, certs)
    server.stop()


def _secured_url(redis: SecuredRedis, transport: str, password: str = "s3cret") -> str:
    if transport == "tcp":
        return f"redis://limiter:{password}@127.0.0.1:{redis.server.port}/3"
    if transport == "tls":
        return (f"rediss://limiter:{password}@localhost:{redis.tls_port}/3"
                f"?ssl_ca_certs={redis.certs.ca_cert}&ssl_cert_reqs=required")
    return f"unix://limiter:{password}@{redis.socket}?db=3"


@pytest.mark.parametrize("transport", ["tcp", "tls", "unix"])
async def test_the_script_connection_keeps_the_url_s_auth_tls_and_database(secured_redis, transport, key):
    """Counted over the storage's own connection with the URL's user, password, TLS and db: the key is in db 3."""
    storage = RedisStorage.from_url(_secured_url(secured_redis, transport), timeout_ms=2000)
    try:
        for remaining in (1, 0):
            outcome = (await storage.acquire([LimitCheck(key, Limit(2, 10))], NOW))[0]
            assert (outcome.allowed, outcome.remaining) == (True, remaining)
        assert await storage.client.exists(LimitCheck(key, Limit(2, 10)).storage_key) == 1
        await storage.client.select(0)
        assert await storage.client.dbsize() == 0
    finally:
        await storage.close()


@pytest.mark.parametrize("transport", ["tcp", "tls", "unix"])
async def test_a_wrong_password_is_a_storage_error(secured_redis, transport, key):
    """AUTH refused on the script connection fails the call as a `StorageError`, like any backend failure."""
    storage = RedisStorage.from_url(_secured_url(secured_redis, transport, password="wrong"), timeout_ms=2000)
    try:
        with pytest.raises(StorageError):
            await storage.acquire([LimitCheck(key, Limit(2, 10))], NOW)
    finally:
        await storage.close()


async def test_a_restarted_server_is_reached_again_on_the_first_call(tmp_path, key):
    """The script connection broken by a restart is re-opened within the same call (one retry), script reloaded."""
    server = RedisServer(tmp_path / "redis").start()
    storage = RedisStorage.from_url(server.url, timeout_ms=2000)
    try:
        await storage.acquire([LimitCheck(key, Limit(2, 10))], NOW)
        server.restart()
        outcome = (await storage.acquire([LimitCheck(key, Limit(2, 10))], NOW))[0]
        assert (outcome.allowed, outcome.remaining) == (True, 1)  # a new server: the bucket starts full
    finally:
        await storage.close()
        server.stop()


_KEYS = st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=40), max_size=6)
_ARGS = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=10).filter(
    lambda text: text.isascii()), max_size=30)


@given(keys=_KEYS, args=_ARGS)
def test_the_packed_evalsha_is_the_command_redis_py_would_send(keys, args):
    """Keys with CR/LF, `$`, `*`, multi-byte UTF-8 and any integer pack byte for byte as redis-py packs them."""
    expected = b"".join(Connection().pack_command("EVALSHA", GCRA_SHA, len(keys), *keys, *args))
    assert pack_evalsha(GCRA_SHA, keys, args) == expected


async def test_a_call_abandoned_at_its_bound_cannot_answer_the_next_one(tmp_path, key):
    """A call to a hung server ends as a `StorageError` at its bound; its reply, sent once the server wakes, never
    answers the next call, which gets its own outcome."""
    server = RedisServer(tmp_path / "redis").start()
    storage = RedisStorage.from_url(server.url, timeout_ms=50)
    try:
        await storage.acquire([LimitCheck(f"{key}-warm", Limit(5, 10))], NOW)
        server.pause()
        try:
            with pytest.raises(StorageError, match="TimeoutError"):
                await storage.acquire([LimitCheck(f"{key}-hung", Limit(5, 10))], NOW)
        finally:
            server.resume()
        outcome = (await storage.acquire([LimitCheck(f"{key}-next", Limit(100, 10))], NOW))[0]
        assert (outcome.allowed, outcome.remaining, outcome.limit.limit) == (True, 99, 100)
    finally:
        await storage.close()
        server.stop()
