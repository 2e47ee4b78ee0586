from __future__ import annotations

import pytest
from oauthlib.common import Request
from oauthlib.oauth1.rfc5849 import signature
from pydantic import SecretStr

from tests.fixtures.services import free_port
from tests.sinks.summaries.publishers.messages import sample_message
from tests.sinks.summaries.publishers.recorder import Answer, RecordingServer
from wattd.config import XDestinationConfig
from wattd.errors import PublishError, PublishRejected
from wattd.sinks.summaries.publishers.x import X_API, XPublisher

CREDS = {
    "consumer_key": "ck-test",
    "consumer_secret": "cs-very-secret",
    "access_token": "at-test",
    "access_token_secret": "ats-very-secret",
}


def make(url: str, **extra: object) -> XPublisher:
    cfg = XDestinationConfig.model_validate(
        {
            "enabled": True,
            "api_base_url": url,
            **{k: SecretStr(v) for k, v in CREDS.items()},
            **extra,
        }
    )
    return XPublisher(cfg)


def oauth_params(header: str) -> dict[str, str]:
    assert header.startswith("OAuth ")
    return dict(
        signature.collect_parameters(
            headers={"Authorization": header}, exclude_oauth_signature=False
        )
    )


async def test_post_sends_v2_tweet_with_valid_oauth1_signature(
    http_recorder: RecordingServer,
) -> None:
    http_recorder.queue(Answer(201, {"data": {"id": "1790", "text": "x"}}))
    pub = make(http_recorder.url)
    remote = await pub.post(sample_message("Rack A used 412 kWh"))
    await pub.aclose()

    assert remote == "1790"
    [req] = http_recorder.requests
    assert req.method == "POST"
    assert req.path == "/2/tweets"  # no query string: credentials only in the header
    assert req.json() == {"text": "Rack A used 412 kWh"}
    header = req.header("Authorization")
    assert header is not None
    params = oauth_params(header)
    assert params["oauth_consumer_key"] == "ck-test"
    assert params["oauth_token"] == "at-test"
    assert params["oauth_signature_method"] == "HMAC-SHA1"
    assert params["oauth_version"] == "1.0"
    assert params["oauth_nonce"]
    assert params["oauth_timestamp"].isdigit()
    # The signature is X's: computed over the public API URL and checkable with
    # the two secrets, exactly as X's servers check it.
    request = Request(
        X_API + "/2/tweets", http_method="POST", headers={"Authorization": header}
    )
    request.params = signature.collect_parameters(headers={"Authorization": header})
    request.signature = params["oauth_signature"]
    assert signature.verify_hmac_sha1(
        request, CREDS["consumer_secret"], CREDS["access_token_secret"]
    )
    assert not signature.verify_hmac_sha1(
        request, "wrong", CREDS["access_token_secret"]
    )
    for secret in ("cs-very-secret", "ats-very-secret"):
        assert secret not in header


async def test_long_text_is_cut_to_max_chars(http_recorder: RecordingServer) -> None:
    http_recorder.queue(Answer(201, {"data": {"id": "1", "text": "x"}}))
    pub = make(http_recorder.url, max_chars=40)
    await pub.post(sample_message("word " * 30))
    text = http_recorder.requests[0].json()["text"]
    assert len(text) <= 40
    assert text.endswith("\N{HORIZONTAL ELLIPSIS}")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, PublishRejected),
        (403, PublishRejected),
        (429, PublishError),
        (503, PublishError),
    ],
)
async def test_http_errors_map_to_retry_or_refusal(
    http_recorder: RecordingServer, status: int, error: type[Exception]
) -> None:
    http_recorder.queue(Answer(status, {"title": "nope", "detail": "nope"}))
    pub = make(http_recorder.url)
    with pytest.raises(error) as info:
        await pub.post(sample_message())
    assert f"HTTP {status}" in str(info.value)
    assert (error is PublishRejected) == isinstance(info.value, PublishRejected)
    for secret in CREDS.values():
        assert secret not in str(info.value)


async def test_unreachable_server_is_retryable() -> None:
    pub = make(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(PublishError) as info:
        await pub.post(sample_message())
    assert not isinstance(info.value, PublishRejected)
    assert "cannot reach" in str(info.value)
