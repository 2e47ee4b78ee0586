from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.fixtures.paths import REPO_ROOT
from wattd.config import parse_config
from wattd.costing.tariff import Tariff, TariffBook
from wattd.errors import ConfigError, TariffError
from wattd.support.clock import next_offset_change, wall_to_utc

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def tariff(body: str, tz: str = "UTC", name: str = "t") -> Tariff:
    config = parse_config(f"tariffs:\n  timezone: {tz}\n  plans:\n    {name}:\n{body}")
    return TariffBook(config).tariffs[name]


TOU = """\
      currency: USD
      price_per_kwh: 0.30
      bands:
        - {name: night, price_per_kwh: 0.10, hours: "00:00-06:00"}
        - {name: peak, price_per_kwh: 1.00, hours: "17:00-20:00", days: weekdays}
"""


def hours_by_band(t: Tariff, start: datetime, end: datetime) -> dict[str, float]:
    out: dict[str, float] = {}
    for slot in t.slots(start, end):
        out[slot.band.name] = (
            out.get(slot.band.name, 0.0)
            + (slot.end - slot.start).total_seconds() / 3600
        )
    return out


def test_flat_tariff_has_one_band_and_no_peak() -> None:
    t = Tariff.flat("home", 0.25)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    slots = list(t.slots(start, start + timedelta(days=2)))
    assert {s.band.price_per_kwh for s in slots} == {0.25}
    assert not any(s.peak for s in slots)
    assert not t.time_of_use
    assert t.cheapest_price_per_kwh == 0.25


def test_band_boundary_inside_an_interval_is_split_exactly() -> None:
    t = tariff(TOU)
    # 05:30-06:45 UTC on a Wednesday: 30 min night, 45 min standard.
    start = datetime(2025, 3, 5, 5, 30, tzinfo=UTC)
    slots = list(t.slots(start, start + timedelta(minutes=75)))
    assert [
        (s.band.name, s.start.time().isoformat(), s.end.time().isoformat())
        for s in slots
    ] == [
        ("night", "05:30:00", "06:00:00"),
        ("standard", "06:00:00", "06:45:00"),
    ]


def test_minute_resolution_and_wrapping_band() -> None:
    t = tariff(
        """\
      price_per_kwh: 0.20
      bands:
        - {name: late, price_per_kwh: 0.05, hours: "22:15-06:40"}
"""
    )
    day = datetime(2025, 3, 5, tzinfo=UTC)
    got = hours_by_band(t, day, day + timedelta(days=1))
    assert got["late"] == pytest.approx(6 + 40 / 60 + 1 + 45 / 60)
    assert got["standard"] == pytest.approx(24 - got["late"])
    assert t.band_at(day.replace(hour=22, minute=14)).name == "standard"
    assert t.band_at(day.replace(hour=22, minute=15)).name == "late"
    assert t.band_at(day.replace(hour=6, minute=39, second=59)).name == "late"
    assert t.band_at(day.replace(hour=6, minute=40)).name == "standard"


def test_weekday_band_not_on_weekends() -> None:
    t = tariff(TOU)
    saturday = datetime(2025, 3, 8, tzinfo=UTC)
    monday = datetime(2025, 3, 10, tzinfo=UTC)
    assert "peak" not in hours_by_band(t, saturday, saturday + timedelta(days=1))
    assert hours_by_band(t, monday, monday + timedelta(days=1))[
        "peak"
    ] == pytest.approx(3)


def test_spring_forward_skipped_hour_is_neither_priced_nor_lost() -> None:
    # 2024-03-10 in New York: 02:00 EST jumps to 03:00 EDT; the day has 23 hours.
    t = tariff(
        """\
      price_per_kwh: 0.30
      bands:
        - {name: odd, price_per_kwh: 9.00, hours: "02:00-03:00"}
        - {name: night, price_per_kwh: 0.10, hours: "00:00-06:00"}
""",
        tz="America/New_York",
    )
    start = datetime(2024, 3, 10, tzinfo=NY)
    end = datetime(2024, 3, 11, tzinfo=NY)
    assert (end - start.astimezone(UTC)).total_seconds() == 23 * 3600
    got = hours_by_band(t, start, end)
    assert got == pytest.approx({"night": 5.0, "standard": 18.0})  # no "odd" at all
    assert sum(got.values()) == pytest.approx(23.0)
    # The walk stops at the transition instant (07:00 UTC) and looks again.
    edges = [s.start for s in t.slots(start, end)]
    assert datetime(2024, 3, 10, 7, tzinfo=UTC) in edges
    assert t.band_at(datetime(2024, 3, 10, 7, tzinfo=UTC)).name == "night"  # 03:00 EDT
    normal = hours_by_band(
        t, datetime(2024, 3, 11, tzinfo=NY), datetime(2024, 3, 12, tzinfo=NY)
    )
    assert normal == pytest.approx({"night": 5.0, "odd": 1.0, "standard": 18.0})


