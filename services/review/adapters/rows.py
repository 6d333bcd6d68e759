"""Rows into the dataclasses of the domain."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    D = TypeVar("D", bound=DataclassInstance)
else:
    D = TypeVar("D")


def build(cls: type[D], row: asyncpg.Record, **converted: Any) -> D:
    """``cls`` from the columns named like its fields; ``converted`` ones as given."""
    values = {
        f.name: converted[f.name] if f.name in converted else row[f.name] for f in fields(cls)
    }
    return cls(**values)
