"""Real Redis for every suite that needs one: a standalone server and a 3-node Cluster, started once per session.

If `redis-server` is missing the tests fail with the install hint (`make test` installs it) rather than skip.
Hypothesis runs without its per-example deadline: a wall-clock limit fails property tests on a loaded 2-core
machine without saying anything about the property; a real hang still stalls the run visibly.
"""

from collections.abc import Iterator

import pytest
from hypothesis import settings

from extauth.devstack.redis import RedisCluster, RedisServer

settings.register_profile("extauth", deadline=None)
settings.load_profile("extauth")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()
