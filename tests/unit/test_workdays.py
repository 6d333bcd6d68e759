from __future__ import annotations

from datetime import UTC, date, datetime

from shared.workdays import add_working_days, deadline_after, is_working_day, working_days_between


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
