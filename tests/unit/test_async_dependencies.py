"""Issue 15, item 3: no thread-pool hop per request. FastAPI runs a plain ``def``
dependency (or route) in its thread pool — a hand-off and a thread wake-up per call, per
request. Every dependency of every route of the three services is a coroutine."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from services.intake.bootstrap import create_app as intake_app
from services.payout.bootstrap import create_app as payout_app
from services.review.bootstrap import create_app as review_app


def dependencies(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from dependencies(sub)


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI includes them lazily)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        original = getattr(route, "original_router", None)
        if original is not None:
            yield from api_routes(original.routes)


def synchronous(call: Any) -> bool:
    target = call if inspect.isroutine(call) else getattr(call, "__call__", call)  # noqa: B004
    return not (inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target))


@pytest.mark.parametrize("build", [intake_app, review_app, payout_app])
def test_every_route_and_dependency_is_a_coroutine(build: Any) -> None:
    app: FastAPI = build()
    found = [
        f"app-wide: {getattr(d.dependency, '__qualname__', d.dependency)!r}"
        for d in app.router.dependencies
        if synchronous(d.dependency)
    ]
    routes = list(api_routes(app.routes))
    assert any(r.path == "/health" for r in routes) and len(routes) > 10  # its own too
    for route in routes:
        where = f"{sorted(route.methods or ())} {route.path}"
        if synchronous(route.endpoint):
            found.append(f"{where}: the route itself")
        found += [
            f"{where}: {getattr(call, '__qualname__', call)!r}"
            for call in dependencies(route.dependant)
            if synchronous(call)
        ]
    assert not found, "\n".join(sorted(set(found)))
