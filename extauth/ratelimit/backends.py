"""Which store a `rate_limit.backend` URL opens: chosen once, where the server is wired.

The backends are imported when chosen, so the commands that never count (validate, test, explain) do not load
the Redis client.
"""

from extauth.ratelimit.storage import Storage


def open_storage(url: str | None, timeout_ms: float = 50, connect_timeout_ms: float | None = None) -> Storage:
    """`None`, "" or `memory://` → in-process; `redis://`, `rediss://`, `unix://`, `redis+cluster://` → Redis."""
    if not url or url.startswith("memory://"):
        from extauth.ratelimit.memory import MemoryStorage
        return MemoryStorage()
    from extauth.ratelimit.redis import RedisStorage
    return RedisStorage.from_url(url, timeout_ms=timeout_ms, connect_timeout_ms=connect_timeout_ms)
