"""The lines of a bill, shared by the table, HTML and CSV, and the CSV bill.

A bill is a group's figures as charges: energy by band or market price,
standing charges, demand charges, the total; then CO2 and completeness, the
cost per meter and the comparison estimates.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from wattd.costing.compare import Comparison, Scenario
    from wattd.costing.report.charges import PriceLine
    from wattd.costing.report.engine import GroupReport, Report

__all__ = [
    "BillLine",
    "bill_lines",
    "comparison_to_dict",
    "price_label",
    "render_bill_csv",
    "scenario_label",
    "utc_iso",
]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BillLine:
    """One charge: what, how much of it, and what it costs."""

    label: str
    quantity: float | None
    unit: str
    amount: float | None


def price_label(line: PriceLine) -> str:
    """``energy at market prices``, ``energy, band night``, ``... (fallback)``."""
    if line.kind == "market":
        return "energy at market prices"
    if line.kind == "fallback":
        return f"energy, band {line.name} (no price row: fallback)"
    return f"energy, band {line.name}"


def bill_lines(g: GroupReport) -> list[BillLine]:
    """The charges of a group, the total last."""
    out = [
        BillLine(label=price_label(p), quantity=p.kwh, unit="kWh", amount=p.cost)
        for p in g.prices
    ]
    if g.standing_charge is not None:
        out.append(
            BillLine(
                label=_standing_label(g.standing_payers),
                quantity=float(g.standing_days),
                unit="days",
                amount=g.standing_charge,
            )
        )
    out.extend(
        BillLine(
            label=f"demand charge from {peak.period_start.date().isoformat()}",
            quantity=peak.peak_kw,
            unit="kW",
            amount=peak.charge,
        )
        for peak in g.demand
    )
    out.append(
        BillLine(label="total", quantity=g.facility_kwh, unit="kWh", amount=g.cost)
    )
    return out


def _standing_label(payers: int) -> str:
    if payers == 1:
        return "standing charge"
    return f"standing charge, {payers} accounts"


def scenario_label(s: Scenario, flexible_share: float) -> str:
    """``actual``, ``at location dc-2 (PUE 1.2)``, ``30% shifted to cheap hours``."""
    if s.name == "actual":
        return "actual"
    if s.name == "shifted":
        return f"{flexible_share * 100:.0f}% shifted to each day's cheapest hours"
    return f"at location {s.name} (PUE {s.pue:g})"


def comparison_to_dict(cmp: Comparison | None) -> dict[str, Any] | None:
    """A JSON-ready dict of a comparison."""
    if cmp is None:
        return None

    def one(s: Scenario) -> dict[str, Any]:
        return {
            "name": s.name,
            "label": scenario_label(s, cmp.flexible_share),
            "it_kwh": s.it_kwh,
            "facility_kwh": s.facility_kwh,
            "energy_cost": s.energy_cost,
            "co2_kg": s.co2_kg,
            "pue": s.pue,
        }

    return {
        "estimate": True,
        "note": ESTIMATE_NOTE,
        "flexible_share": cmp.flexible_share,
        "currency": cmp.currency,
        "actual": one(cmp.actual),
        "locations": [one(s) for s in cmp.locations],
        "shifted": one(cmp.shifted) if cmp.shifted is not None else None,
    }


ESTIMATE_NOTE: Final = (
    "Estimates over the same load shape: energy cost and CO2 only,"
    " without standing or demand charges."
)
_FIELDS: Final = ("section", "item", "quantity", "unit", "amount", "currency", "co2_kg")


def render_bill_csv(report: Report) -> str:
    """The bill as CSV: charges, then CO2 and completeness, meters, comparison."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_FIELDS)
    cur = report.currency or ""
    g = report.total

    def row(section: str, item: str, qty: float | None, unit: str, **kw: Any) -> None:
        amount, co2 = kw.get("amount"), kw.get("co2_kg")
        writer.writerow(
            [section, item, _cell(qty), unit, _cell(amount), cur, _cell(co2)]
        )

    row("customer", report.customer or g.key, None, "")
    row("period", f"{utc_iso(report.start)}/{utc_iso(report.end)}", None, "")
    for line in bill_lines(g):
        section = "total" if line.label == "total" else "charge"
        row(section, line.label, line.quantity, line.unit, amount=line.amount)
    row("info", "CO2", g.co2_kg, "kg", co2_kg=g.co2_kg)
    row("info", "completeness", g.completeness, "share")
    row("info", "fallback-priced energy", g.fallback_kwh, "kWh")
    row("info", "unpriced energy", g.unpriced_kwh, "kWh")
    for m in report.groups:
        row("meter", m.key, m.facility_kwh, "kWh", amount=m.cost, co2_kg=m.co2_kg)
    cmp = report.comparison
    if cmp is not None:
        scenarios = cmp.scenarios
        for s in scenarios:
            label = scenario_label(s, cmp.flexible_share)
            kw = {"amount": s.energy_cost, "co2_kg": s.co2_kg}
            row("estimate", label, s.facility_kwh, "kWh", **kw)
    return buf.getvalue()


def _cell(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def utc_iso(t: datetime) -> str:
    """An instant as ISO 8601 in UTC with ``Z``, as every report output writes it."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")
