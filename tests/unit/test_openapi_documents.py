"""The OpenAPI documents describe the answers the services really give, and POST /claims
its real request bodies (a client or a fuzzer builds a valid claim from the spec alone)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from services.intake.bootstrap import create_app as intake_app
from services.intake.entrypoints.http import _parse_claim
from services.intake.entrypoints.schemas import SubsidyRequest, VatRefundRequest
from services.payout.bootstrap import create_app as payout_app
from services.review.bootstrap import create_app as review_app

APPS: dict[str, Callable[[], FastAPI]] = {
    "intake": intake_app,
    "review": review_app,
    "payout": payout_app,
}
PROBLEM = "#/components/schemas/Problem"


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete") and path != "/health":
                yield path, method, op


def ref_of(response: dict[str, Any]) -> str:
    ref: str = response["content"]["application/json"]["schema"]["$ref"]
    return ref


@pytest.fixture(scope="module", params=sorted(APPS))
def spec(request: pytest.FixtureRequest) -> dict[str, Any]:
    document: dict[str, Any] = APPS[request.param]().openapi()
    return document


def test_every_error_is_documented_as_the_one_error_body(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert problem["properties"]["detail"]["type"] == "string"
    assert problem["properties"]["errors"]["type"] == "array"
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, method, op in operations(spec):
        responses = op["responses"]
        for status in ("422", "503"):
            assert ref_of(responses[status]) in (PROBLEM,), (path, method, status)
        if "requestBody" in op:
            assert ref_of(responses["413"]) == PROBLEM, (path, method)
            assert ref_of(responses["400"]) == PROBLEM, (path, method)


def test_every_route_but_health_needs_a_bearer_token_and_documents_401_and_403(
    spec: dict[str, Any],
) -> None:
    seen = 0
    for path, method, op in operations(spec):
        if path == "/health":
            continue
        seen += 1
        assert op.get("security") == [{"HTTPBearer": []}], (path, method)
        assert {"401", "403"} <= set(op["responses"]), (path, method)
        assert not [p for p in op.get("parameters", []) if p["name"].lower() == "x-user-id"]
    assert seen


def test_the_docs_pages_are_not_operations(spec: dict[str, Any]) -> None:
    assert not {"/asyncapi", "/asyncapi.json", "/asyncapi/try", "/docs"} & set(spec["paths"])


def test_post_claims_publishes_both_request_schemas_and_valid_examples() -> None:
    spec = intake_app().openapi()
    body = spec["paths"]["/claims"]["post"]["requestBody"]["content"]["application/json"]
    schema = body["schema"]
    assert {s["$ref"] for s in schema["oneOf"]} == {
        "#/components/schemas/VatRefundRequest",
        "#/components/schemas/SubsidyRequest",
    }
    assert schema["discriminator"]["propertyName"] == "kind"
    components = spec["components"]["schemas"]
    assert "uscc" in components["VatRefundRequest"]["properties"]
    assert "program_id" in components["SubsidyRequest"]["properties"]
    assert "BankAccountInput" in components
    kinds = set()
    for name, example in body["examples"].items():
        parsed = _parse_claim(example["value"])
        assert isinstance(parsed, VatRefundRequest | SubsidyRequest), name
        kinds.add(parsed.kind)
    assert "vat_refund" in kinds
