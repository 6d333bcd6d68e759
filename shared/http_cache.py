"""Conditional GET for what the console and reviewers poll (issue 15: worklists cheap to
poll). The answer carries a weak ETag of its JSON body; a request whose If-None-Match
names it gets 304 and no body. The query still runs — the saving is the body, its
serialisation on the client and the page's re-render — and the tag changes with every
byte of the answer, so a stale 304 cannot happen."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

NOT_MODIFIED_DOC: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the If-None-Match tag is the current answer's ETag"}
}
"""For a route's ``responses=``: the OpenAPI document names the 304."""

CACHE_CONTROL = "private, no-cache"
"""Kept only by the caller, and revalidated every time (worklists change under it)."""


def conditional_json(request: Request, content: Any) -> Response:
    answer = JSONResponse(jsonable_encoder(content))
    tag = 'W/"' + hashlib.sha256(bytes(answer.body)).hexdigest()[:32] + '"'
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL}
    if tag in _tags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    answer.headers.update(headers)
    return answer


def _tags(if_none_match: str) -> set[str]:
    """The entity tags of an If-None-Match header; weak and strong compare alike for
    GET (RFC 9110, 13.1.2: weak comparison)."""
    tags = {t.strip() for t in if_none_match.split(",") if t.strip()}
    return tags | {t[2:] if t.startswith("W/") else "W/" + t for t in tags}
