"""Report output as text: a terminal table, CSV and JSON.

Numbers in CSV and JSON are unrounded; the table rounds for reading. Money is
shown with the currency's symbol where one is common, else with its code.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from wattd.costing.report.bill import (
    ESTIMATE_NOTE,
    bill_lines,
    comparison_to_dict,
    price_label,
    scenario_label,
    utc_iso,
)
from wattd.costing.report.engine import FRAME_PERIOD_S, FULL_SHARE

if TYPE_CHECKING:
    from wattd.costing.report.engine import GroupReport, Report

__all__ = [
    "data_note",
    "format_amount",
    "format_duration",
    "format_money",
    "render_csv",
    "render_json",
    "render_table",
    "report_to_dict",
]

_SYMBOLS: Final = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹"}
DASH: Final = "\N{EM DASH}"
SIGNIFICANT: Final = 2
"""Small values keep this many significant digits, so €0.0031 is not €0.00."""
_MAX_DECIMALS: Final = 9


def format_amount(value: float, decimals: int = 2) -> str:
    """A number with at least ``decimals`` decimals and two significant digits.

    ``1,234.50``, ``0.31``, ``0.0031``, ``0.0010`` (with 2 decimals). Money,
    energy and power labels in every report and summary go through this, so
    one magnitude always looks the same.
    """
    if value == 0 or not math.isfinite(value):
        return f"{value:,.{decimals}f}"
    rounded = float(f"{abs(value):.{SIGNIFICANT}g}")
    magnitude = math.floor(math.log10(rounded))
    places = min(_MAX_DECIMALS, max(decimals, SIGNIFICANT - 1 - magnitude))
    return f"{value:,.{places}f}"


def format_money(amount: float | None, currency: str | None) -> str:
    """``$61.80``, ``€0.0031``, ``12.00 CHF``; an em dash when unpriced."""
    if amount is None:
        return DASH
    code = currency or ""
    sign = "-" if amount < 0 else ""
    digits = format_amount(abs(amount))
    symbol = _SYMBOLS.get(code)
    if symbol:
        return f"{sign}{symbol}{digits}"
    return f"{sign}{digits} {code}".rstrip()


def format_duration(seconds: float) -> str:
    """``45 s``, ``80 s``, ``14 min``, ``3 h 05 min``, ``6 d 23 h``."""
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} s"
    minutes = round(s / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    days, hours = divmod(round(s / 3600), 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def data_note(g: GroupReport, range_s: float) -> str | None:
    """``mean over 2 min with data, peak over 80 s with data`` when data is short.

    None when the data covers the range and the peak window. Reports print
    this next to mean W and peak W, which count only the time with data.
    """
    parts = []
    if 0 < g.data_s < range_s * FULL_SHARE:
        parts.append(f"mean over {format_duration(g.data_s)} with data")
    if 0 < g.peak_data_s < g.peak_window_s * FULL_SHARE:
        parts.append(f"peak over {format_duration(g.peak_data_s)} with data")
    return ", ".join(parts) or None


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.0f}%"


def _num(value: float | None, digits: int) -> str:
    return DASH if value is None else format_amount(value, digits)


_COLUMNS: Final = (
    "group",
    "IT kWh",
    "fac. kWh",
    "cost",
    "CO2 kg",
    "mean W",
    "peak W",
    "peak %",
    "premium",
    "/IT kWh",
    "complete",
)


def _row(g: GroupReport, currency: str | None) -> list[str]:
    measured = g.data_s > 0 or g.it_kwh != 0
    return [
        g.key,
        _num(g.it_kwh, 3),
        _num(g.facility_kwh, 3),
        format_money(g.cost, currency),
        _num(g.co2_kg, 2),
        _num(g.mean_watts if measured else None, 1),
        _num(g.peak_watts if measured else None, 1),
        _pct(g.peak_share),
        format_money(g.peak_premium, currency),
        format_money(g.cost_per_it_kwh, currency),
        _pct(g.completeness),
    ]


def render_table(report: Report) -> str:
    """A fixed-width text table for a terminal."""
    tz = ZoneInfo(report.timezone)
    rows = [list(_COLUMNS)]
    rows += [_row(g, report.currency) for g in report.groups]
    rows.append(_row(report.total, report.currency))
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = [
        f"{report.title}: {_local(report.start, tz)} to {_local(report.end, tz)}"
        f" ({report.timezone}), by {report.by}",
    ]
    for n, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0 or n == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    total = report.total
    lines.extend(_charges(report))
    if total.unpriced_kwh > 0:
        unpriced = format_amount(total.unpriced_kwh, 3)
        lines.append(f"No tariff for {unpriced} kWh (not in cost).")
    missing = [g.key for g in report.groups if (g.completeness or 0.0) < 0.9]
    if missing:
        lines.append("Incomplete data (<90% of frames): " + ", ".join(missing))
    range_s = (report.end - report.start).total_seconds()
    notes = [
        (g.key, note)
        for g in [*report.groups, report.total]
        if (note := data_note(g, range_s)) is not None
    ]
    if notes:
        lines.append(
            f"Mean W and peak W count only the time with data"
            f" (the range is {format_duration(range_s)}):"
        )
        lines.extend(f"  {key}: {note}" for key, note in notes)
    return "\n".join(lines) + "\n"


def _charges(report: Report) -> list[str]:
    """The total's bill lines, fallback pricing and the comparison, as text."""
    total, cur = report.total, report.currency
    out: list[str] = []
    # A time-of-use report keeps its one line; market prices, standing
    # charges and bills list every charge.
    market = any(p.kind != "band" for p in total.prices)
    if not (market or report.customer or total.standing_charge is not None):
        if total.demand_charge:
            charge = format_money(total.demand_charge, cur)
            out.append(f"Demand charges included: {charge}")
    else:
        out.append("Charges (total):")
        for line in bill_lines(total):
            qty = _quantity(line.quantity, line.unit)
            out.append(f"  {line.label}: {qty}  {format_money(line.amount, cur)}")
    if total.fallback_kwh > 0:
        out.append(
            f"Priced by the bands for lack of a price row: "
            f"{format_amount(total.fallback_kwh, 3)} kWh IT energy."
        )
    cmp = report.comparison
    if cmp is not None:
        out.append(f"Comparison ({ESTIMATE_NOTE[0].lower()}{ESTIMATE_NOTE[1:-1]}):")
        scenarios = cmp.scenarios
        out.extend(
            f"  {scenario_label(sc, cmp.flexible_share)}:"
            f" {format_amount(sc.facility_kwh, 3)} kWh,"
            f" {format_money(sc.energy_cost, cur)},"
            f" {_num(sc.co2_kg, 2)} kg CO2"
            for sc in scenarios
        )
    return out


