"""Each service's documentation pages load every script, style and icon from the service
itself: a government network (and CI) cannot reach the public CDNs."""

from __future__ import annotations

import re

import httpx
import pytest

from shared.devstack.stack import SERVICES, StackConfig

pytestmark = pytest.mark.e2e

_ASSET = re.compile(r"""<(?:script|link|img)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", re.I)
# Swagger UI and ReDoc name the OpenAPI document and their bundle inside inline scripts.
_INLINE_URL = re.compile(r"""(?:url|src)\s*:\s*['"]([^'"]+)['"]""")


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize(("page", "kinds"), [("/docs", 3), ("/redoc", 2), ("/asyncapi", 3)])
async def test_docs_page_assets_load_from_the_service(
    client: httpx.AsyncClient, services: StackConfig, service: str, page: str, kinds: int
) -> None:
    base = services.url(service)
    r = await client.get(base + page)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].startswith("text/html")
    urls = set(_ASSET.findall(r.text)) | set(_INLINE_URL.findall(r.text))
    assert len(urls) >= kinds, urls
    remote = {u for u in urls if re.match(r"(?i)(https?:)?//", u)}
    assert not remote, f"{page} loads from outside the service: {remote}"
    for url in urls:
        asset = await client.get(base + url)
        assert asset.status_code == 200, (page, url, asset.status_code)
        assert len(asset.content) > 0, url
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, urls
    for url in scripts:
        asset = await client.get(base + url)
        assert "javascript" in asset.headers["content-type"], (url, asset.headers)
        assert len(asset.content) > 100_000, (url, "a stub, not the viewer")


@pytest.mark.parametrize("service", SERVICES)
async def test_asyncapi_documents_are_served_and_try_it_out_cannot_publish(
    client: httpx.AsyncClient, services: StackConfig, service: str
) -> None:
    base = services.url(service)
    r = await client.get(f"{base}/asyncapi.json")
    assert r.status_code == 200
    assert r.json()["asyncapi"].startswith("3.")
    r = await client.get(f"{base}/asyncapi.yaml")
    assert r.status_code == 200
    assert "asyncapi:" in r.text
    # FastStream's try-it-out endpoint would publish this straight to the real topic.
    r = await client.post(
        f"{base}/asyncapi/try",
        json={
            "channelName": "claimflow.intake.events:Publisher",
            "message": {"message": {"junk": True}},
            "options": {"sendToRealBroker": True},
        },
    )
    assert r.status_code in (404, 405), r.text
