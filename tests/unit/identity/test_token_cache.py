"""TokenCache: bounded, keyed by digest, entries expire at min(exp, inserted + max_ttl)."""

from extauth.clock import ManualClock
from extauth.identity.cache import TokenCache, token_digest
from extauth.identity.principal import Principal


def principal(expires_at: float | None) -> Principal:
    return Principal("alice", "alice", "https://idp.example", "idp", "k1", frozenset(), {}, expires_at)


def test_digest_is_a_fixed_size_hash_not_the_token() -> None:
    """The cache key is a 16-byte blake2b digest, so the raw token is never stored."""
    digest = token_digest("header.payload.signature")
    assert len(digest) == 16
    assert b"payload" not in digest
    assert digest == token_digest("header.payload.signature") != token_digest("header.payload.signaturf")


def test_entry_expires_at_the_token_exp() -> None:
    """A cached principal is served until its `exp` on the injected clock, then dropped."""
    clock = ManualClock()
    cache = TokenCache(10, clock)
    cached = principal(clock.now() + 60)
    cache.put(b"k", cached)
    clock.advance(59)
    assert cache.get(b"k") is cached
    clock.advance(1)
    assert cache.get(b"k") is None
    assert len(cache) == 0


def test_entry_lives_at_most_max_ttl() -> None:
    """A long-lived token is re-verified after max_ttl, so a key removed from the JWKS stops being honoured."""
    clock = ManualClock()
    cache = TokenCache(10, clock, max_ttl=300)
    cache.put(b"k", principal(clock.now() + 86_400))
    clock.advance(299)
    assert cache.get(b"k") is not None
    clock.advance(1)
    assert cache.get(b"k") is None
    cache.put(b"no-exp", principal(None))
    clock.advance(300)
    assert cache.get(b"no-exp") is None


def test_already_expired_principals_are_not_cached() -> None:
    """Putting a principal whose exp has passed (accepted within leeway) stores nothing."""
    clock = ManualClock()
    cache = TokenCache(10, clock)
    cache.put(b"k", principal(clock.now() - 5))
    assert len(cache) == 0


def test_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    """At capacity the entry unused for longest is evicted; a read refreshes an entry's recency."""
    clock = ManualClock()
    cache = TokenCache(2, clock)
    cache.put(b"a", principal(None))
    cache.put(b"b", principal(None))
    assert cache.get(b"a") is not None
    cache.put(b"c", principal(None))
    assert len(cache) == 2
    assert cache.get(b"b") is None
    assert cache.get(b"a") is not None and cache.get(b"c") is not None


def test_capacity_zero_disables_the_cache() -> None:
    """token_cache_size 0 caches nothing."""
    cache = TokenCache(0, ManualClock())
    cache.put(b"k", principal(None))
    assert cache.get(b"k") is None
