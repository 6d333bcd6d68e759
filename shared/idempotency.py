"""Idempotency-Key for POSTs: a repeated request gets the first response, once.

Each service keeps the keys in its own schema (table ``idempotency_keys``: key, request
hash, status code, response), written in the transaction of the change itself, so a
stored response exists exactly when the change committed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared import problems
from shared.db import DbConnection
from shared.messaging.after_commit import after_commit_scope
from shared.problems import problem_body
from shared.unit_of_work import UnitOfWork, UnitOfWorkFactory

Work = Callable[[DbConnection], Awaitable[tuple[int, dict[str, Any]]]]
UnitOfWorkWork = Callable[[UnitOfWork], Awaitable[tuple[int, dict[str, Any]]]]

HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class Response:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def request_hash(method: str, path: str, body: Any) -> str:
    canonical = json.dumps([method, path, body], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


KEY_REUSED_STATUS = 422
KEY_REUSED = problem_body(
    "Idempotency-Key reused with a different request",
    f"header.{HEADER}",
    "idempotency_key_reused",
    "this key was used for another request; use a new key",
)


async def respond(
    conn: DbConnection, work: Work, *, idempotency_key: str | None, fingerprint: str
) -> Response:
    """Runs ``work`` in one transaction. With an Idempotency-Key, the first response is
    stored with the request's hash in the same transaction: a repeat with the same body
    gets that response (a concurrent repeat waits on the key's row until the first
    commits), a repeat with another body gets a 422 (not stored). Refusals (4xx, the
    project's one hierarchy in shared/problems.py) are stored too; the refused work
    itself leaves nothing behind (a savepoint)."""
    async with conn.transaction():
        if idempotency_key is not None:
            fresh = await conn.fetchval(
                """INSERT INTO idempotency_keys (idempotency_key, request_hash)
                   VALUES ($1, $2) ON CONFLICT (idempotency_key) DO NOTHING RETURNING true""",
                idempotency_key,
                fingerprint,
            )
            if not fresh:
                row = await conn.fetchrow(
                    """SELECT request_hash, status_code, response FROM idempotency_keys
                       WHERE idempotency_key = $1""",
                    idempotency_key,
                )
                assert row is not None and row["status_code"] is not None
                if row["request_hash"] != fingerprint:
                    return Response(KEY_REUSED_STATUS, KEY_REUSED)
                return Response(row["status_code"], json.loads(row["response"]), replayed=True)
        try:
            async with conn.transaction():
                status_code, body = await work(conn)
        except problems.Refusal as refusal:
            status_code, body = refusal.status_code, refusal.body()
        if idempotency_key is not None:
            await conn.execute(
                """UPDATE idempotency_keys SET status_code = $2, response = $3::jsonb
                   WHERE idempotency_key = $1""",
                idempotency_key,
                status_code,
                json.dumps(body, default=str),
            )
    return Response(status_code, body)


async def respond_in_unit_of_work(
    uows: UnitOfWorkFactory,
    pool: asyncpg.Pool,
    work: UnitOfWorkWork,
    *,
    idempotency_key: str | None,
    fingerprint: str,
) -> Response:
    """``respond`` with ``work`` run in a unit of work of ``uows``: it joins the key's
    transaction (the stored answer and the change commit together), its events are
    staged there, and its after-commit callbacks run once that transaction committed —
    never for a refusal, never for a replayed answer."""
    with after_commit_scope() as pending:

        async def run(conn: DbConnection) -> tuple[int, dict[str, Any]]:
            mark = pending.mark()
            try:
                async with uows.begin(conn) as uow:
                    return await work(uow)
            except BaseException:
                pending.rollback_to(mark)  # its savepoint is rolled back: so are they
                raise

        async with pool.acquire() as conn:
            response = await respond(
                conn, run, idempotency_key=idempotency_key, fingerprint=fingerprint
            )
    pending.run()
    return response
