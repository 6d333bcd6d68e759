"""Bearer tokens for the tests: signed with the embedded issuer's key in the stack's data
folder and verified by the services like any other token (nothing is trusted from
headers).

``Identity`` is a headers mapping that mints its token when used, for the stack the
session runs (``use_stack``, called by the ``infra`` fixture), so test modules can name
their people as constants: ``WINDOW = Identity("window-07", "window_clerk")``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from shared.devstack.people import People
from shared.devstack.stack import StackConfig, prepare_auth

_stack: list[StackConfig] = []


def use_stack(cfg: StackConfig) -> None:
    """Tokens minted from now on are for ``cfg`` (its key, its issuer URL)."""
    prepare_auth(cfg)
    _stack[:] = [cfg]


def bearer(
    cfg: StackConfig, user: str, *roles: str, departments: Sequence[str] = ()
) -> dict[str, str]:
    """``Authorization`` for ``user`` on ``cfg`` (a demo user's roles when none are named)."""
    prepare_auth(cfg)
    return People(cfg.data_dir, cfg.issuer_url).headers(user, *roles, departments=departments)


class Identity(Mapping[str, str]):
    """Request headers proving who ``user`` is, on the session's stack."""

    def __init__(self, user: str, *roles: str, departments: Sequence[str] = ()) -> None:
        self.user = user
        self.roles = roles
        self.departments = tuple(departments)

    def _headers(self) -> dict[str, str]:
        if not _stack:
            raise RuntimeError("no stack: the infra fixture calls tests.tokens.use_stack")
        return bearer(_stack[0], self.user, *self.roles, departments=self.departments)

    def __getitem__(self, key: str) -> str:
        return self._headers()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers())

    def __len__(self) -> int:
        return len(self._headers())


def window(user: str = "window-01") -> Identity:
    return Identity(user, "window_clerk")


def reviewer(department: str, user: str | None = None) -> Identity:
    return Identity(user or f"{department}-reviewer-1", "reviewer", departments=[department])


def approver(user: str = "leader-zhang") -> Identity:
    return Identity(user, "approver")


def finance_clerk(user: str = "finance-wang") -> Identity:
    return Identity(user, "finance_clerk", departments=["finance"])


def finance_supervisor(user: str = "finance-chen") -> Identity:
    return Identity(user, "finance_supervisor", departments=["finance"])


AUDITOR = Identity("auditor-zhou", "auditor")
"""Reads claims, reviews, funds and payouts; changes nothing: the tests' default reader."""
