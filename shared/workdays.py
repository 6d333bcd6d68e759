"""Working-day arithmetic on the Chinese official calendar (法定节假日 and 调休 make-up
workdays), for document deadlines and review time limits (限时办结).

Where a year's arrangement comes from, in this order:

1. **overrides** — ``shared/reference/calendar.yaml`` (or ``CLAIMFLOW_CALENDAR_FILE``):
   the State Council's notice for a year (国务院办公厅关于 YYYY 年部分节假日安排的通知),
   copied in with its ``source`` once published (usually in November of the year
   before). A year listed there is taken from there in full.
2. **chinese_calendar** — the package's own copy of the notices (up to 2026 in 1.11).
3. **fallback** — a year nobody has official data for. It is never silently guessed:
   every deadline that crosses such a year is counted
   (``claimflow_calendar_fallback_deadlines_total``), alerted on, and logged once.
   The fallback is *conservative*: a lapse is final, so it must never make a deadline
   earlier than the official calendar will. It therefore counts no weekend day as a
   working day (make-up workdays can only shorten a deadline) and takes as holidays a
   window around every festival wide enough to hold each arrangement of 2016–2026
   (``tests/unit/test_workdays.py`` checks that against the package's data): New Year
   30 Dec – 3 Jan, Spring Festival 3 days before 正月初一 to 8 days after, Qingming the
   solar term ± 2 days, Labour Day 28 Apr – 5 May, Dragon Boat and Mid-Autumn the
   festival ± 2 days, National Day 1–8 Oct. Lunar dates come from ``lunardate``, the
   solar term from ``chinese_calendar``: astronomy, not the official arrangement.
   One-off holidays (such as 3 Sep 2015) cannot be foreseen.

When the overrides file changes, ``claimflow calendar recompute`` recomputes the
deadlines already stored (audited); see docs/intake.md.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from time import monotonic
from zoneinfo import ZoneInfo

import chinese_calendar
import yaml
from lunardate import LunarDate
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.metrics import REGISTRY

CHINA = ZoneInfo("Asia/Shanghai")
OVERRIDES_FILE = Path(__file__).parent / "reference" / "calendar.yaml"
log = logging.getLogger(__name__)

FALLBACK_DEADLINES = Counter(
    "claimflow_calendar_fallback_deadlines_total",
    "Deadlines computed across a year with no official holiday arrangement (conservative "
    "fallback used): add the State Council's notice to the calendar overrides.",
    ["year"],
    registry=REGISTRY,
)
OFFICIAL_DAYS_LEFT = Gauge(
    "claimflow_calendar_official_days_left",
    "Days from today to the first day of the first year without an official holiday "
    "arrangement (0: this year already uses the conservative fallback).",
    registry=REGISTRY,
)


class Source(StrEnum):
    OVERRIDES = "overrides"
    PACKAGE = "chinese_calendar"
    FALLBACK = "fallback"


class YearArrangement(BaseModel):
    """One year's official arrangement as the State Council publishes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(min_length=10, description="the notice: title and document number")
    holidays: frozenset[date] = Field(description="days off that would be working days")
    workdays: frozenset[date] = Field(
        default=frozenset(), description="weekend days that are make-up workdays (调休)"
    )


