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


def test_the_s3_server_gets_its_own_ports_after_prometheus() -> None:
    ports = stack.StackPorts.from_base(26000)
    assert (ports.s3, ports.object_store) == (26006, 26007)
    cfg = stack.StackConfig(ports=ports)
    command = " ".join(stack.object_store_command(cfg))
    for port in range(26006, 26007 + stack.OBJECT_STORE_PORTS):
        assert str(port) in command
    assert "26014" not in command


def test_stack_up_defaults_to_the_durable_broker_code_to_memory(tmp_path: Path) -> None:
    from shared.devstack.cli import _config

    assert _config(tmp_path, None).broker_storage == stack.DEFAULT_BROKER_STORAGE == "s3"
    assert _config(tmp_path, None, "memory").broker_storage == "memory"
    assert stack.StackConfig().broker_storage == "memory"
    cmd, env = stack.broker_command(stack.StackConfig(broker_storage="s3"))
    assert cmd[-1] == "s3://tansu/" and env["AWS_ENDPOINT"].endswith(":19333")