def test_fall_back_repeated_hour_is_priced_twice() -> None:
    # 2024-11-03 in New York: 02:00 EDT falls back to 01:00 EST; the day has 25 hours.
    t = tariff(
        """\
      price_per_kwh: 0.30
      bands:
        - {name: odd, price_per_kwh: 9.00, hours: "01:00-02:00"}
""",
        tz="America/New_York",
    )
    start = datetime(2024, 11, 3, tzinfo=NY)
    end = datetime(2024, 11, 4, tzinfo=NY)
    got = hours_by_band(t, start, end)
    assert got == pytest.approx({"odd": 2.0, "standard": 23.0})
    odd = [s for s in t.slots(start, end) if s.band.name == "odd"]
    # One slot ends at the transition (06:00 UTC) and the repeat starts there.
    assert [(s.start.hour, s.end.hour) for s in odd] == [(5, 6), (6, 7)]


def test_slots_cover_the_range_without_gaps_across_dst() -> None:
    t = tariff(TOU, tz="Europe/Berlin")
    start = datetime(2025, 3, 29, 12, tzinfo=UTC)
    end = datetime(2025, 4, 2, 7, 13, tzinfo=UTC)
    slots = list(t.slots(start, end))
    assert slots[0].start == start
    assert slots[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(slots))
    assert all(s.start < s.end for s in slots)


def test_holidays_fixed_and_yearly() -> None:
    t = tariff(
        TOU
        + """\
      holidays: [2024-12-25, "01-01"]
"""
    )
    christmas = datetime(2024, 12, 25, tzinfo=UTC)  # a Wednesday
    new_year = datetime(2025, 1, 1, tzinfo=UTC)  # a Wednesday, yearly
    boxing = datetime(2024, 12, 26, tzinfo=UTC)
    assert "peak" not in hours_by_band(t, christmas, christmas + timedelta(days=1))
    assert "peak" not in hours_by_band(t, new_year, new_year + timedelta(days=1))
    assert hours_by_band(t, boxing, boxing + timedelta(days=1))[
        "peak"
    ] == pytest.approx(3)
    assert t.day_tags(christmas.date()) == frozenset({"all", "holidays", "weekends"})


def test_holiday_band_and_holidays_not_like_weekends() -> None:
    t = tariff(
        """\
      price_per_kwh: 0.30
      holidays_like_weekends: false
      holidays: ["12-25"]
      bands:
        - {name: free, price_per_kwh: 0.0, days: holidays}
        - {name: weekend, price_per_kwh: 0.2, days: weekends}
"""
    )
    christmas_sunday = datetime(2022, 12, 25, 12, tzinfo=UTC)
    ordinary_sunday = datetime(2022, 12, 18, 12, tzinfo=UTC)
    assert t.band_at(christmas_sunday).name == "free"
    assert t.band_at(ordinary_sunday).name == "weekend"


