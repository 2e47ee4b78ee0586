"""A ready-made summary message for the publisher tests."""

from __future__ import annotations

from datetime import UTC, datetime

from wattd.config.templates import TEMPLATE_FIELDS
from wattd.sinks.summaries.message import SummaryMessage


def sample_message(
    text: str = "Rack A used 412 kWh last week, $61.80",
) -> SummaryMessage:
    fields = dict(TEMPLATE_FIELDS)
    return SummaryMessage(
        summary="weekly",
        group="rack-a",
        period="week",
        start=datetime(2025, 3, 3, tzinfo=UTC),
        end=datetime(2025, 3, 10, tzinfo=UTC),
        text=text,
        fields=fields,
    )
