from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from tests.fixtures.services import free_port
from tests.sinks.summaries.publishers.messages import sample_message
from tests.sinks.summaries.publishers.recorder import Answer, RecordingServer
from wattd.config import WebhookDestinationConfig
from wattd.errors import PublishError, PublishRejected
from wattd.sinks.summaries.publishers.webhook import SIGNATURE_HEADER, WebhookPublisher


def make(url: str, **extra: object) -> WebhookPublisher:
    cfg = WebhookDestinationConfig.model_validate(
        {"enabled": True, "url": url, **extra}
    )
    return WebhookPublisher(cfg)


async def test_posts_json_with_token_signature_and_idempotency_key(
    http_recorder: RecordingServer,
) -> None:
    http_recorder.queue(Answer(200, {"id": "abc"}))
    pub = make(
        f"{http_recorder.url}/hooks/energy",
        token=SecretStr("hook-token"),
        secret=SecretStr("hook-secret"),
        headers={"X-Team": "ops"},
    )
    message = sample_message()
    assert await pub.post(message) == "abc"

    [req] = http_recorder.requests
    assert (req.method, req.path) == ("POST", "/hooks/energy")
    assert req.header("Content-Type") == "application/json"
    assert req.header("Authorization") == "Bearer hook-token"
    assert req.header("Idempotency-Key") == message.key
    assert req.header("X-Team") == "ops"
    expected = hmac.new(b"hook-secret", req.body, hashlib.sha256).hexdigest()
    assert req.header(SIGNATURE_HEADER) == f"sha256={expected}"
    body = req.json()
    assert body["text"] == message.text
    assert body["summary"] == "weekly"
    assert body["group"] == "rack-a"
    assert body["key"] == message.key
    assert body["start"] == "2025-03-03T00:00:00Z"
    assert body["fields"]["kwh"] == pytest.approx(412.0)


async def test_no_auth_headers_unless_configured(
    http_recorder: RecordingServer,
) -> None:
    await make(http_recorder.url).post(sample_message())
    [req] = http_recorder.requests
    assert req.header("Authorization") is None
    assert req.header(SIGNATURE_HEADER) is None


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, PublishRejected),
        (404, PublishRejected),
        (429, PublishError),
        (502, PublishError),
    ],
)
async def test_status_codes_map_to_retry_or_refusal(
    http_recorder: RecordingServer, status: int, error: type[Exception]
) -> None:
    http_recorder.queue(Answer(status, {"error": "no"}))
    with pytest.raises(error) as info:
        await make(http_recorder.url, token=SecretStr("hook-token")).post(
            sample_message()
        )
    assert f"HTTP {status}" in str(info.value)
    assert (error is PublishRejected) == isinstance(info.value, PublishRejected)
    assert "hook-token" not in str(info.value)


async def test_unreachable_is_retryable() -> None:
    with pytest.raises(PublishError) as info:
        await make(f"http://127.0.0.1:{free_port()}/x", timeout_s=2).post(
            sample_message()
        )
    assert not isinstance(info.value, PublishRejected)
