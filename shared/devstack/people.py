"""The demo's people and their tokens: minted with the embedded issuer's key in the
stack's data folder, so the services verify them like any other token.

``use(People.of_stack(info))`` once (the demo does it); then ``headers(user, *roles)``
anywhere in the demo's bots.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.auth.cli_token import token_for


@functools.cache
def _token(
    data_dir: str, issuer: str, user: str, roles: tuple[str, ...], departments: tuple[str, ...]
) -> str:
    # Tokens live an hour: a demo or a test session is shorter.
    return token_for(Path(data_dir), user, roles, departments, issuer=issuer)


@dataclass(frozen=True)
class People:
    data_dir: Path
    issuer: str

    @classmethod
    def of_stack(cls, info: dict[str, Any]) -> People:
        """From the stack's description (``claimflow stack up`` / stack.json)."""
        return cls(Path(info["data_dir"]), f"http://127.0.0.1:{info['ports']['issuer']}")

    def headers(self, user: str, *roles: str, departments: Sequence[str] = ()) -> dict[str, str]:
        """``Authorization`` for ``user`` (a demo user's own roles when none are named)."""
        token = _token(str(self.data_dir), self.issuer, user, tuple(roles), tuple(departments))
        return {"Authorization": f"Bearer {token}"}


_current: list[People] = []


def use(people: People) -> None:
    _current[:] = [people]


def headers(user: str, *roles: str, departments: Sequence[str] = ()) -> dict[str, str]:
    if not _current:
        raise RuntimeError("no stack's people: call shared.devstack.people.use(...) first")
    return _current[0].headers(user, *roles, departments=departments)
