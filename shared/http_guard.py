"""One gate in front of every route of every service, for input no route can handle:

- a body larger than the limit (413, without reading it all: a 10 MB claim once held
  intake at 2 GB for 19 s while other requests waited);
- JSON nested deeper than the limit (Python's parser recurses: RecursionError, a 500);
- a NUL character anywhere in the path, the query or the body (PostgreSQL refuses it
  in text: a 500 after the route has already started its work);
- a lone UTF-16 surrogate (``"\\ud800"``) in a JSON string or key: not a character, it
  cannot be encoded to UTF-8, hashed, stored or echoed back.

Refusals are the project's one error body (``shared.problems``), naming the field (the
route's path parameter, ``query.<name>``, or the JSON path in the body) and the rule.
Generic on purpose: routes added later are covered without doing anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.problems import cap_errors

DRAIN_FACTOR = 64
"""An oversized body up to this many times the limit is read and dropped before the
413, so that the client, still sending, sees the answer."""

MAX_JSON_DEPTH = 32
"""Claims nest three levels; anything near Python's recursion limit is an attack."""

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")
_OPEN = frozenset(b"[{")


def text_problem(text: str) -> tuple[str, str] | None:
    """(rule, message) when ``text`` holds a NUL or a lone surrogate, else None."""
    found = _BAD_TEXT.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "no_nul", "NUL characters (U+0000) are not accepted in text"
    return "no_lone_surrogate", "a lone UTF-16 surrogate is not a character (invalid Unicode)"


def printable(name: str) -> str:
    """A field name safe to echo: NULs and lone surrogates written as escapes."""
    return _BAD_TEXT.sub(lambda m: f"\\u{ord(m.group()):04x}", name)


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests deeper than ``limit``, found without parsing it
    (strings dropped first, so brackets inside them do not count)."""
    depth = 0
    for byte in _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", body)):
        if byte in _OPEN:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def bad_json_strings(value: Any) -> Iterator[dict[str, str]]:
    """Every string (value or key) of a parsed JSON document holding a NUL or a lone
    surrogate, as an error naming its path (``bank_account.bank_name``,
    ``documents_supplied.0``). Iterative: the depth is bounded but need not be small."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if (found := text_problem(item)) is not None:
                yield _error(path or "body", *found)
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                child_path = f"{path}.{printable(key)}" if path else printable(key)
                if (found := text_problem(key)) is not None:
                    yield _error(child_path, *found)
                stack.append((child_path, child))
        elif isinstance(item, list):
            for i in reversed(range(len(item))):
                stack.append((f"{path}.{i}" if path else str(i), item[i]))


def _error(field: str, rule: str, message: str) -> dict[str, str]:
    return {"field": field, "rule": rule, "message": message}


class RequestGuard:
    """ASGI middleware for the query and the body (path parameters:
    ``refuse_bad_path_text``)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        errors = _query_errors(scope)
        if errors:
            await _refuse(scope, receive, send, 422, "invalid characters in the request", errors)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(
                scope, receive, send, declared > DRAIN_FACTOR * self.max_body_bytes
            )
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send, False)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body:
            status, errors = _body_errors(scope, body)
            if errors:
                await _refuse(scope, receive, send, status, "the body is not acceptable", errors)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, huge: bool) -> None:
        """413. The rest of the body is read and dropped first (constant memory): a
        server that answers and closes while the client is still sending makes the
        client see a reset instead of the answer. Past ``DRAIN_FACTOR`` times the
        limit it is not worth reading: answer and close."""
        if not huge:
            budget = DRAIN_FACTOR * self.max_body_bytes
            while budget > 0:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                budget -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        limit = self.max_body_bytes
        error = _error("body", "max_body_bytes", f"the body must be at most {limit} bytes")
        await _refuse(scope, receive, send, 413, "the body is too large", [error])


def _query_errors(scope: Scope) -> list[dict[str, str]]:
    # Starlette decodes the query as UTF-8 with replacement: only NUL can get through.
    query = scope.get("query_string", b"").decode("latin-1")
    errors: list[dict[str, str]] = []
    if "%00" in query or "\x00" in query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            for text in (name, value):
                if (found := text_problem(text)) is not None:
                    errors.append(_error(f"query.{printable(name)}", *found))
                    break
    return errors


async def refuse_bad_path_text(request: Request) -> None:
    """An application-wide dependency: path parameters are known only once routed."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and (found := text_problem(value)) is not None:
            raise HTTPException(
                422, detail={"field": f"path.{name}", "rule": found[0], "message": found[1]}
            )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _content_type(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return str(value.decode("latin-1")).lower()
    return ""


def _body_errors(scope: Scope, body: bytes) -> tuple[int, list[dict[str, str]]]:
    if b"\x00" in body:
        return 422, [_error("body", "no_nul", "NUL bytes are not accepted in a body")]
    content_type = _content_type(scope)
    # Some routes read JSON whatever the declared type: check anything that looks like it.
    if "json" not in content_type and body.lstrip()[:1] not in (b"{", b"["):
        return 422, []
    if json_too_deep(body):
        message = f"JSON must not nest deeper than {MAX_JSON_DEPTH} levels"
        return 422, [_error("body", "json_depth", message)]
    try:
        document = json.loads(body)
    except ValueError:
        return 422, []  # not JSON after all: the route answers in its own words
    return 422, list(bad_json_strings(document))


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the route the body already read, then waits as before."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    errors: list[dict[str, str]],
) -> None:
    headers = {"Connection": "close"} if status == 413 else None
    response = JSONResponse(
        {"detail": detail, "errors": cap_errors(errors)}, status_code=status, headers=headers
    )
    await response(scope, receive, send)
