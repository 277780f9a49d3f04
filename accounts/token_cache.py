"""The `token_cache` shortcut: a token string verified once is not verified again in this process.

A client sends the same access token with every request for its lifetime, and checking its
signature and claims again each time was most of the CPU cost of authentication. Only tokens that
passed every check enter the cache (bounded, one per signing key and leeway); their claims come
from memory afterwards, as a fresh copy each time.

It relies on how simplejwt uses its backend: `Token.__init__` decodes through
`TokenBackend.decode` and then checks `exp` itself against this request's clock (`Token.verify` →
`check_exp`), so a cached token still expires on time. A simplejwt release that left the expiry
check to PyJWT alone would let cached tokens live on: the tests pin it
(accounts/tests/test_tokens.py, both with and without the cache). The plain version,
`accounts.tokens.KeyIdTokenBackend.decode`, verifies every time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from types import MappingProxyType
from typing import Any

VERIFIED_TOKENS_CACHED = 4096


class VerifiedTokens:
    """The claims of tokens that passed verification, keyed by the token string."""

    def __init__(self, verify: Callable[[Any], dict[str, Any]]) -> None:
        self._claims = lru_cache(maxsize=VERIFIED_TOKENS_CACHED)(lambda token: MappingProxyType(verify(token)))

    def __call__(self, token: str | bytes) -> dict[str, Any]:
        """Return a copy of the token's claims, verifying it first if it was not verified before."""
        return dict(self._claims(token))

    def cache_info(self) -> Any:
        """Return the cache's hits, misses and size (functools' `cache_info`)."""
        return self._claims.cache_info()
