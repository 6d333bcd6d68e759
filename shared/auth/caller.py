"""Who is calling, as the token's issuer vouches for it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    """The verified caller. Compare people by ``(issuer, subject)`` (``same_person``),
    never by ``name``: the name is for display and may change or collide; the subject is
    the issuer's stable, exact id (no case folding, no trimming)."""

    subject: str
    name: str
    issuer: str
    roles: frozenset[str]
    departments: frozenset[str]
    """Known departments only (shared/reference/programs.yaml)."""
    permissions: frozenset[str]

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def acts_for(self, department: str) -> bool:
        """A department-scoped decision (review.decide) is the caller's to make only for
        a department the token names."""
        return department in self.departments

    def same_person(self, other: Caller) -> bool:
        return self.issuer == other.issuer and self.subject == other.subject