def _quantity(value: float | None, unit: str) -> str:
    if value is None:
        return unit
    if unit == "days":
        return "1 day" if value == 1 else f"{value:g} days"
    return f"{format_amount(value, 3)} {unit}"


def _local(t: datetime, tz: ZoneInfo) -> str:
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M")


_CSV_FIELDS: Final = (
    "kind",
    "group",
    "sensors",
    "it_kwh",
    "facility_kwh",
    "energy_cost",
    "demand_charge",
    "standing_charge",
    "standing_days",
    "cost",
    "currency",
    "co2_kg",
    "mean_watts",
    "peak_watts",
    "max_reading_watts",
    "peak_kwh",
    "peak_share",
    "peak_premium",
    "cost_per_it_kwh",
    "co2_g_per_it_kwh",
    "unpriced_kwh",
    "fallback_kwh",
    "received_frames",
    "expected_frames",
    "completeness",
    "start",
    "end",
    "data_s",
    "peak_data_s",
)


def render_csv(report: Report) -> str:
    """One row per group plus a ``total`` row; numbers unrounded."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for kind, g in [("group", g) for g in report.groups] + [("total", report.total)]:
        flat = _group_dict(g, report.currency)
        row = {k: flat.get(k) for k in _CSV_FIELDS}
        row.update(
            kind=kind,
            group=g.key,
            sensors=" ".join(g.sensors),
            start=utc_iso(report.start),
            end=utc_iso(report.end),
        )
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def render_json(report: Report) -> str:
    """The full report, days and hours included, as JSON."""
    return json.dumps(report_to_dict(report), indent=2, ensure_ascii=False) + "\n"


def report_to_dict(report: Report) -> dict[str, Any]:
    """A JSON-ready dict of the report."""
    return {
        "title": report.title,
        "start": utc_iso(report.start),
        "end": utc_iso(report.end),
        "timezone": report.timezone,
        "by": report.by,
        "currency": report.currency,
        "generated": utc_iso(report.generated),
        "frame_period_s": FRAME_PERIOD_S,
        "groups": [_group_dict(g, report.currency, detail=True) for g in report.groups],
        "total": _group_dict(report.total, report.currency, detail=True),
        "customer": report.customer,
        "comparison": comparison_to_dict(report.comparison),
    }


def _group_dict(
    g: GroupReport, currency: str | None, *, detail: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "group": g.key,
        "sensors": list(g.sensors),
        "it_kwh": g.it_kwh,
        "facility_kwh": g.facility_kwh,
        "energy_cost": g.energy_cost,
        "demand_charge": g.demand_charge,
        "standing_charge": g.standing_charge,
        "standing_days": g.standing_days,
        "cost": g.cost,
        "currency": currency,
        "co2_kg": g.co2_kg,
        "mean_watts": g.mean_watts,
        "peak_watts": g.peak_watts,
        "data_s": g.data_s,
        "peak_window_start": (
            utc_iso(g.peak_window_start) if g.peak_window_start else None
        ),
        "peak_data_s": g.peak_data_s,
        "peak_window_s": g.peak_window_s,
        "max_reading_watts": g.max_reading_watts,
        "peak_kwh": g.peak_kwh,
        "peak_share": g.peak_share,
        "peak_premium": g.peak_premium,
        "cost_per_it_kwh": g.cost_per_it_kwh,
        "co2_g_per_it_kwh": g.co2_g_per_it_kwh,
        "unpriced_kwh": g.unpriced_kwh,
        "fallback_kwh": g.fallback_kwh,
        "received_frames": g.received_frames,
        "expected_frames": g.expected_frames,
        "completeness": g.completeness,
    }
    if detail:
        out["prices"] = [
            {
                "name": p.name,
                "kind": p.kind,
                "label": price_label(p),
                "facility_kwh": p.kwh,
                "cost": p.cost,
                "mean_price_per_kwh": p.mean_price_per_kwh,
            }
            for p in g.prices
        ]
        out["sensor_kwh"] = dict(g.sensor_kwh)
        out["demand"] = [
            {
                "period_start": utc_iso(p.period_start),
                "period_end": utc_iso(p.period_end),
                "peak_kw": p.peak_kw,
                "window_start": utc_iso(p.window_start) if p.window_start else None,
                "charge": p.charge,
            }
            for p in g.demand
        ]
        out["days"] = [
            {
                "day": d.day.isoformat(),
                "it_kwh": d.it_kwh,
                "facility_kwh": d.facility_kwh,
                "cost": d.cost,
                "completeness": d.completeness,
            }
            for d in g.days
        ]
        out["hours"] = [
            {
                "start": utc_iso(h.start),
                "mean_watts": h.mean_watts,
                "data_s": h.data_s,
                "completeness": h.completeness,
                "peak_share": h.peak_share,
            }
            for h in g.hours
        ]
    return out
