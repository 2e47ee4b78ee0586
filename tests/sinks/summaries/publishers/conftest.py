from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.sinks.summaries.publishers.recorder import RecordingServer

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def http_recorder() -> Iterator[RecordingServer]:
    """A local HTTP server recording requests (stands in for X/Mastodon/webhooks)."""
    with RecordingServer() as server:
        yield server
