"""The console's one way to the services: their HTTP APIs, with the user's token.

Bank account numbers travel only in request bodies (never in a URL) and are never logged:
this module logs method, service and path, and the path of a claim holds no account data.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.console.config import ConsoleSettings
from services.console.i18n import MESSAGES

log = logging.getLogger(__name__)

Service = str  # "intake" | "review" | "payout"


@dataclass(frozen=True)
class ApiAnswer:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    """The answer's headers (e.g. payout's ``X-Total-Count`` of a filtered list)."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def field_errors(self, lang: str = "en") -> dict[str, str]:
        """The project's error body (``errors: [{field, rule, message}]``) as field →
        message, for showing each message next to its field. ``bank_account.account_number``
        stays dotted; the form names its inputs the same way. In Chinese, rules the
        catalogue knows are said in Chinese (the API speaks English)."""
        errors: dict[str, str] = {}
        if isinstance(self.body, dict):
            for err in self.body.get("errors") or []:
                if isinstance(err, dict):
                    name = str(err.get("field", ""))
                    message = str(err.get("message") or err.get("rule") or "")
                    rule = f"rule.{err.get('rule')}"
                    if lang == "zh" and rule in MESSAGES:
                        message = MESSAGES[rule][0]
                    errors.setdefault(name, message)
        return errors

    @property
    def detail(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("detail") or "")
        return str(self.body)[:300]


class ServiceUnavailable(Exception):
    """A service did not answer (connection refused, timeout)."""


class ApiClient:
    def __init__(self, settings: ConsoleSettings, client: httpx.AsyncClient) -> None:
        self._http = client
        self._base = {
            "intake": settings.intake_url,
            "review": settings.review_url,
            "payout": settings.payout_url,
        }

    async def call(
        self,
        service: Service,
        method: str,
        path: str,
        *,
        token: str | None,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ApiAnswer:
        """``json`` for the APIs' JSON bodies; ``content`` with its ``content_type`` for
        the few that take a file (payout's bank statement, text/csv)."""
        headers: dict[str, str] = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        url = f"{self._base[service]}{path}"
        try:
            r = await self._http.request(
                method, url, headers=headers, json=json, content=content, params=params
            )
        except httpx.HTTPError as exc:
            # Path only: no query (a USCC search) and never a body (bank account).
            log.warning("%s %s %s failed: %s", method, service, path, type(exc).__name__)
            raise ServiceUnavailable(service) from None
        try:
            body: Any = r.json()
        except ValueError:
            body = r.text
        if r.status_code >= 500:
            log.warning("%s %s %s answered %d", method, service, path, r.status_code)
        return ApiAnswer(r.status_code, body, dict(r.headers))


def new_idempotency_key() -> str:
    return str(uuid.uuid4())
