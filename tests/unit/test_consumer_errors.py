"""Which failures re-read a batch and which dead-letter an event (issue 9 item 13)."""

from __future__ import annotations

import asyncpg
import pytest

from shared.contracts import UnknownEventType
from shared.messaging.consumer import TransientError, is_transient, pg_text


class HandlerError(Exception):
    """What a handler might wrap a database error in."""


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.QueryCanceledError,
        asyncpg.exceptions.LockNotAvailableError,
        asyncpg.exceptions.ReadOnlySQLTransactionError,
        asyncpg.exceptions.OutOfMemoryError,
        asyncpg.exceptions.DiskFullError,
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.SerializationError,
        asyncpg.exceptions.DeadlockDetectedError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CrashShutdownError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.ConnectionDoesNotExistError,
        TransientError,
        ConnectionResetError,
        TimeoutError,
    ],
)
def test_database_and_machine_trouble_is_transient(error: type[Exception]) -> None:
    assert is_transient(error("x"))


def test_a_wrapped_transient_error_is_still_transient() -> None:
    try:
        try:
            raise asyncpg.exceptions.QueryCanceledError("canceling statement due to timeout")
        except asyncpg.PostgresError as exc:
            raise HandlerError("could not reserve") from exc
    except HandlerError as wrapped:
        assert is_transient(wrapped)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CheckViolationError,
        asyncpg.exceptions.UniqueViolationError,
        asyncpg.exceptions.CharacterNotInRepertoireError,
        asyncpg.exceptions.InvalidTextRepresentationError,
        ValueError,
        KeyError,
        UnknownEventType,
    ],
)
def test_a_bad_event_is_not_transient(error: type[Exception]) -> None:
    assert not is_transient(error("x"))


def test_nul_is_made_visible_for_text_columns() -> None:
    assert pg_text("a\x00b") == "a\\u0000b"
    assert pg_text("普通") == "普通"
