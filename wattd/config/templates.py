"""Summary templates: the fields a template may use, and the check run on load."""

from __future__ import annotations

import string
from typing import Any, Final

from wattd.errors import TemplateError

__all__ = ["TEMPLATE_FIELDS", "check_template"]

TEMPLATE_FIELDS: Final[dict[str, Any]] = {
    "name": "Rack A",
    "summary": "weekly",
    "period": "week",
    "period_label": "last week",
    "start": "2025-03-03",
    "end": "2025-03-09",
    "kwh": 412.0,
    "facility_kwh": 577.0,
    "cost": 61.8,
    "money": "$61.80",
    "currency": "USD",
    "co2_kg": 120.5,
    "peak_pct": 18.0,
    "in_peak": ", 18% in peak hours",
    "premium": "$9.10",
    "change_pct": -7.0,
    "change": "\N{MINUS SIGN}7% vs the week before",
    "biggest": "web-3",
    "biggest_kwh": 96.0,
    "sensors": 6,
    "mean_watts": 2452.4,
    "peak_watts": 3810.0,
    "completeness_pct": 99.0,
}
"""Every field a template may use, with example values (see docs/cost.md)."""


def check_template(template: str) -> None:
    """Raise :class:`TemplateError` if the template cannot render.

    Raises:
        TemplateError: naming the unknown field and the known ones.
    """
    try:
        for _literal, field, _spec, _conv in string.Formatter().parse(template):
            if (
                field is not None
                and field.split(".")[0].split("[")[0] not in TEMPLATE_FIELDS
            ):
                raise TemplateError(
                    f"template field {{{field}}} is unknown; fields: "
                    + ", ".join(sorted(TEMPLATE_FIELDS))
                )
        template.format(**TEMPLATE_FIELDS)
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        if isinstance(exc, TemplateError):
            raise
        raise TemplateError(f"template cannot be rendered: {exc}") from None
