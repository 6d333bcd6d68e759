"""Request-side rules shared by the services' HTTP contracts (the event contracts in
shared/contracts stay as permissive as the events already on the topics)."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from shared.contracts import BankAccount

# Categories that draw nothing: controls, format characters (zero-width space, joiners,
# BOM), separators and spaces, unassigned and private-use code points, surrogates.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


def _visible(value: str) -> str:
    if not any(unicodedata.category(c) not in _INVISIBLE for c in value):
        raise PydanticCustomError(
            "visible_text", "must contain a visible character (not only spaces or controls)"
        )
    return value


VisibleText = Annotated[str, AfterValidator(_visible)]
"""A name or a reason: at least one character that shows on paper."""


def _in_calendar_in_utc(value: datetime) -> datetime:
    # 9999-12-31T23:59-23:59 is a valid ISO instant that is past year 9999 in UTC:
    # converting it for the database overflows (a 500), as does 0001-01-01T00:00+23:59.
    if value.tzinfo is None:
        return value  # read as UTC by the database: always in range
    try:
        value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise PydanticCustomError(
            "datetime_range", "must lie between years 1 and 9999 in UTC"
        ) from None
    return value


Instant = Annotated[datetime, AfterValidator(_in_calendar_in_utc)]
"""A date-time a caller gives, storable as a timestamptz."""

MAX_OFFSET = 1_000_000_000
"""Paging further is meaningless, and PostgreSQL's OFFSET is a bigint."""

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]


class BankAccountInput(BankAccount):
    """A payee as a caller types it: the event contract's fields, with names that show."""

    bank_name: VisibleText = Field(min_length=1, max_length=100)
    account_name: VisibleText = Field(min_length=1, max_length=200)
