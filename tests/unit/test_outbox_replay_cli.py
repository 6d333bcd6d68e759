"""`claimflow outbox replay --since`: what a time or a duration means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import typer
from typer.testing import CliRunner

from shared.devstack.cli import app, parse_since

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("15m", NOW - timedelta(minutes=15)),
        ("2h", NOW - timedelta(hours=2)),
        ("1d", NOW - timedelta(days=1)),
        ("2026-11-27T10:00:00", datetime(2026, 11, 27, 10, tzinfo=UTC)),
        ("2026-11-27T18:00:00+08:00", datetime(2026, 11, 27, 10, tzinfo=UTC)),
    ],
)
def test_since_is_a_time_or_a_duration_back_from_now(text: str, expected: datetime) -> None:
    assert parse_since(text, NOW) == expected


def test_an_unreadable_since_names_the_option() -> None:
    with pytest.raises(typer.BadParameter, match="ISO 8601"):
        parse_since("yesterday", NOW)


def test_an_unknown_service_is_refused_before_anything_changes() -> None:
    result = CliRunner().invoke(
        app,
        ["outbox", "replay", "--service", "billing", "--since", "1h", "--database-url", "x"],
    )
    assert result.exit_code == 2
