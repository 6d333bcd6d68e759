"""One trusted issuer's signing keys, fetched over HTTP and cached.

Everything here is async (httpx): fetching keys never blocks the event loop. Concurrent
requests that need a refresh share one fetch (single flight). A kid the cache does not
know triggers at most one refresh per ``min_refresh_interval_s`` — the issuer may have
rotated its key, but a stream of made-up kids must not become a stream of fetches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWKError

log = logging.getLogger(__name__)

# While there are no keys at all (issuer not up yet), try again this soon.
_NO_KEYS_RETRY_S = 1.0


class KeysUnavailable(Exception):
    """The issuer's JWKS could not be fetched and no earlier copy is held."""


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def parse_jwks(document: Any) -> dict[str, PyJWK]:
    """Signature keys by kid. Symmetric ("oct") keys and encryption keys are dropped: a
    JWKS is public, so a MAC key in it would let anyone mint tokens."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK set: no 'keys' list")
    keys: dict[str, PyJWK] = {}
    for raw in document["keys"]:
        if not isinstance(raw, dict) or raw.get("kty") == "oct" or raw.get("use") == "enc":
            continue
        kid = raw.get("kid")
        if not isinstance(kid, str) or not kid:
            # A key without kid cannot be chosen safely when there are several.
            kid = ""
        try:
            keys[kid] = PyJWK(raw)
        except PyJWKError as exc:
            log.warning("JWKS key %r skipped: %s", kid, exc)
    return keys


class JwksCache:
    def __init__(
        self,
        issuer: str,
        client: httpx.AsyncClient,
        *,
        jwks_url: str | None = None,
        max_age_s: float = 3600.0,
        min_refresh_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._client = client
        self._configured_jwks_url = jwks_url
        self._jwks_url = jwks_url
        self._max_age_s = max_age_s
        self._min_refresh_interval_s = min_refresh_interval_s
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._generation = 0
        self._lock = asyncio.Lock()
        self.fetches = 0
        """JWKS fetches attempted (for tests and logs)."""

    async def key(self, kid: str | None) -> PyJWK | None:
        """The key for ``kid`` (None when the issuer does not have it, even after a
        permitted refresh). Raises KeysUnavailable when no keys can be had at all."""
        if self._needs_refresh() or (not self._keys and self._lock.locked()):
            # With no keys yet, a request arriving while the first fetch is in flight
            # waits for it (single flight) instead of answering "no keys".
            await self._refresh(self._generation)
        found = self._lookup(kid)
        if found is None and self._may_refresh_for_unknown_kid():
            log.info("%s: unknown kid %r, fetching the JWKS again", self.issuer, kid)
            await self._refresh(self._generation)
            found = self._lookup(kid)
        if found is None and not self._keys:
            raise KeysUnavailable(f"no signing keys from {self.issuer}")
        return found

    def _lookup(self, kid: str | None) -> PyJWK | None:
        if kid:
            return self._keys.get(kid)
        # A token without kid is accepted only when the issuer has exactly one key.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def _since(self, at: float | None) -> float:
        return float("inf") if at is None else self._clock() - at

    def _needs_refresh(self) -> bool:
        if not self._keys:
            return self._since(self._attempted_at) >= _NO_KEYS_RETRY_S
        if self._since(self._fetched_at) < self._max_age_s:
            return False
        # Stale: refresh, but after a failed attempt keep serving the old keys for a while.
        return self._since(self._attempted_at) >= self._min_refresh_interval_s

    def _may_refresh_for_unknown_kid(self) -> bool:
        return self._since(self._attempted_at) >= self._min_refresh_interval_s

    async def _refresh(self, seen_generation: int) -> None:
        async with self._lock:
            if self._generation != seen_generation:
                return  # another request refreshed while this one waited
            self._attempted_at = self._clock()
            self.fetches += 1
            try:
                url = self._jwks_url or await self._discover()
                keys = parse_jwks(await self._fetch(url))
            except (httpx.HTTPError, ValueError, OSError) as exc:
                self._generation += 1
                log.warning(
                    "%s: JWKS fetch failed (%r); keeping %d key(s)",
                    self.issuer,
                    exc,
                    len(self._keys),
                )
                # A discovered jwks_uri is looked up again next time: it may have moved.
                self._jwks_url = self._configured_jwks_url
                return
            self._keys = keys
            self._fetched_at = self._clock()
            # Counted when the fetch is over: a request that waited for it (whatever it
            # saw before) finds a new generation and uses these keys.
            self._generation += 1

    async def _fetch(self, url: str) -> Any:
        if url.startswith("file://"):
            # Keys handed over as configuration (the embedded stack writes the issuer's
            # public JWKS into its data folder): read off the event loop.
            text = await asyncio.to_thread(Path(url.removeprefix("file://")).read_text)
            return json.loads(text)
        response = await self._client.get(url)
        response.raise_for_status()
        return response.json()

    async def _discover(self) -> str:
        response = await self._client.get(discovery_url(self.issuer))
        response.raise_for_status()
        document = response.json()
        # OIDC Discovery 4.3: the document must name exactly the issuer it was fetched for.
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise ValueError(f"discovery document of {self.issuer} names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise ValueError(f"discovery document of {self.issuer} has no jwks_uri")
        self._jwks_url = jwks_uri
        return jwks_uri
