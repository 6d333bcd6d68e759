"""Server-side sessions: the cookie holds only a random session id and its HMAC; tokens,
the user and the CSRF token stay in this process's memory, so no token material is ever
visible to JavaScript or sent back to the browser.

One console process holds its sessions in memory: a restart signs everyone out (they
sign in again with one click at the issuer). Several console processes behind a load
balancer would need a shared store — not needed for one console at one origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.auth.caller import Caller

COOKIE = "claimflow_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
MAX_SESSIONS = 10_000


@dataclass
class PendingLogin:
    """Between the redirect to the issuer and the callback (RFC 7636, OIDC nonce)."""

    state: str
    nonce: str
    code_verifier: str
    next_path: str
    started_at: float


@dataclass
class Session:
    sid: str
    csrf: str
    created_at: float
    lang: str = "zh"
    caller: Caller | None = None
    access_token: str | None = None
    id_token: str | None = None
    token_expires_at: float = 0.0
    pending: PendingLogin | None = None
    flash: list[str] = field(default_factory=list)

    def signed_in(self, now: float) -> bool:
        return (
            self.caller is not None
            and self.access_token is not None
            and (now < self.token_expires_at)
        )


class SessionStore:
    def __init__(self, secret: str, *, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self._key = hashlib.sha256(("claimflow-console-session:" + secret).encode()).digest()
        self._ttl_s = ttl_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def _mac(self, sid: str) -> str:
        return hmac.new(self._key, sid.encode("ascii"), hashlib.sha256).hexdigest()

    def cookie_value(self, session: Session) -> str:
        return f"{session.sid}.{self._mac(session.sid)}"

    def load(self, cookie: str | None) -> Session | None:
        if not cookie or cookie.count(".") != 1 or len(cookie) > 200:
            return None
        sid, mac = cookie.split(".")
        if not sid.isascii() or not hmac.compare_digest(mac, self._mac(sid)):
            return None
        session = self._sessions.get(sid)
        if session is None or self._clock() - session.created_at > self._ttl_s:
            self._sessions.pop(sid, None)
            return None
        return session

    def new(self, lang: str = "zh") -> Session:
        self._evict()
        session = Session(
            sid=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            created_at=self._clock(),
            lang=lang,
        )
        self._sessions[session.sid] = session
        return session

    def rotate(self, old: Session) -> Session:
        """A fresh id (and CSRF token) at sign-in: a session id planted before sign-in
        (session fixation) is worth nothing after it."""
        self._sessions.pop(old.sid, None)
        return self.new(old.lang)

    def drop(self, session: Session) -> None:
        self._sessions.pop(session.sid, None)

    def _evict(self) -> None:
        now = self._clock()
        if len(self._sessions) < MAX_SESSIONS:
            return
        for sid, s in list(self._sessions.items()):
            if now - s.created_at > self._ttl_s or (s.caller is None and now - s.created_at > 600):
                del self._sessions[sid]
        if len(self._sessions) >= MAX_SESSIONS:
            # Still full: anonymous visitors (public status page) are dropped oldest first
            # rather than letting memory grow without bound.
            anonymous = sorted(
                (s for s in self._sessions.values() if s.caller is None),
                key=lambda s: s.created_at,
            )
            for s in anonymous[: len(anonymous) // 2 + 1]:
                del self._sessions[s.sid]


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf, presented or "")
