from __future__ import annotations

import re
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.fixtures.services import require_binary
from wattd.config import parse_config
from wattd.costing.cost import EnergyInterval
from wattd.costing.report.engine import FRAME_PERIOD_S, Report, build_report
from wattd.costing.report.html import HEIGHT, WIDTH, render_html
from wattd.costing.report.text import format_money

CONFIG = """\
sensors:
  - {address: 1, name: web-1, customer: acme, location: fra}
  - {address: 2, name: web-2, customer: acme, location: fra}
  - {address: 3, name: other, customer: "<b>evil & co</b>"}
locations:
  fra: {pue: 1.4}
tariffs:
  timezone: Europe/Berlin
  default: tou
  plans:
    tou:
      currency: EUR
      price_per_kwh: 0.30
      co2_g_per_kwh: 350
      bands:
        - {name: night, price_per_kwh: 0.10, hours: "00:00-06:00"}
        - {name: peak, price_per_kwh: 1.00, hours: "17:00-20:00", days: weekdays}
"""

START = datetime(2025, 3, 2, 23, tzinfo=UTC)  # Monday 2025-03-03, 00:00 Berlin
DAYS = 7
SILENT_DAY = 3  # Thursday: both meters silent from 06:00 to 18:00 local
BAR_RGB = (0x2F, 0x7E, 0xD8)
LINE_RGB = (0xD9, 0x62, 0x2B)


def load(sensor: int, t: datetime) -> float:
    """A server-like load: higher in working hours, growing over the week."""
    hour = (t.hour + 1) % 24
    base = 150.0 if sensor == 1 else 90.0
    return base * (1.6 if 8 <= hour < 20 else 1.0) * (1 + 0.05 * (t - START).days)


def intervals() -> list[EnergyInterval]:
    out = []
    for sensor in (1, 2, 3):
        for minute in range(DAYS * 24 * 60):
            t = START + timedelta(minutes=minute)
            silent_from = START + timedelta(days=SILENT_DAY, hours=6)
            if sensor != 3 and silent_from <= t < silent_from + timedelta(hours=12):
                continue
            w = load(sensor, t)
            out.append(
                EnergyInterval(
                    sensor=sensor,
                    start=t,
                    end=t + timedelta(minutes=1),
                    wh=w / 60,
                    mean_watts=w,
                    max_watts=w * 1.05,
                    readings=60 / FRAME_PERIOD_S,
                )
            )
    return out


@pytest.fixture(scope="module")
def report() -> Report:
    return build_report(
        parse_config(CONFIG),
        intervals(),
        START,
        START + timedelta(days=DAYS),
        by="customer",
        title="Power bill",
    )