def test_seasons_choose_bands_and_peak_per_season() -> None:
    t = tariff(
        """\
      price_per_kwh: 0.30
      seasons:
        summer: {start: "06-01", end: "09-30"}
        winter: {start: "10-01", end: "05-31"}
      bands:
        - name: summer-peak
          price_per_kwh: 1.00
          hours: "14:00-18:00"
          seasons: summer
        - {name: winter-peak, price_per_kwh: 0.5, hours: 17:00-20:00, seasons: [winter]}
        - {name: night, price_per_kwh: 0.10, hours: "00:00-06:00"}
"""
    )
    july = datetime(2025, 7, 2, 15, tzinfo=UTC)
    january = datetime(2025, 1, 8, 18, tzinfo=UTC)  # winter wraps over new year
    assert t.band_at(july).name == "summer-peak"
    assert t.band_at(january).name == "winter-peak"
    assert t.band_at(datetime(2025, 1, 8, 15, tzinfo=UTC)).name == "standard"
    assert t.season_of(datetime(2025, 5, 31, tzinfo=UTC).date()) == "winter"
    assert t.season_of(datetime(2025, 6, 1, tzinfo=UTC).date()) == "summer"
    # The winter peak is the peak of winter even though summer's is pricier.
    winter_slots = list(t.slots(january.replace(hour=0), january.replace(hour=23)))
    assert {s.band.name for s in winter_slots if s.peak} == {"winter-peak"}
    assert t.cheapest_price_per_kwh == 0.10


def test_base_band_that_is_never_in_force_is_not_the_peak() -> None:
    t = tariff(
        """\
      price_per_kwh: 5.00
      bands:
        - {name: night, price_per_kwh: 0.10, hours: "00:00-07:00"}
        - {name: day, price_per_kwh: 0.25, hours: "07:00-24:00"}
"""
    )
    day = datetime(2025, 3, 5, tzinfo=UTC)
    slots = list(t.slots(day, day + timedelta(days=1)))
    assert {s.band.name for s in slots if s.peak} == {"day"}
    assert t.cheapest_price_per_kwh == 0.10


def test_first_matching_band_wins() -> None:
    t = tariff(
        """\
      price_per_kwh: 0.30
      bands:
        - {name: a, price_per_kwh: 0.11, hours: "08:00-10:00"}
        - {name: b, price_per_kwh: 0.22, hours: "09:00-12:00"}
"""
    )
    assert t.band_at(datetime(2025, 3, 5, 9, 30, tzinfo=UTC)).name == "a"
    assert t.band_at(datetime(2025, 3, 5, 10, 30, tzinfo=UTC)).name == "b"


def test_band_co2_falls_back_to_tariff_co2() -> None:
    t = tariff(
        """\
      price_per_kwh: 0.30
      co2_g_per_kwh: 400
      bands:
        - {name: solar, price_per_kwh: 0.2, co2_g_per_kwh: 50, hours: "10:00-16:00"}
        - {name: night, price_per_kwh: 0.1, hours: "00:00-06:00"}
"""
    )
    co2 = {b.name: b.co2_g_per_kwh for b in t.bands}
    assert co2 == {"standard": 400, "solar": 50, "night": 400}


def test_naive_times_are_refused() -> None:
    t = Tariff.flat("x", 0.1)
    with pytest.raises(TariffError, match="no timezone"):
        t.band_at(datetime(2025, 1, 1))


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_wall_to_utc_gap_and_fold() -> None:
    # 02:30 never happens on 2024-03-10: it maps to the jump, 07:00 UTC.
    assert wall_to_utc(datetime(2024, 3, 10, 2, 30), NY) == utc(2024, 3, 10, 7)
    # 01:30 happens twice on 2024-11-03: the first time (EDT) is taken.
    assert wall_to_utc(datetime(2024, 11, 3, 1, 30), NY) == utc(2024, 11, 3, 5, 30)
    assert wall_to_utc(datetime(2024, 7, 1, 12), NY) == utc(2024, 7, 1, 16)
    change = next_offset_change(
        BERLIN, datetime(2025, 3, 30, tzinfo=UTC), datetime(2025, 3, 30, 5, tzinfo=UTC)
    )
    assert change == datetime(2025, 3, 30, 1, tzinfo=UTC)


# -- assignment precedence --------------------------------------------------------

BOOK = """\
sensors:
  - {address: 1, name: own, tariff: s, rack: r1, customer: c1, location: l1}
  - {address: 2, name: by-rack, rack: r1, customer: c1, location: l1}
  - {address: 3, name: by-customer, rack: r9, customer: c1, location: l1}
  - {address: 4, name: by-location, customer: c9, location: l1}
  - {address: 5, name: by-default, location: l9}
locations:
  l1: {pue: 1.6, tariff: l}
tariffs:
  default: d
  racks: {r1: r}
  customers: {c1: c}
  plans:
    s: {price_per_kwh: 0.1}
    r: {price_per_kwh: 0.2}
    c: {price_per_kwh: 0.3}
    l: {price_per_kwh: 0.4}
    d: {price_per_kwh: 0.5}
"""


