"""Working-day arithmetic on the Chinese official calendar (法定节假日 and 调休 make-up
workdays), for document deadlines and review time limits (限时办结).

The `chinese-calendar` package carries the State Council schedules it knows (up to
2026 in 1.11). Years it does not know fall back to a data file of overrides
(``shared/reference/calendar.yaml``: explicit holidays and make-up workdays) and,
failing that, to Monday–Friday with the fixed-date holidays (元旦, 劳动节, 国庆), so a
deadline is never silently wrong by more than the movable festivals.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import chinese_calendar
import yaml

CHINA = ZoneInfo("Asia/Shanghai")
OVERRIDES_FILE = Path(__file__).parent / "reference" / "calendar.yaml"
_FIXED_HOLIDAYS = {(1, 1), (5, 1), (10, 1), (10, 2), (10, 3)}


@functools.cache
def _overrides(path: Path = OVERRIDES_FILE) -> tuple[frozenset[date], frozenset[date]]:
    if not path.exists():
        return frozenset(), frozenset()
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    holidays = frozenset(date.fromisoformat(str(d)) for d in data.get("holidays", []))
    workdays = frozenset(date.fromisoformat(str(d)) for d in data.get("workdays", []))
    return holidays, workdays


def is_working_day(day: date) -> bool:
    holidays, workdays = _overrides()
    if day in workdays:
        return True
    if day in holidays:
        return False
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return day.weekday() < 5 and (day.month, day.day) not in _FIXED_HOLIDAYS


def add_working_days(start: date, days: int) -> date:
    """The date ``days`` working days after ``start`` (``start`` itself not counted)."""
    if days < 0:
        raise ValueError("days must not be negative")
    current = start
    remaining = days
    while remaining:
        current += timedelta(days=1)
        if is_working_day(current):
            remaining -= 1
    return current


def deadline_after(moment: datetime, working_days: int) -> datetime:
    """End of the working day ``working_days`` after ``moment`` (Beijing time, 23:59:59)."""
    local_day = moment.astimezone(CHINA).date()
    due = add_working_days(local_day, working_days)
    return datetime.combine(due, time(23, 59, 59), tzinfo=CHINA)


def working_days_between(start: date, end: date) -> int:
    """Working days in (start, end]; negative when end is before start."""
    if end < start:
        return -working_days_between(end, start)
    return sum(is_working_day(start + timedelta(days=i)) for i in range(1, (end - start).days + 1))
