"""Conditional GET (shared/http_cache.py): a poll whose If-None-Match names the current
answer gets 304 and no body; any change in the answer changes the tag."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.testclient import TestClient

from shared.http_cache import conditional_json

ITEMS: list[dict[str, object]] = [{"task_id": "t-1", "department": "tax"}]


def client() -> TestClient:
    app = FastAPI()

    @app.get("/worklist")
    async def worklist(request: Request) -> Response:
        return conditional_json(request, ITEMS)

    return TestClient(app)


def test_the_same_answer_polled_with_its_tag_is_not_modified() -> None:
    http = client()
    first = http.get("/worklist")
    tag = first.headers["etag"]
    assert first.status_code == 200 and first.json() == ITEMS
    assert tag.startswith('W/"') and first.headers["cache-control"] == "private, no-cache"
    again = http.get("/worklist", headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == tag
    # A strong form of the tag, or a list holding it, matches too (weak comparison).
    strong = tag.removeprefix("W/")
    assert http.get("/worklist", headers={"If-None-Match": f'"x", {strong}'}).status_code == 304


def test_a_changed_answer_gets_a_new_tag_and_its_body() -> None:
    http = client()
    tag = http.get("/worklist").headers["etag"]
    ITEMS.append({"task_id": "t-2", "department": "tax"})
    try:
        changed = http.get("/worklist", headers={"If-None-Match": tag})
        assert changed.status_code == 200 and len(changed.json()) == 2
        assert changed.headers["etag"] != tag
    finally:
        ITEMS.pop()
    assert http.get("/worklist", headers={"If-None-Match": "*-not-a-tag"}).status_code == 200
