"""Issue 15, item 3: working-day results are cached and the overrides file is looked at
no more than once a second, without changing an answer."""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from shared import workdays
from shared.workdays import Calendar, CalendarOverrides, current_calendar

ARRANGEMENT_2027 = """years:
  2027:
    source: 'TEST DATA, not an official notice'
    holidays: [2027-03-01]
"""


class CountingCalendar(Calendar):
    """A real calendar that counts how often it works a day out from its tables."""

    looked_up = 0

    def _is_working_day(self, day: date) -> bool:
        CountingCalendar.looked_up += 1
        return super()._is_working_day(day)


def test_cached_answers_are_the_calendars_answers() -> None:
    cached = Calendar(CalendarOverrides())
    start = date(2026, 1, 1)
    for offset in range(0, 800, 7):
        day = start + timedelta(days=offset)
        for days in (1, 5, 15, 20):
            # Twice: computed, then from the cache; both as the day-by-day walk says.
            expected = day
            remaining = days
            while remaining:
                expected += timedelta(days=1)
                remaining -= Calendar(CalendarOverrides())._is_working_day(expected)
            assert cached.add_working_days(day, days) == expected
            assert cached.add_working_days(day, days) == expected


def test_the_same_deadline_is_not_worked_out_twice() -> None:
    calendar = CountingCalendar(CalendarOverrides())
    CountingCalendar.looked_up = 0
    calendar.add_working_days(date(2026, 9, 30), 15)
    first = CountingCalendar.looked_up
    assert first > 0
    for _ in range(100):
        calendar.add_working_days(date(2026, 9, 30), 15)
        calendar.add_working_days(date(2026, 10, 1), 14)  # the same days, walked again
    assert CountingCalendar.looked_up == first


def test_the_file_is_looked_at_once_a_second_and_at_once_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text("years: {}\n", encoding="utf-8")
    monkeypatch.setenv("CLAIMFLOW_CALENDAR_FILE", str(path))
    before = current_calendar(fresh=True)
    assert before.is_working_day(date(2027, 3, 1))  # a Monday, no arrangement
    path.write_text(ARRANGEMENT_2027, encoding="utf-8")
    later = os.stat(path).st_mtime + 5
    os.utime(path, (later, later))
    # Within the second: the calendar as it was, without a look at the file.
    assert current_calendar() is before
    # After it, the change is seen.
    time.sleep(workdays.CHECK_INTERVAL_S + 0.1)
    after = current_calendar()
    assert after is not before
    assert not after.is_working_day(date(2027, 3, 1))
    # `claimflow calendar recompute` asks for the file as it is now.
    path.write_text("years: {}\n", encoding="utf-8")
    os.utime(path, (later + 5, later + 5))
    assert current_calendar(fresh=True).is_working_day(date(2027, 3, 1))
