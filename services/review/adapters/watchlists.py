"""The reference lists the cross-checks read (blacklist, tax credit ratings)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

from services.review.domain.cross_checks import BlacklistEntry

DEFAULT_FILE = Path(__file__).parent.parent / "reference" / "watchlists.yaml"


@dataclass(frozen=True)
class Watchlists:
    blacklist: tuple[BlacklistEntry, ...]
    credit_ratings: dict[str, str]

    def blacklist_for(self, uscc: str) -> list[BlacklistEntry]:
        return [e for e in self.blacklist if e.uscc == uscc]

    def rating_of(self, uscc: str) -> str | None:
        return self.credit_ratings.get(uscc)


@functools.cache
def load_watchlists(path: Path = DEFAULT_FILE) -> Watchlists:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    entries = tuple(
        BlacklistEntry(
            uscc=str(e["uscc"]),
            reason=str(e["reason"]),
            listed_on=e["listed_on"]
            if isinstance(e["listed_on"], date)
            else date.fromisoformat(str(e["listed_on"])),
        )
        for e in data.get("blacklist") or []
    )
    ratings = {str(k): str(v) for k, v in (data.get("credit_ratings") or {}).items()}
    return Watchlists(blacklist=entries, credit_ratings=ratings)
