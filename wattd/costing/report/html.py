"""The HTML report: one self-contained file a customer can open anywhere.

No scripts, no fonts, no CDN: inline CSS and two inline SVG charts (daily
cost, hourly load profile), each with a legend. Days with too few frames are
drawn hatched; in the hourly profile an hour without any frame is a hatched
gap in the line, an hour with some frames is shaded and drawn at the power
while data came, and peak hours are a strip along the time axis. Missing data
looks missing, not cheap. Every piece of text from the config is escaped.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo

from wattd.costing.report.bill import ESTIMATE_NOTE, bill_lines, scenario_label
from wattd.costing.report.engine import FRAME_PERIOD_S, TOTAL
from wattd.costing.report.text import (
    data_note,
    format_amount,
    format_duration,
    format_money,
)

if TYPE_CHECKING:
    from wattd.costing.report.engine import GroupReport, HourFigures, Report

__all__ = ["INCOMPLETE_BELOW", "render_html"]

DASH: Final = "\N{EM DASH}"
INCOMPLETE_BELOW: Final = 0.9
"""A day or hour with fewer than this share of expected frames is incomplete."""

WIDTH: Final = 720
HEIGHT: Final = 240
LEFT: Final = 64
RIGHT: Final = 12
TOP: Final = 14
BOTTOM: Final = 34
PEAK_STRIP: Final = 6
"""Height of the strip that marks peak hours along the time axis."""

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:780px;color:#1d2733;background:#fff;line-height:1.4}
h1{font-size:1.6rem;margin:0 0 .2rem}h2{font-size:1.15rem;margin:2rem 0 .5rem}
.sub{color:#5b6b7c;margin:0 0 1.2rem}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:.6rem}
.card{border:1px solid #d5dde6;border-radius:8px;padding:.6rem .7rem}
.card .label{display:block;color:#5b6b7c;font-size:.8rem}
.card .value{display:block;font-size:1.25rem;font-weight:600}
svg{display:block;max-width:100%;height:auto}
.axis{stroke:#8796a5;stroke-width:1}.tick{fill:#5b6b7c;font-size:11px}
.bar{fill:#2f7ed8}.bar.incomplete{fill:url(#hatch);stroke:#2f7ed8}
.load{fill:none;stroke:#d9622b;stroke-width:2}
.partial-point{fill:#fff;stroke:#d9622b;stroke-width:1.5}
.missing{fill:url(#gap)}.partial{fill:#e9edf1}.peak{fill:#e8b04a}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;padding:0;
margin:.4rem 0 0;font-size:.85rem;color:#3b4a5a}
.legend li{display:flex;align-items:center;gap:.35rem}
.swatch{display:inline-block;width:1.6rem;height:.8rem;border-radius:2px}
.swatch.bar{background:#2f7ed8}.swatch.partial{background:#e9edf1}
.swatch.bar.incomplete{border:1px solid #2f7ed8;background:repeating-linear-gradient(
45deg,#cfe0f5 0 3px,#2f7ed8 3px 5px)}
.swatch.missing{background:repeating-linear-gradient(45deg,#f3f5f7 0 3px,#b9c3cd 3px
5px)}
.swatch.load{height:2px;background:#d9622b}.swatch.peak{height:.4rem;background:#e8b04a}
.card .hint{display:block;color:#5b6b7c;font-size:.75rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{padding:.3rem .4rem;border-bottom:1px solid #e3e8ee;text-align:right}
th:first-child,td:first-child{text-align:left}
.note{color:#5b6b7c;font-size:.85rem}
"""


