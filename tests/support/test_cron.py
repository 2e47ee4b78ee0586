from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from wattd.config import parse_config
from wattd.errors import ConfigError, ScheduleError
from wattd.support.cron import CronSchedule

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_parse_fields_names_ranges_steps_and_macros() -> None:
    s = CronSchedule.parse("*/15 8-10 1,15 jan-mar mon-fri")
    assert s.minutes == (0, 15, 30, 45)
    assert s.hours == (8, 9, 10)
    assert s.days == frozenset({1, 15})
    assert s.months == frozenset({1, 2, 3})
    assert s.weekdays == frozenset({0, 1, 2, 3, 4})
    assert CronSchedule.parse("0 0 * * 0").weekdays == frozenset({6})  # Sunday
    assert CronSchedule.parse("0 0 * * 7").weekdays == frozenset({6})
    assert CronSchedule.parse("0 0 * * sun").weekdays == frozenset({6})
    weekly = CronSchedule.parse("@weekly")
    assert (weekly.minutes, weekly.hours, weekly.weekdays) == (
        (0,),
        (0,),
        frozenset({6}),
    )
    daily = CronSchedule.parse("@daily")
    assert (daily.minutes, daily.hours) == ((0,), (0,))
    assert CronSchedule.parse("5/20 * * * *").minutes == (5, 25, 45)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0 8 * *", "needs 5 fields"),
        ("60 8 * * *", "minute '60' is outside 0-59"),
        ("0 24 * * *", "hour"),
        ("0 8 32 * *", "day"),
        ("0 8 * 13 *", "month"),
        ("0 8 * * funday", "weekday 'funday' is not valid"),
        ("*/0 8 * * *", "outside"),
        ("0 8 5-1 * *", "outside"),
    ],
)
def test_bad_lines_name_the_field(text: str, fragment: str) -> None:
    with pytest.raises(ScheduleError, match=fragment.replace("(", r"\(")):
        CronSchedule.parse(text)


def test_weekly_schedule_follows_local_time_across_dst() -> None:
    weekly = CronSchedule.parse("0 8 * * mon")
    # Winter: 08:00 CET is 07:00 UTC; after the March change 08:00 CEST is 06:00 UTC.
    assert weekly.next_after(at(2025, 3, 20), BERLIN) == at(2025, 3, 24, 7)
    assert weekly.next_after(at(2025, 3, 24, 7), BERLIN) == at(2025, 3, 31, 6)


def test_time_skipped_by_spring_forward_fires_once_at_the_jump() -> None:
    s = CronSchedule.parse("30 2 * * *")
    assert s.next_after(at(2024, 3, 9, 12), NY) == at(2024, 3, 10, 7)  # 03:00 EDT
    assert s.next_after(at(2024, 3, 10, 7), NY) == at(2024, 3, 11, 6, 30)


def test_time_repeated_by_fall_back_fires_once() -> None:
    s = CronSchedule.parse("30 1 * * *")
    first = s.next_after(at(2024, 11, 2, 12), NY)
    assert first == at(2024, 11, 3, 5, 30)  # 01:30 EDT
    assert s.next_after(first, NY) == at(2024, 11, 4, 6, 30)  # not 01:30 EST again


def test_day_and_weekday_either_match_when_both_restricted() -> None:
    s = CronSchedule.parse("0 0 13 * fri")
    assert s.matches_day(datetime(2025, 6, 13).date())
    assert s.matches_day(datetime(2025, 6, 6).date())
    assert s.matches_day(datetime(2025, 5, 13).date())
    assert not s.matches_day(datetime(2025, 6, 7).date())
    only_day = CronSchedule.parse("0 0 13 * *")
    assert not only_day.matches_day(datetime(2025, 6, 6).date())


def test_last_firing_in_a_window() -> None:
    s = CronSchedule.parse("*/5 * * * *")
    got = s.last_at_or_before(
        at(2025, 3, 5, 12, 7, 30), at(2025, 3, 1), ZoneInfo("UTC")
    )
    assert got == at(2025, 3, 5, 12, 5)
    monthly = CronSchedule.parse("0 8 1 * *")
    got = monthly.last_at_or_before(at(2025, 3, 5), at(2025, 2, 1), ZoneInfo("UTC"))
    assert got == at(2025, 3, 1, 8)
    assert (
        monthly.last_at_or_before(at(2025, 3, 5), at(2025, 3, 2), ZoneInfo("UTC"))
        is None
    )


def test_never_firing_schedule_is_an_error() -> None:
    with pytest.raises(ScheduleError, match="never fires"):
        CronSchedule.parse("0 0 31 2 *").next_after(at(2025, 1, 1), ZoneInfo("UTC"))


def test_config_reports_bad_schedule_with_line() -> None:
    text = "summaries:\n  weekly:\n    period: week\n    schedule: '0 8 * * someday'\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "w.yaml")
    assert "w.yaml:4" in str(info.value)
    assert "weekday 'someday'" in str(info.value)