VOID = {"meta", "link", "br", "img", "input", "hr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""
    parents: list[str] = field(default_factory=list)


class Collector(HTMLParser):
    """Flattens a DOM dump into elements with their ancestors' ids."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self.stack: list[Element] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parents = [p.attrs.get("id", "") for p in self.stack]
        el = Element(tag, {k: v or "" for k, v in attrs}, parents=parents)
        self.elements.append(el)
        if tag not in VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parents = [p.attrs.get("id", "") for p in self.stack]
        self.elements.append(
            Element(tag, {k: v or "" for k, v in attrs}, parents=parents)
        )

    def handle_endtag(self, tag: str) -> None:
        if any(e.tag == tag for e in self.stack):
            while self.stack.pop().tag != tag:
                pass

    def handle_data(self, data: str) -> None:
        for el in self.stack:
            el.text += data

    def find(
        self, tag: str, *, cls: str | None = None, within: str | None = None
    ) -> list[Element]:
        return [
            e
            for e in self.elements
            if e.tag == tag
            and (cls is None or cls in e.attrs.get("class", "").split())
            and (within is None or within in e.parents)
        ]


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[bytes]:
    binary = require_binary("chromium")
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit, non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(
                ">IIBBBBB", chunk
            )
            assert depth == 8
            assert interlace == 0
            channels = {2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        prev = line
    pixels = [
        (row[x * channels], row[x * channels + 1], row[x * channels + 2])
        for row in rows
        for x in range(width)
    ]
    return width, height, pixels


def numbers(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", d)]


# -- without a browser ----------------------------------------------------


def test_html_is_self_contained_and_escapes_config_text(report: Report) -> None:
    text = render_html(report)
    assert "<script" not in text.lower()
    external = re.findall(r"(?:src|href)=\"(?!#)([^\"]+)\"", text)
    assert external == []
    assert re.findall(r"https?://[^\"\s)]+", text) == ["http://www.w3.org/2000/svg"] * 2
    assert "<b>evil" not in text
    assert "&lt;b&gt;evil &amp; co&lt;/b&gt;" in text


# -- rendered by headless chromium ---------------------------------------


@pytest.mark.services
@pytest.mark.timeout(180)
def test_chromium_shows_title_totals_and_sane_charts(
    report: Report, tmp_path: Path
) -> None:
    page = tmp_path / "acme.html"
    page.write_text(render_html(report, group="acme"), encoding="utf-8")
    dom = chromium(
        "--dump-dom", page.as_uri(), profile=tmp_path / "profile"
    ).stdout.decode()
    doc = Collector()
    doc.feed(dom)
    acme = report.group("acme")

    title = doc.find("title")[0]  # the page's; later ones are SVG tooltips
    assert title.text.strip() == "Power bill \N{EM DASH} acme"
    [h1] = doc.find("h1")
    assert h1.text.strip() == title.text.strip()
    cards = {
        e.attrs["data-metric"]: re.sub(r"\s+", " ", e.text).strip()
        for e in doc.find("div", cls="card")
    }
    assert cards["cost"].endswith(format_money(acme.cost, "EUR"))
    assert cards["it_kwh"].endswith(f"{acme.it_kwh:,.2f} kWh")
    assert cards["facility_kwh"].endswith(f"{acme.it_kwh * 1.4:,.2f} kWh")
    assert acme.completeness is not None
    assert cards["completeness"].endswith(f"{acme.completeness * 100:.0f}%")

    # Daily cost: one bar per local day, heights proportional to the cost,
    # inside the chart, and the day with missing data drawn as incomplete.
    bars = doc.find("rect", cls="bar", within="daily-cost")
    assert [b.attrs["data-day"] for b in bars] == [d.day.isoformat() for d in acme.days]
    assert len(bars) == DAYS
    heights = [float(b.attrs["height"]) for b in bars]
    costs = [d.cost or 0.0 for d in acme.days]
    for b, h in zip(bars, heights, strict=True):
        y = float(b.attrs["y"])
        assert y >= 0
        assert y + h <= HEIGHT
        assert 0 <= float(b.attrs["x"]) <= WIDTH
    tallest = max(range(DAYS), key=lambda i: heights[i])
    assert tallest == max(range(DAYS), key=lambda i: costs[i])
    for h, c in zip(heights, costs, strict=True):
        assert h / heights[tallest] == pytest.approx(c / costs[tallest], abs=0.01)
    incomplete = [b.attrs["data-day"] for b in bars if "incomplete" in b.attrs["class"]]
    assert incomplete == [acme.days[SILENT_DAY].day.isoformat()]

    # Hourly profile: a line broken where no frame came, and the gap shaded.
    missing = doc.find("rect", cls="missing", within="hourly-load")
    assert len(missing) == 12
    paths = doc.find("path", cls="load", within="hourly-load")
    assert len(paths) == 2
    points = [p for path in paths for p in numbers(path.attrs["d"])]
    assert len(points) == DAYS * 24 - 12
    assert all(0 <= x <= WIDTH and 0 <= y <= HEIGHT for x, y in points)
    assert min(y for _, y in points) < HEIGHT / 2  # the line rises into the chart

    groups = [e.attrs["data-group"] for e in doc.find("tr") if "data-group" in e.attrs]
    assert groups == [g.key for g in report.groups] + ["total"]

    # What a person sees: the bars and the load line are on screen, in their
    # colours (a half-scale screenshot keeps the pure-Python PNG decode quick).
    shot = tmp_path / "shot.png"
    chromium(
        f"--screenshot={shot}",
        "--window-size=900,1600",
        "--force-device-scale-factor=0.5",
        page.as_uri(),
        profile=tmp_path / "p2",
    )
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (450, 800)
    bar = sum(1 for p in pixels if near(p, BAR_RGB))
    line = sum(1 for p in pixels if near(p, LINE_RGB))
    assert bar > 8000  # six solid bars of roughly 37 x 80 px
    assert line > 50  # a 1 px anti-aliased line at half scale
    blue_rows = [i // width for i, p in enumerate(pixels) if near(p, BAR_RGB)]
    orange_rows = [i // width for i, p in enumerate(pixels) if near(p, LINE_RGB)]
    assert max(blue_rows) < min(orange_rows)  # daily chart above the hourly one


def near(rgb: tuple[int, int, int], ref: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 12 for a, b in zip(rgb, ref, strict=True))


def css_rule(selector: str) -> str:
    from wattd.costing.report.html import _CSS

    match = re.search(re.escape(selector) + r"\{([^}]*)\}", _CSS)
    assert match, selector
    return match.group(1)


def test_hourly_profile_tells_peak_partial_and_missing_hours_apart() -> None:
    # Wednesday 2025-03-05 in Berlin: a 100 W meter sends from 10:59:59 (one
    # second of the 10:00 hour) to 21:00; 17:00-20:00 are peak hours.
    from wattd.core.readings import Reading
    from wattd.costing.cost import intervals_from_readings

    day = datetime(2025, 3, 4, 23, tzinfo=UTC)
    first = day + timedelta(hours=10, minutes=59, seconds=59)
    readings = []
    for i in range(int(10 * 3600 / FRAME_PERIOD_S)):
        t = first + timedelta(seconds=i * FRAME_PERIOD_S)
        readings.append(
            Reading(
                sensor=1,
                name="web-1",
                time=t,
                monotonic_s=t.timestamp(),
                watts=100.0,
                va=100.0,
                vrms=230.0,
                irms=0.43,
                power_factor=1.0,
                wh_total=i * 100 * FRAME_PERIOD_S / 3600,
                wh_delta=0.0 if i == 0 else 100 * FRAME_PERIOD_S / 3600,
                rssi_dbm=-50,
            )
        )
    report = build_report(
        parse_config(CONFIG),
        intervals_from_readings(readings),
        day,
        day + timedelta(days=1),
        by="sensor",
        only=["web-1"],
    )
    doc = Collector()
    doc.feed(render_html(report, group="web-1"))
    slot = (WIDTH - 64 - 12) / 24

    def hours_of(cls: str) -> list[int]:
        rects = doc.find("rect", cls=cls, within="hourly-load")
        return [round((float(r.attrs["x"]) - 64) / slot) for r in rects]

    assert hours_of("missing") == [*range(10), 21, 22, 23]
    assert hours_of("partial") == [10]
    assert hours_of("peak") == [17, 18, 19]
    # The partial hour is drawn at the power while data came, not at 0 W.
    [path] = doc.find("path", cls="load", within="hourly-load")
    points = numbers(path.attrs["d"])
    assert len(points) == 11
    assert len({y for _, y in points}) == 1
    [marker] = doc.find("circle", cls="partial-point", within="hourly-load")
    assert float(marker.attrs["cy"]) == pytest.approx(points[0][1])
    # One legend entry per style, and three styles that differ.
    legend = [li.attrs["data-key"] for li in doc.find("li", within="hourly-legend")]
    assert legend == ["load", "peak", "partial", "missing"]
    fills = {css_rule(f".{cls}") for cls in ("peak", "partial", "missing")}
    assert len(fills) == 3
    daily = [li.attrs["data-key"] for li in doc.find("li", within="daily-legend")]
    assert daily == ["bar", "incomplete"]
    cards = {
        e.attrs["data-metric"]: re.sub(r"\s+", " ", e.text).strip()
        for e in doc.find("div", cls="card")
    }
    assert cards["mean_watts"].startswith("Mean power100 W")
    assert "over 10 h with data" in cards["mean_watts"]


def test_small_daily_costs_label_the_axis_with_significant_digits() -> None:
    # 0.2 W for two days: about €0.0015 a day; the axis top must not read €0.00.
    start = datetime(2025, 3, 4, 23, tzinfo=UTC)
    intervals = [
        EnergyInterval(
            sensor=1,
            start=start + timedelta(hours=h),
            end=start + timedelta(hours=h + 1),
            wh=0.2,
            readings=3600 / FRAME_PERIOD_S,
        )
        for h in range(48)
    ]
    report = build_report(
        parse_config(CONFIG),
        intervals,
        start,
        start + timedelta(days=2),
        only=["web-1"],
    )
    doc = Collector()
    doc.feed(render_html(report, group="web-1"))
    labels = [t.text for t in doc.find("text", cls="tick", within="daily-cost")]
    top = format_money(
        max(d.cost or 0.0 for d in report.group("web-1").days) * 1.1, "EUR"
    )
    assert top in labels
    assert re.fullmatch(r"€0\.00\d\d", top)