def render_html(report: Report, *, group: str | None = None) -> str:
    """The report as one HTML document.

    With ``group`` the headline figures and charts are that group's (a
    customer's report); otherwise they are the totals.
    """
    tz = ZoneInfo(report.timezone)
    focus = report.group(group) if group else report.total
    who = focus.key if focus.key != TOTAL else "all meters"
    title = f"{report.title} \N{EM DASH} {who}"
    if report.customer and focus.key == TOTAL:
        title = report.title  # "Energy bill for acme" says whose meters
    start = report.start.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    end = report.end.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f'<h1 id="title">{_e(title)}</h1>',
        f'<p class="sub">{_e(start)} to {_e(end)} ({_e(report.timezone)})'
        f" \N{MIDDLE DOT} generated {_e(report.generated.strftime('%Y-%m-%d %H:%M'))}"
        " UTC</p>",
        _cards(focus, report.currency, (report.end - report.start).total_seconds()),
        _charges(focus, report.currency),
        "<h2>Daily cost</h2>" if focus.cost is not None else "<h2>Daily energy</h2>",
        _daily_chart(focus, report.currency),
        _legend(
            "daily-legend",
            [
                ("bar", "day with data"),
                (
                    "bar incomplete",
                    f"under {INCOMPLETE_BELOW:.0%} of the expected frames:"
                    " understated, not low",
                ),
            ],
        ),
        "<h2>Hourly load profile</h2>",
        _hourly_chart(focus, tz),
        _legend(
            "hourly-legend",
            [
                ("load", "mean power while data came"),
                ("peak", "peak hours (the tariff's most expensive band)"),
                (
                    "partial",
                    f"partial data (under {INCOMPLETE_BELOW:.0%} of the frames)",
                ),
                ("missing", "no data"),
            ],
        ),
        _table(report),
        _comparison(report),
        _notes(report),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _headroom(top: float) -> float:
    """The chart's full scale: a tenth above the highest value, 1 if all are 0."""
    return top * 1.1 if top > 0 else 1.0


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _legend(legend_id: str, entries: list[tuple[str, str]]) -> str:
    items = "".join(
        f'<li data-key="{_e(cls.split()[-1])}"><span class="swatch {_e(cls)}"></span>'
        f"{_e(text)}</li>"
        for cls, text in entries
    )
    return f'<ul class="legend" id="{legend_id}">{items}</ul>'


def _cards(g: GroupReport, currency: str | None, range_s: float) -> str:
    measured = g.data_s > 0 or g.it_kwh != 0
    mean = f"{format_amount(g.mean_watts, 0)} W" if measured else DASH
    peak = f"{format_amount(g.peak_watts, 0)} W" if measured else DASH
    note = data_note(g, range_s) or ""
    hints = {
        "mean_watts": next((p for p in note.split(", ") if p.startswith("mean")), ""),
        "peak_watts": next((p for p in note.split(", ") if p.startswith("peak")), ""),
    }
    items = [
        ("it_kwh", "IT energy", f"{format_amount(g.it_kwh, 2)} kWh"),
        ("facility_kwh", "Facility energy", f"{format_amount(g.facility_kwh, 2)} kWh"),
        ("cost", "Cost", format_money(g.cost, currency)),
        (
            "co2",
            "CO\N{SUBSCRIPT TWO}",
            DASH if g.co2_kg is None else f"{g.co2_kg:,.1f} kg",
        ),
        ("mean_watts", "Mean power", mean),
        ("peak_watts", "Peak (15 min)", peak),
        ("peak_share", "Energy in peak hours", _pct(g.peak_share)),
        ("peak_premium", "Peak premium", format_money(g.peak_premium, currency)),
        ("completeness", "Data received", _pct(g.completeness)),
    ]
    if g.demand_charge is not None:
        items.insert(
            3, ("demand", "Demand charge", format_money(g.demand_charge, currency))
        )
    cards = "".join(
        f'<div class="card" data-metric="{key}"><span class="label">{_e(label)}</span>'
        f'<span class="value">{_e(value)}</span>'
        + (f'<span class="hint">{_e(hints[key])}</span>' if hints.get(key) else "")
        + "</div>"
        for key, label, value in items
    )
    return f'<div class="cards">{cards}</div>'


def _frame(svg_id: str, label: str, body: list[str], y_max: str) -> str:
    plot_bottom = HEIGHT - BOTTOM
    return (
        f'<svg id="{svg_id}" xmlns="http://www.w3.org/2000/svg" role="img"'
        f' aria-label="{_e(label)}" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="{WIDTH}" height="{HEIGHT}">'
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse"'
        ' patternTransform="rotate(45)"><rect width="6" height="6" fill="#cfe0f5"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#2f7ed8" stroke-width="2"/>'
        "</pattern>"
        '<pattern id="gap" width="6" height="6" patternUnits="userSpaceOnUse"'
        ' patternTransform="rotate(45)"><rect width="6" height="6" fill="#f3f5f7"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#b9c3cd" stroke-width="2"/>'
        "</pattern></defs>"
        + "".join(body)
        + f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{plot_bottom}"/>'
        f'<line class="axis" x1="{LEFT}" y1="{plot_bottom}" x2="{WIDTH - RIGHT}"'
        f' y2="{plot_bottom}"/>'
        f'<text class="tick" x="{LEFT - 6}" y="{TOP + 10}"'
        f' text-anchor="end">{_e(y_max)}</text>'
        f'<text class="tick" x="{LEFT - 6}" y="{plot_bottom}"'
        ' text-anchor="end">0</text>'
        "</svg>"
    )


