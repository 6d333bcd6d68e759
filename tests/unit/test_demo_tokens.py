"""The demo's and the tests' tokens are minted again before they expire (they live an
hour; a chaos campaign or a long run on a loaded machine lasts longer)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.devstack import people


def test_a_token_is_reused_while_fresh_and_minted_again_before_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    minted: list[str] = []
    now = [1_000_000.0]

    def mint(*_: Any, **kw: Any) -> str:
        assert kw["ttl_s"] == people.TOKEN_TTL_S
        minted.append(f"token-{len(minted) + 1}")
        return minted[-1]

    monkeypatch.setattr(people, "token_for", mint)
    monkeypatch.setattr(people, "_now", lambda: now[0])
    monkeypatch.setattr(people, "_minted", {})
    ask = ("/data", "http://issuer", "window-01", ("window_clerk",), ())
    assert people._token(*ask) == "token-1"
    now[0] += people.TOKEN_TTL_S - 120
    assert people._token(*ask) == "token-1"  # two minutes left: still good
    now[0] += 90
    assert people._token(*ask) == "token-2"  # thirty seconds left: a new one
    assert people._token("/data", "http://issuer", "window-02", ("window_clerk",), ()) == (
        "token-3"
    )
