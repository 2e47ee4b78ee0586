from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from pydantic import SecretStr

from tests.fixtures.services import free_port
from tests.sinks.summaries.publishers.messages import sample_message
from tests.sinks.summaries.publishers.recorder import Answer, RecordingServer
from wattd.config import MastodonDestinationConfig
from wattd.errors import PublishError, PublishRejected
from wattd.sinks.summaries.publishers.mastodon import MastodonPublisher

TOKEN = "mastodon-token-very-secret"


def make(url: str, **extra: object) -> MastodonPublisher:
    cfg = MastodonDestinationConfig.model_validate(
        {
            "enabled": True,
            "api_base_url": url,
            "access_token": SecretStr(TOKEN),
            **extra,
        }
    )
    return MastodonPublisher(cfg)


def form(body: bytes, content_type: str | None) -> dict[str, str]:
    if content_type and "json" in content_type:
        import json

        return {k: str(v) for k, v in json.loads(body).items()}
    return {k: v[0] for k, v in parse_qs(body.decode()).items()}


async def test_post_creates_status_with_bearer_token_and_idempotency_key(
    http_recorder: RecordingServer,
) -> None:
    http_recorder.queue(Answer(200, {"id": "109876", "content": "<p>x</p>"}))
    pub = make(http_recorder.url, visibility="unlisted")
    message = sample_message("Rack A used 412 kWh last week")
    remote = await pub.post(message)
    await pub.aclose()

    assert remote == "109876"
    [req] = http_recorder.requests
    assert req.method == "POST"
    assert req.path == "/api/v1/statuses"
    assert req.header("Authorization") == f"Bearer {TOKEN}"
    assert req.header("Idempotency-Key") == message.key
    body = form(req.body, req.header("Content-Type"))
    assert body["status"] == "Rack A used 412 kWh last week"
    assert body["visibility"] == "unlisted"


async def test_status_is_cut_to_max_chars(http_recorder: RecordingServer) -> None:
    http_recorder.queue(Answer(200, {"id": "1"}))
    pub = make(http_recorder.url, max_chars=30)
    await pub.post(sample_message("kilowatt " * 20))
    body = form(
        http_recorder.requests[0].body, http_recorder.requests[0].header("Content-Type")
    )
    assert len(body["status"]) <= 30


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, PublishRejected),
        (422, PublishRejected),
        (503, PublishError),
        (429, PublishError),
    ],
)
async def test_errors_map_to_retry_or_refusal(
    http_recorder: RecordingServer, status: int, error: type[Exception]
) -> None:
    http_recorder.default = Answer(
        status, {"error": "nope"}, {"X-RateLimit-Reset": "2030-01-01T00:00:00Z"}
    )
    pub = make(http_recorder.url)
    with pytest.raises(error) as info:
        await pub.post(sample_message())
    assert (error is PublishRejected) == isinstance(info.value, PublishRejected)
    assert TOKEN not in str(info.value)


async def test_unreachable_server_is_retryable() -> None:
    pub = make(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(PublishError) as info:
        await pub.post(sample_message())
    assert not isinstance(info.value, PublishRejected)
    assert TOKEN not in str(info.value)