def _daily_chart(g: GroupReport, currency: str | None) -> str:
    priced = g.cost is not None
    values = [(d.cost or 0.0) if priced else d.it_kwh for d in g.days]
    top = _headroom(max(values, default=0.0))
    n = max(len(values), 1)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / n
    body = []
    label_every = max(1, round(n / 10))
    for i, (day, value) in enumerate(zip(g.days, values, strict=True)):
        h = plot_h * value / top
        x = LEFT + i * slot + slot * 0.1
        y = TOP + plot_h - h
        incomplete = (
            day.completeness is not None and day.completeness < INCOMPLETE_BELOW
        )
        shown = (
            format_money(value, currency)
            if priced
            else f"{format_amount(value, 2)} kWh"
        )
        got = (
            "no data" if day.completeness is None else f"{day.completeness * 100:.0f}%"
        )
        body.append(
            f'<rect class="bar{" incomplete" if incomplete else ""}"'
            f' data-day="{day.day.isoformat()}" data-value="{value:.6f}"'
            f' x="{x:.2f}" y="{y:.2f}" width="{slot * 0.8:.2f}" height="{h:.2f}">'
            f"<title>{_e(day.day.isoformat())}: {_e(shown)} (data {got})</title></rect>"
        )
        if i % label_every == 0:
            body.append(
                f'<text class="tick" x="{x + slot * 0.4:.2f}"'
                f' y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                f"{day.day.strftime('%m-%d')}</text>"
            )
    y_max = format_money(top, currency) if priced else f"{format_amount(top, 1)} kWh"
    return _frame("daily-cost", "Daily cost" if priced else "Daily energy", body, y_max)


def _hourly_chart(g: GroupReport, tz: ZoneInfo) -> str:
    watts = [h.mean_watts for h in g.hours]
    top = _headroom(max((w for w in watts if w is not None), default=0.0))
    n = max(len(watts), 1)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / n
    body = []
    plot_bottom = TOP + plot_h
    for i, hour in enumerate(g.hours):
        x = LEFT + i * slot
        if hour.mean_watts is None:
            body.append(
                f'<rect class="missing" x="{x:.2f}" y="{TOP}" width="{slot:.2f}"'
                f' height="{plot_h}"><title>no data</title></rect>'
            )
        elif _partial(hour):
            body.append(
                f'<rect class="partial" x="{x:.2f}" y="{TOP}" width="{slot:.2f}"'
                f' height="{plot_h}"><title>{_e(_partial_text(hour))}</title></rect>'
            )
        if hour.peak_share > 0.5:
            body.append(
                f'<rect class="peak" x="{x:.2f}" y="{plot_bottom - PEAK_STRIP}"'
                f' width="{slot:.2f}" height="{PEAK_STRIP}"><title>peak hours</title>'
                "</rect>"
            )
    runs: list[list[str]] = []
    current: list[str] = []
    for i, w in enumerate(watts):
        if w is None:
            if current:
                runs.append(current)
            current = []
            continue
        x = LEFT + (i + 0.5) * slot
        y = TOP + plot_h * (1 - max(w, 0.0) / top)
        current.append(f"{x:.2f},{y:.2f}")
    if current:
        runs.append(current)
    for run in runs:
        if len(run) == 1:
            run.append(run[0])
        body.append(f'<path class="load" d="M{" L".join(run)}"/>')
    for i, hour in enumerate(g.hours):
        if hour.mean_watts is not None and _partial(hour):
            x = LEFT + (i + 0.5) * slot
            y = TOP + plot_h * (1 - max(hour.mean_watts, 0.0) / top)
            body.append(
                f'<circle class="partial-point" cx="{x:.2f}" cy="{y:.2f}" r="3">'
                f"<title>{_e(_partial_text(hour))}</title></circle>"
            )
    label_every = max(1, round(n / 8))
    for i, hour in enumerate(g.hours):
        if i % label_every == 0:
            local = hour.start.astimezone(tz)
            text = local.strftime("%H:%M") if n <= 48 else local.strftime("%m-%d %H")
            body.append(
                f'<text class="tick" x="{LEFT + (i + 0.5) * slot:.2f}"'
                f' y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{_e(text)}</text>'
            )
    return _frame(
        "hourly-load", "Hourly load profile", body, f"{format_amount(top, 0)} W"
    )