class CalendarOverrides(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    years: dict[int, YearArrangement] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> CalendarOverrides:
        for year, arrangement in self.years.items():
            days = arrangement.holidays | arrangement.workdays
            if any(d.year != year for d in days):
                raise ValueError(f"{year}: every date must lie in {year}")
            if arrangement.holidays & arrangement.workdays:
                raise ValueError(f"{year}: a day is both a holiday and a make-up workday")
            if any(d.weekday() < 5 for d in arrangement.workdays):
                raise ValueError(f"{year}: make-up workdays are weekend days")
            if not arrangement.holidays:
                raise ValueError(f"{year}: an arrangement without holidays is not a notice")
        return self


def load_overrides(path: Path) -> CalendarOverrides:
    if not path.exists():
        return CalendarOverrides()
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return CalendarOverrides.model_validate(data)


def _span(first: date, last: date) -> Iterable[date]:
    return (first + timedelta(days=i) for i in range((last - first).days + 1))


@functools.cache
def fallback_holidays(year: int) -> frozenset[date]:
    """Weekdays the fallback takes as holidays in a year without official data: a
    superset of every official arrangement seen (see the module's docstring)."""
    days: set[date] = set()
    spring = LunarDate(year, 1, 1).to_solar_date()
    next_spring = LunarDate(year + 1, 1, 1).to_solar_date()
    previous_spring = LunarDate(year - 1, 1, 1).to_solar_date()
    for festival in (previous_spring, spring, next_spring):
        days.update(_span(festival - timedelta(days=3), festival + timedelta(days=8)))
    qingming = next(
        d for d, name in chinese_calendar.get_solar_terms(date(year, 4, 1), date(year, 4, 10))
    )
    days.update(_span(qingming - timedelta(days=2), qingming + timedelta(days=2)))
    for month, day in ((5, 5), (8, 15)):
        festival = LunarDate(year, month, day).to_solar_date()
        days.update(_span(festival - timedelta(days=2), festival + timedelta(days=2)))
    days.update(_span(date(year - 1, 12, 30), date(year, 1, 3)))
    days.update(_span(date(year, 12, 30), date(year + 1, 1, 3)))
    days.update(_span(date(year, 4, 28), date(year, 5, 5)))
    days.update(_span(date(year, 10, 1), date(year, 10, 8)))
    return frozenset(d for d in days if d.year == year and d.weekday() < 5)


@functools.cache
def _package_knows(year: int) -> bool:
    try:
        chinese_calendar.is_workday(date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


_CACHE_LIMIT = 100_000
"""Entries per cache of one Calendar before it starts afresh (dates and counts of a
few years: never reached in practice, but bounded)."""


@dataclass(frozen=True)
class Calendar:
    """The working-day calendar from one version of the overrides file.

    Its answers are cached: a deadline is computed for every review task and every
    claim with promised documents, each walking day by day through the package's or
    the fallback's tables. A changed file makes a new Calendar, with empty caches.
    """

    overrides: CalendarOverrides
    _working: dict[date, bool] = field(default_factory=dict, init=False, repr=False, compare=False)
    _added: dict[tuple[date, int], date] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def source(self, year: int) -> Source:
        if year in self.overrides.years:
            return Source.OVERRIDES
        return Source.PACKAGE if _package_knows(year) else Source.FALLBACK

    def is_working_day(self, day: date) -> bool:
        known = self._working.get(day)
        if known is None:
            if len(self._working) >= _CACHE_LIMIT:
                self._working.clear()
            known = self._working[day] = self._is_working_day(day)
        return known

    def _is_working_day(self, day: date) -> bool:
        arrangement = self.overrides.years.get(day.year)
        if arrangement is not None:
            if day in arrangement.workdays:
                return True
            return day.weekday() < 5 and day not in arrangement.holidays
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            return day.weekday() < 5 and day not in fallback_holidays(day.year)

    def add_working_days(self, start: date, days: int) -> date:
        """The date ``days`` working days after ``start`` (``start`` itself not counted)."""
        if days < 0:
            raise ValueError("days must not be negative")
        known = self._added.get((start, days))
        if known is None:
            if len(self._added) >= _CACHE_LIMIT:
                self._added.clear()
            known = self._added[(start, days)] = self._add_working_days(start, days)
        return known

    def _add_working_days(self, start: date, days: int) -> date:
        current = start
        remaining = days
        while remaining:
            current += timedelta(days=1)
            if self.is_working_day(current):
                remaining -= 1
        return current

    def deadline_after(
        self, moment: datetime, working_days: int, *, report: bool = True
    ) -> datetime:
        """End of the working day ``working_days`` after ``moment`` (Beijing, 23:59:59).

        A deadline counted across a year without official data is counted in the
        metric and logged, once for this deadline (``report=False`` for a time derived
        from a deadline that is reported itself, such as its warning)."""
        local_day = moment.astimezone(CHINA).date()
        due = self.add_working_days(local_day, working_days)
        guessed = sorted(
            y for y in range(local_day.year, due.year + 1) if self.source(y) is Source.FALLBACK
        )
        if not report:
            guessed = []
        for year in guessed:
            FALLBACK_DEADLINES.labels(str(year)).inc()
        if guessed:
            log.warning(
                "deadline %s (%d working days from %s) uses the conservative fallback calendar "
                "for %s: no official holiday arrangement is known; add it to %s and run "
                "`claimflow calendar recompute`",
                due,
                working_days,
                local_day,
                ", ".join(map(str, guessed)),
                calendar_file(),
            )
        return datetime.combine(due, time(23, 59, 59), tzinfo=CHINA)


def calendar_file() -> Path:
    return Path(os.environ.get("CLAIMFLOW_CALENDAR_FILE") or OVERRIDES_FILE)


_lock = threading.Lock()
_loaded: tuple[Path, float, Calendar] | None = None
_checked_at = -math.inf
CHECK_INTERVAL_S = 1.0
"""How often the overrides file is looked at for a change: a service computes a
deadline per event, and a stat per deadline was a system call on the claim path."""


def current_calendar(*, fresh: bool = False) -> Calendar:
    """The calendar of the overrides file: a changed file is read again, noticed within
    CHECK_INTERVAL_S (at once with ``fresh``, as `claimflow calendar recompute` asks,
    which also recomputes the deadlines the change moves)."""
    global _loaded, _checked_at
    path = calendar_file()
    with _lock:
        now = monotonic()
        if (
            not fresh
            and _loaded is not None
            and _loaded[0] == path
            and now - _checked_at < CHECK_INTERVAL_S
        ):
            return _loaded[2]
        mtime = path.stat().st_mtime if path.exists() else 0.0
        _checked_at = now
        if _loaded is None or _loaded[0] != path or _loaded[1] != mtime:
            _loaded = (path, mtime, Calendar(load_overrides(path)))
        return _loaded[2]


def official_days_left(today: date, calendar: Calendar | None = None) -> int:
    calendar = calendar or current_calendar()
    year = today.year
    while calendar.source(year) is not Source.FALLBACK and year < today.year + 10:
        year += 1
    return max(0, (date(year, 1, 1) - today).days)


def publish_year_gauges(today: date) -> None:
    """Set claimflow_calendar_official_days_left (alerted a month ahead)."""
    OFFICIAL_DAYS_LEFT.set(official_days_left(today))


def is_working_day(day: date) -> bool:
    return current_calendar().is_working_day(day)


def add_working_days(start: date, days: int) -> date:
    return current_calendar().add_working_days(start, days)


def deadline_after(moment: datetime, working_days: int, *, report: bool = True) -> datetime:
    return current_calendar().deadline_after(moment, working_days, report=report)


def working_days_between(start: date, end: date) -> int:
    """Working days in (start, end]; negative when end is before start."""
    if end < start:
        return -working_days_between(end, start)
    calendar = current_calendar()
    return sum(
        calendar.is_working_day(start + timedelta(days=i)) for i in range(1, (end - start).days + 1)
    )
