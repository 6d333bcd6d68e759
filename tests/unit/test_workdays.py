from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import chinese_calendar
import pytest

from shared.workdays import (
    FALLBACK_DEADLINES,
    OVERRIDES_FILE,
    Calendar,
    CalendarOverrides,
    Source,
    add_working_days,
    deadline_after,
    fallback_holidays,
    is_working_day,
    load_overrides,
    official_days_left,
    working_days_between,
)


def test_national_day_week_is_skipped_and_make_up_saturday_counts() -> None:
    # 2026: 10-01..10-07 off (国庆/中秋), Saturday 10-10 a make-up workday.
    assert not is_working_day(date(2026, 10, 1))
    assert is_working_day(date(2026, 10, 10))
    # From Wednesday 30 Sept, 5 working days: 10-08 (Thu), 10-09 (Fri), 10-10 (Sat, 调休),
    # 10-12 (Mon), 10-13 (Tue).
    assert add_working_days(date(2026, 9, 30), 5) == date(2026, 10, 13)


def test_ordinary_week() -> None:
    # Friday 2026-11-20 + 5 working days = Friday 2026-11-27
    assert add_working_days(date(2026, 11, 20), 5) == date(2026, 11, 27)
    assert working_days_between(date(2026, 11, 20), date(2026, 11, 27)) == 5


def test_years_beyond_the_package_fall_back_to_weekdays_and_fixed_holidays() -> None:
    assert not is_working_day(date(2027, 1, 1))
    assert not is_working_day(date(2027, 1, 2))  # Saturday
    assert is_working_day(date(2027, 1, 4))


def test_deadline_is_end_of_day_beijing_time() -> None:
    due = deadline_after(datetime(2026, 11, 20, 3, 0, tzinfo=UTC), 5)
    assert (due.date(), due.hour, due.minute) == (date(2026, 11, 27), 23, 59)


# --- issue 9, item 5: a year without official data is never silently guessed ------------


def test_a_deadline_set_in_february_2027_does_not_lapse_inside_the_spring_festival() -> None:
    """2027's notice is not published yet: 正月初一 is 6 Feb 2027. Five working days from
    Monday 1 Feb must not end inside the festival (the old fallback said 8 Feb)."""
    due = add_working_days(date(2027, 2, 1), 5)
    assert due > date(2027, 2, 13)
    assert not any(is_working_day(date(2027, 2, d)) for d in range(3, 14))


def _official_working_days(year: int) -> set[date]:
    days = (date(year, 1, 1) + timedelta(days=i) for i in range(366))
    return {d for d in days if d.year == year and chinese_calendar.is_workday(d)}


@pytest.mark.parametrize("year", range(2016, 2027))
def test_the_fallback_never_counts_a_day_the_official_calendar_did_not(year: int) -> None:
    """Checked against every year the package knows: each day the fallback counts as a
    working day was an official working day, so a fallback deadline is never earlier
    than the official one (a lapse is final)."""
    fallback = Calendar(CalendarOverrides())
    days = (date(year, 1, 1) + timedelta(days=i) for i in range(366))
    counted = {
        d for d in days if d.year == year and d.weekday() < 5 and d not in fallback_holidays(year)
    }
    assert counted <= _official_working_days(year)
    for start in (date(year, 1, 2), date(year, 1, 25), date(year, 4, 1), date(year, 9, 28)):
        for n in (1, 3, 5, 10):
            official = fallback.add_working_days(start, n)  # the package knows this year
            guessed = start
            remaining = n
            while remaining:
                guessed += timedelta(days=1)
                if guessed.weekday() < 5 and guessed not in fallback_holidays(guessed.year):
                    remaining -= 1
            assert guessed >= official


def test_overrides_carry_a_year_with_its_source(tmp_path: Path) -> None:
    path = tmp_path / "calendar.yaml"
    path.write_text(
        "years:\n  2027:\n    source: 'TEST DATA, not the State Council notice'\n"
        "    holidays: [2027-02-08, 2027-02-09]\n    workdays: [2027-02-20]\n",
        encoding="utf-8",
    )
    calendar = Calendar(load_overrides(path))
    assert calendar.source(2027) is Source.OVERRIDES
    assert calendar.source(2026) is Source.PACKAGE
    assert calendar.source(2028) is Source.FALLBACK
    assert not calendar.is_working_day(date(2027, 2, 8))
    assert calendar.is_working_day(date(2027, 2, 20))  # a make-up Saturday
    assert calendar.is_working_day(date(2027, 2, 10))  # the test data says so
    path.write_text("years:\n  2027:\n    holidays: [2027-02-08]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="source"):
        load_overrides(path)
    path.write_text(
        "years:\n  2027:\n    source: 'TEST DATA, not official'\n"
        "    holidays: [2027-02-08]\n    workdays: [2027-02-10]\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="weekend"):
        load_overrides(path)


def test_the_shipped_overrides_file_is_valid_and_invents_nothing() -> None:
    overrides = load_overrides(OVERRIDES_FILE)
    for arrangement in overrides.years.values():
        assert "国务院办公厅" in arrangement.source


def test_a_fallback_deadline_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    counter = FALLBACK_DEADLINES.labels("2027")
    before = counter._value.get()
    with caplog.at_level(logging.WARNING, logger="shared.workdays"):
        deadline_after(datetime(2027, 2, 1, 2, 0, tzinfo=UTC), 10)
    assert counter._value.get() == before + 1
    warnings = [r for r in caplog.records if "fallback" in r.getMessage()]
    assert len(warnings) == 1 and "2027" in warnings[0].getMessage()
    before_official = counter._value.get()
    deadline_after(datetime(2026, 11, 20, 3, 0, tzinfo=UTC), 5)
    assert counter._value.get() == before_official


def test_days_left_with_official_data() -> None:
    # The package knows 2026; with no overrides, 2027 is the first year without data.
    package_only = Calendar(CalendarOverrides())
    assert official_days_left(date(2026, 12, 1), package_only) == 31
    assert official_days_left(date(2027, 3, 1), package_only) == 0