def _partial(hour: HourFigures) -> bool:
    return hour.completeness is not None and hour.completeness < INCOMPLETE_BELOW


def _partial_text(hour: HourFigures) -> str:
    got = 0.0 if hour.completeness is None else hour.completeness
    watts = hour.mean_watts or 0.0
    return (
        f"partial data: {got:.0%} of the frames; {format_amount(watts, 0)} W over"
        f" {format_duration(hour.data_s)} with data"
    )


def _table(report: Report) -> str:
    cur = report.currency
    head = (
        f"<tr><th>{_e(report.by)}</th><th>IT kWh</th><th>Facility kWh</th>"
        "<th>Cost</th><th>Cost per IT kWh</th><th>CO\N{SUBSCRIPT TWO} kg</th>"
        "<th>Peak %</th><th>Data</th></tr>"
    )
    rows = []
    for g in [*report.groups, report.total]:
        cells = [
            _e(g.key),
            format_amount(g.it_kwh, 2),
            format_amount(g.facility_kwh, 2),
            _e(format_money(g.cost, cur)),
            _e(format_money(g.cost_per_it_kwh, cur)),
            DASH if g.co2_kg is None else f"{g.co2_kg:,.1f}",
            _pct(g.peak_share),
            _pct(g.completeness),
        ]
        tds = "".join(f"<td>{c}</td>" for c in cells)
        rows.append(f'<tr data-group="{_e(g.key)}">{tds}</tr>')
    body = "".join(rows)
    return f'<h2>By {_e(report.by)}</h2><table id="groups">{head}{body}</table>'


def _charges(g: GroupReport, cur: str | None) -> str:
    """The bill lines: energy by band or market price, standing, demand, total."""
    if not g.prices and g.standing_charge is None and not g.demand:
        return ""
    rows = []
    for line in bill_lines(g):
        qty = DASH if line.quantity is None else format_amount(line.quantity, 2)
        if line.unit == "days" and line.quantity is not None:
            qty = f"{line.quantity:g}"
        rows.append(
            f"<tr><td>{_e(line.label)}</td><td>{qty} {_e(line.unit)}</td>"
            f"<td>{_e(format_money(line.amount, cur))}</td></tr>"
        )
    note = ""
    if g.fallback_kwh > 0:
        note = (
            f'<p class="note" id="fallback">{format_amount(g.fallback_kwh, 3)} kWh'
            " (IT) had no row in the price file and were priced by the plan's"
            " bands.</p>"
        )
    head = "<tr><th>Charge</th><th>Quantity</th><th>Amount</th></tr>"
    body = "".join(rows)
    return f'<h2>Charges</h2><table id="charges">{head}{body}</table>{note}'


def _comparison(report: Report) -> str:
    cmp = report.comparison
    if cmp is None:
        return ""
    cur = report.currency
    scenarios = cmp.scenarios
    rows = [
        f"<tr><td>{_e(scenario_label(s, cmp.flexible_share))}</td>"
        f"<td>{format_amount(s.facility_kwh, 2)}</td>"
        f"<td>{_e(format_money(s.energy_cost, cur))}</td>"
        f"<td>{DASH if s.co2_kg is None else f'{s.co2_kg:,.2f}'}</td></tr>"
        for s in scenarios
    ]
    head = (
        "<tr><th>Where and when</th><th>Facility kWh</th><th>Energy cost</th>"
        "<th>CO\N{SUBSCRIPT TWO} kg</th></tr>"
    )
    return (
        f'<h2>Comparison (estimate)</h2><table id="comparison">{head}'
        f'{"".join(rows)}</table><p class="note">{_e(ESTIMATE_NOTE)}</p>'
    )


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.0f}%"


def _notes(report: Report) -> str:
    return (
        '<p class="note">Facility energy is IT energy times the site overhead (PUE);'
        " cost and CO\N{SUBSCRIPT TWO} are on facility energy. Peak hours are the"
        " tariff's most expensive band; the peak premium is what that energy cost"
        " above the cheapest band. Data received counts radio frames against one"
        f" per {FRAME_PERIOD_S} s per meter. Hatched days had under"
        f" {INCOMPLETE_BELOW:.0%} of the expected frames, so their cost is"
        " understated, not low. Mean power, peak power and the hourly profile"
        " count only the time with data: an hour without frames is a gap, not"
        " 0 W, and an hour with few frames shows the power while they came.</p>"
    )
