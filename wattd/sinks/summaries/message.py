"""One composed summary, as the service hands it to each destination."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

__all__ = ["Period", "SummaryMessage"]

Period = Literal["day", "week", "month"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SummaryMessage:
    """One summary of one group for one period, ready to post."""

    summary: str
    group: str
    period: Period
    start: datetime
    end: datetime
    text: str
    fields: Mapping[str, Any]

    @property
    def key(self) -> str:
        """Identifies the post: summary, group and the period's first local day."""
        return f"{self.summary}/{self.group}/{self.fields['start']}"

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON body posted to webhooks and MQTT."""
        return {
            "summary": self.summary,
            "group": self.group,
            "period": self.period,
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "end": self.end.isoformat().replace("+00:00", "Z"),
            "key": self.key,
            "text": self.text,
            "fields": dict(self.fields),
        }
