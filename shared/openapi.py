"""The OpenAPI document as the services really answer: every error in the one error body
(``shared.problems``: ``detail`` a string, ``errors[]`` naming field and rule), the
statuses any route can give (422 from the input guard, 413 for a large body, 401/403 for
the caller, 503 when the database is away), and the caller header marked required.

FastAPI's defaults describe a 422 whose ``detail`` is a list, which no service sends,
and cannot know the statuses that middleware, exception handlers and dependencies add.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

_METHODS = ("get", "put", "post", "delete", "patch")


class ErrorItem(BaseModel):
    field: str = Field(description="the field: body path, query.<name>, path.<name>, header.<Name>")
    rule: str = Field(description="the rule broken, a stable identifier")
    message: str = Field(description="the rule in words")


class ProblemBody(BaseModel):
    """The one error body of every 4xx and 5xx."""

    model_config = ConfigDict(extra="allow", title="Problem")

    detail: str
    errors: list[ErrorItem]


class HealthBody(BaseModel):
    status: str = Field(description="ok or degraded")
    checks: dict[str, str]


_STATUS_TEXT = {
    400: "the body could not be read",
    401: "no valid bearer token",
    403: "the token lacks the route's permission (named in the answer)",
    404: "no such resource",
    409: "conflicts with the current state (or an Idempotency-Key used for another body)",
    413: "the body is larger than the service accepts",
    422: "a field breaks a rule; each error names the field and the rule",
    503: "the service's database is unavailable; nothing was changed, retry later",
}


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the documented-as-answered version."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = document_real_answers(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_real_answers(schema: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    _add_model(schemas, ProblemBody)
    _add_model(schemas, HealthBody)
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            responses: dict[str, Any] = op.setdefault("responses", {})
            if path == "/health":
                responses["503"] = _json("degraded: a check failed", {"$ref": _ref("HealthBody")})
                continue
            _hoist_defs(op, schemas)
            params = op.get("parameters", [])
            statuses = {422, 503}
            if "requestBody" in op:
                statuses |= {400, 413}
            if any(p["in"] == "path" for p in params):
                statuses.add(404)
            if method != "get":
                statuses |= {404, 409}
            if op.get("security"):
                # A bearer token is required (shared.auth.enforce): none or a bad one is
                # 401, one without the route's permission 403.
                statuses |= {401, 403}
            for status in sorted(statuses):
                existing = responses.get(str(status))
                if existing is None or _is_fastapi_validation_error(existing):
                    responses[str(status)] = _json(_STATUS_TEXT[status], copy.deepcopy(problem_ref))
    for unused in ("HTTPValidationError", "ValidationError"):
        if not _referenced(schema, unused):
            schemas.pop(unused, None)
    return schema


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    body = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(body.pop("$defs", {}))
    schemas[str(model.model_config.get("title") or model.__name__)] = body


def _hoist_defs(op: dict[str, Any], schemas: dict[str, Any]) -> None:
    """A request schema given whole in ``openapi_extra`` (pydantic's, with ``$defs`` and
    refs into components) gets its definitions moved into the components."""
    for media in op.get("requestBody", {}).get("content", {}).values():
        body = media.get("schema", {})
        for name, definition in body.pop("$defs", {}).items():
            schemas.setdefault(name, definition)


def _ref(name: str) -> str:
    return f"#/components/schemas/{name}"


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _is_fastapi_validation_error(response: dict[str, Any]) -> bool:
    content = response.get("content", {}).get("application/json", {})
    return bool(content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"))


def _referenced(node: Any, name: str) -> bool:
    if isinstance(node, dict):
        if node.get("$ref") == _ref(name):
            return True
        return any(_referenced(v, name) for k, v in node.items() if k != "components")
    if isinstance(node, list):
        return any(_referenced(v, name) for v in node)
    return False