def test_precedence_sensor_rack_customer_location_default() -> None:
    book = TariffBook(parse_config(BOOK))
    got = {}
    for address in range(1, 6):
        a = book.for_sensor(address)
        assert a.tariff is not None
        got[address] = (a.tariff.name, a.tariff_source)
    assert got == {
        1: ("s", "sensor"),
        2: ("r", "rack"),
        3: ("c", "customer"),
        4: ("l", "location"),
        5: ("d", "default"),
    }
    assert book.for_sensor(2).pue == 1.6
    assert book.for_sensor(5).pue == 1.0
    unknown = book.for_sensor(77)
    assert unknown.name == "sensor-77"
    assert unknown.tariff is not None
    assert unknown.tariff.name == "d"


def test_no_tariffs_means_no_tariff() -> None:
    book = TariffBook(parse_config("sensors: [{address: 1}]\n"))
    assert book.for_sensor(1).tariff is None
    assert book.for_sensor(1).tariff_source == "none"


# -- config validation ------------------------------------------------------------


PLAN = "tariffs:\n  plans:\n    a:\n      price_per_kwh: 1\n"
BAND = PLAN + "      bands:\n        - {name: b, price_per_kwh: 1, "
TWO_PLANS = (
    "    a: {price_per_kwh: 1, currency: USD}\n    b: {price_per_kwh: 1, currency: EUR}"
)


@pytest.mark.parametrize(
    ("yaml_text", "line", "fragment"),
    [
        (PLAN + "      pricee: 2\n", 5, "unknown key 'pricee'"),
        (
            "sensors:\n  - address: 1\n    tariff: nope\n" + PLAN,
            3,
            "tariff 'nope' is not defined",
        ),
        ("locations:\n  dc:\n    tariff: gone\n", 3, "tariff 'gone' is not defined"),
        ("tariffs:\n  default: x\n", 2, "not under plans"),
        ("tariffs:\n  timezone: Mars/Olympus\n", 2, "unknown timezone"),
        (BAND + "hours: 25:00-26:00}\n", 6, "HH:MM-HH:MM"),
        (BAND + "hours: 22:00}\n", 6, "must be a string"),
        (BAND + "days: someday}\n", 6, "days"),
        (BAND + "seasons: summer}\n", 5, "season(s) summer not defined"),
        (
            PLAN + "      seasons:\n        s1: {start: 01-01, end: 06-30}\n"
            "        s2: {start: 06-30, end: 12-31}\n",
            5,
            "overlap on 06-30",
        ),
        (PLAN + "      holidays: [02-30]\n", 5, "not a month and day"),
        ("tariffs:\n  plans:\n" + TWO_PLANS + "\n", 2, "one currency"),
    ],
)
def test_config_errors_name_file_line_and_key(
    yaml_text: str, line: int, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml_text, "cost.yaml")
    text = str(info.value)
    assert f"cost.yaml:{line}" in text
    assert fragment in text


def test_the_documented_example_config_is_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import re

    doc = (REPO_ROOT / "docs" / "cost.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)
    assert len(blocks) == 3
    # The market block names the example files; read them from their folder.
    market = parse_config(blocks[1], REPO_ROOT / "config" / "examples" / "doc.yaml")
    assert market.tariffs.plans["spot"].prices is not None
    assert market.locations["fra-1"].co2 is not None
    monkeypatch.setenv("X_ACCESS_TOKEN", "t")
    monkeypatch.setenv("X_ACCESS_TOKEN_SECRET", "s")
    config = parse_config(blocks[0])
    book = TariffBook(config)
    names = {a: getattr(book.for_sensor(a).tariff, "name", None) for a in (1, 7)}
    assert names == {1: "colo", 7: "home"}
    assert book.for_sensor(1).pue == 1.35
    # The summaries block needs its credential files; check its shape only.
    text = (
        blocks[2]
        .replace("_file: /etc/wattd/", ": secret-")
        .replace("enabled: true", "enabled: false")
    )
    summary = parse_config(text).summaries["weekly"]
    assert summary.by == "rack"
    assert summary.schedule == "0 8 * * mon"
