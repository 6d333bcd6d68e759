from __future__ import annotations

from pathlib import Path

import pytest

from shared.devstack import stack


def test_ports_move_together_from_a_base() -> None:
    ports = stack.StackPorts.from_base(26000)
    assert (ports.postgres, ports.broker, ports.service("payout"), ports.prometheus) == (
        26000,
        26001,
        26004,
        26005,
    )


def test_explicit_postgres_binaries_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLAIMFLOW_POSTGRES_BIN", str(tmp_path))
    assert stack.postgres_bin_dirs()[0] == tmp_path
    fake = tmp_path / "initdb"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert stack._pg_bin("initdb") == str(fake)


def test_missing_binaries_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "postgres_bin_dirs", lambda: [])
    with pytest.raises(stack.StackError, match="embedded-pg"):
        stack._pg_bin("initdb")
