"""What every summary destination implements."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wattd.sinks.summaries.message import SummaryMessage

__all__ = ["Publisher", "shorten"]


class Publisher(abc.ABC):
    """One summary destination."""

    name: str = "publisher"

    @abc.abstractmethod
    async def post(self, message: SummaryMessage) -> str | None:
        """Post one summary; return the remote id, if the destination gives one.

        Raises:
            PublishError: a failure that may pass (network, 5xx, rate limit).
            PublishRejected: the destination refused the post; do not retry.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


def shorten(text: str, max_chars: int) -> str:
    """Cut ``text`` to ``max_chars`` characters, ending with an ellipsis if cut."""
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1].rstrip() + "\N{HORIZONTAL ELLIPSIS}"
