"""Deadline arithmetic of the review time limits (限时办结) on the Chinese calendar."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.review.domain.model import plan_deadline
from shared.workdays import CHINA


def at(y: int, m: int, d: int, h: int = 10) -> datetime:
    return datetime(y, m, d, h, tzinfo=CHINA)


def test_three_working_days_skip_the_weekend() -> None:
    plan = plan_deadline(at(2026, 11, 26), 3, 1)  # a Thursday
    assert plan.due_at == datetime(2026, 12, 1, 23, 59, 59, tzinfo=CHINA)  # Tuesday
    assert plan.warn_at == datetime(2026, 11, 30, 23, 59, 59, tzinfo=CHINA)  # a day before


def test_national_day_holidays_are_skipped_and_make_up_days_count() -> None:
    # 2026: 10-01..10-07 off, Sunday 09-20 and Saturday 10-10 are make-up workdays
    plan = plan_deadline(at(2026, 9, 30), 2, 1)
    assert plan.due_at.date().isoformat() == "2026-10-09"
    assert plan.warn_at.date().isoformat() == "2026-10-08"


def test_spring_festival_pushes_a_five_day_limit_past_the_holiday() -> None:
    # 2026 Spring Festival: 02-15..02-23 off (02-14 Saturday and 02-28 Saturday worked)
    plan = plan_deadline(at(2026, 2, 13), 5, 1)
    assert plan.due_at.date().isoformat() == "2026-02-27"


def test_a_one_day_limit_warns_half_way() -> None:
    start = at(2026, 11, 26, 12)
    plan = plan_deadline(start, 1, 1)
    assert start < plan.warn_at < plan.due_at
    assert plan.warn_at == start + (plan.due_at - start) / 2


def test_warning_never_before_start_and_limit_at_least_one_day() -> None:
    plan = plan_deadline(at(2026, 11, 27, 23), 2, 0)
    assert plan.started_at <= plan.warn_at <= plan.due_at
    with pytest.raises(ValueError):
        plan_deadline(at(2026, 11, 27), 0, 1)


def test_a_review_deadline_in_a_fallback_year_is_reported_once() -> None:
    """Issue 9, item 5: the due time reports the fallback calendar once; its warning,
    derived from the same deadline, does not count again."""
    from shared.workdays import FALLBACK_DEADLINES

    counter = FALLBACK_DEADLINES.labels("2027")
    before = counter._value.get()
    plan = plan_deadline(datetime(2027, 2, 1, 2, 0, tzinfo=UTC), 3, 1)
    assert plan.warn_at < plan.due_at
    assert counter._value.get() == before + 1
