"""The role → permission table (permissions.yaml) and what a set of roles grants."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.programs import load_catalogue

PERMISSIONS_FILE = Path(__file__).parent / "permissions.yaml"

ROLES = (
    "window_clerk",
    "reviewer",
    "approver",
    "finance_clerk",
    "finance_supervisor",
    "auditor",
    "admin",
)


class RoleRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str
    permissions: list[str] = Field(min_length=1)
    scope: Literal["department"] | None = None
    """``department``: the role grants its permissions only to a caller with at least one
    known department, and the service lets it act only for those departments."""


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    permissions: dict[str, str]
    roles: dict[str, RoleRule]
    mutually_exclusive: list[tuple[str, str]] = Field(default_factory=list)
    endpoints: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    """service → "METHOD /path/{template}" → the permissions of which one is required."""
    open: list[str] = Field(default_factory=list)
    """"METHOD /path" of routes every caller may use (no claim data in them)."""

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        missing = [r for r in ROLES if r not in self.roles]
        extra = [r for r in self.roles if r not in ROLES]
        if missing or extra:
            raise ValueError(f"roles must be exactly {ROLES}: missing {missing}, unknown {extra}")
        for role, rule in self.roles.items():
            undeclared = [p for p in rule.permissions if p not in self.permissions]
            if undeclared:
                raise ValueError(f"role {role} grants undeclared permissions {undeclared}")
        for service, routes in self.endpoints.items():
            for route, wanted in routes.items():
                undeclared = [p for p in wanted if p not in self.permissions]
                if undeclared or not wanted:
                    raise ValueError(f"{service} {route}: undeclared permissions {undeclared}")
        for pair in self.mutually_exclusive:
            unknown = [r for r in pair if r not in self.roles]
            if unknown or pair[0] == pair[1]:
                raise ValueError(f"mutually_exclusive pair {pair} names unknown/equal roles")
        return self

    def roles_granting(self, permission: str) -> list[str]:
        return [role for role, rule in self.roles.items() if permission in rule.permissions]

    def conflicts(self, roles: frozenset[str]) -> list[tuple[str, str]]:
        return [pair for pair in self.mutually_exclusive if pair[0] in roles and pair[1] in roles]

    def grant(self, roles: frozenset[str], departments: frozenset[str]) -> frozenset[str]:
        """Permissions of these roles; department-scoped roles count only with a department."""
        granted: set[str] = set()
        for role in roles:
            rule = self.roles.get(role)
            if rule is None or (rule.scope == "department" and not departments):
                continue
            granted.update(rule.permissions)
        return frozenset(granted)


@functools.cache
def load_policy(path: Path = PERMISSIONS_FILE) -> Policy:
    return Policy.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


@functools.cache
def known_departments() -> frozenset[str]:
    """The departments that review something (shared/reference/programs.yaml)."""
    return frozenset(load_catalogue().departments)
