"""docs/permissions.md shows the enforced endpoint table (permissions.yaml) line by line."""

from __future__ import annotations

from pathlib import Path

from shared.auth.permissions import load_policy

DOC = Path(__file__).resolve().parents[2] / "docs" / "permissions.md"


def test_every_endpoint_line_of_the_table_is_in_the_docs() -> None:
    text = DOC.read_text(encoding="utf-8")
    policy = load_policy()
    for service, routes in policy.endpoints.items():
        for route, wanted in routes.items():
            line = f"| {service} | `{route}` | {', '.join(f'`{w}`' for w in wanted)} |"
            assert line in text, line
    for route in policy.open:
        assert f"`{route}`" in text, route
