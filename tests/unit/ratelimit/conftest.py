"""Real backends for the rate-limit suite: the in-process storage, a redis-server and a 3-node Redis Cluster.

The servers are started once per session; if `redis-server` is missing the tests fail with the install hint
(`make test` installs it) rather than being skipped.
"""

import uuid
from collections.abc import AsyncIterator

import pytest

from extauth.ratelimit.memory import MemoryStorage
from extauth.ratelimit.redis import RedisStorage

BACKENDS = ["memory", "redis", "redis-cluster"]


@pytest.fixture
def key() -> str:
    """A key no other test uses (the Redis servers are shared by the session)."""
    return f"test/{uuid.uuid4().hex[:12]}|sub=alice"


async def open_backend(request: pytest.FixtureRequest, backend: str) -> MemoryStorage | RedisStorage:
    if backend == "memory":
        return MemoryStorage()
    server = request.getfixturevalue("redis_server" if backend == "redis" else "redis_cluster")
    return RedisStorage.from_url(server.url, timeout_ms=2000)


@pytest.fixture(params=BACKENDS)
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[MemoryStorage | RedisStorage]:
    backend = await open_backend(request, request.param)
    yield backend
    await backend.close()


@pytest.fixture(params=["redis", "redis-cluster"])
async def redis_storage(request: pytest.FixtureRequest) -> AsyncIterator[RedisStorage]:
    backend = await open_backend(request, request.param)
    assert isinstance(backend, RedisStorage)
    yield backend
    await backend.close()
