from __future__ import annotations

import asyncio
import json
import secrets
from typing import TYPE_CHECKING

import aiomqtt
import pytest

from tests.fixtures.services import Mosquitto, free_port, mosquitto_password_file
from tests.sinks.summaries.publishers.messages import sample_message
from wattd.config import Config, MqttDestinationConfig, parse_config
from wattd.errors import PublishError
from wattd.sinks.summaries.publishers.mqtt import MqttPublisher, summary_topic

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def config_for(host: str, port: int, base: str) -> Config:
    return parse_config(f"mqtt: {{host: {host}, port: {port}, base_topic: {base}}}\n")


async def test_publishes_retained_json_to_default_topic(mosquitto: Mosquitto) -> None:
    base = f"test-{secrets.token_hex(4)}"
    config = config_for(mosquitto.host, mosquitto.port, base)
    dest = MqttDestinationConfig(enabled=True)
    message = sample_message()
    topic = await MqttPublisher(config, dest).post(message)
    assert topic == f"{base}/summary/weekly/rack-a"
    assert summary_topic(config, dest, message) == topic

    # Retained: a subscriber that comes later still gets it.
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            received = await anext(aiter(client.messages))
    assert received.retain
    body = json.loads(received.payload)
    assert body["text"] == message.text
    assert body["key"] == message.key
    assert body["fields"]["biggest"] == "web-3"


async def test_topic_template_and_qos0(mosquitto: Mosquitto) -> None:
    base = f"test-{secrets.token_hex(4)}"
    config = config_for(mosquitto.host, mosquitto.port, base)
    dest = MqttDestinationConfig(
        enabled=True, topic=f"{base}/energy/{{summary}}/{{group}}", retain=False, qos=0
    )
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
        await client.subscribe(f"{base}/#", qos=0)
        await MqttPublisher(config, dest).post(sample_message())
        async with asyncio.timeout(5):
            received = await anext(aiter(client.messages))
    assert str(received.topic) == f"{base}/energy/weekly/rack-a"
    assert not received.retain


@pytest.mark.timeout(30)
async def test_unreachable_broker_is_a_retryable_error() -> None:
    config = config_for("127.0.0.1", free_port(), "x")
    with pytest.raises(PublishError) as info:
        await MqttPublisher(config, MqttDestinationConfig(enabled=True)).post(
            sample_message()
        )
    assert "cannot publish" in str(info.value)


@pytest.mark.timeout(30)
async def test_refused_login_says_which_setting_to_fix(
    tmp_path: Path, make_broker: Callable[..., Mosquitto]
) -> None:
    passwd = mosquitto_password_file(tmp_path / "passwd", {"meter": "right horse"})
    broker = make_broker(
        extra_conf=f"user root\npassword_file {passwd}", anonymous=False
    )
    broker.start()
    config = parse_config(
        f"mqtt: {{host: {broker.host}, port: {broker.port},"
        " username: meter, password: wrong-guess}\n"
    )
    with pytest.raises(PublishError) as info:
        await MqttPublisher(config, MqttDestinationConfig(enabled=True)).post(
            sample_message()
        )
    text = str(info.value)
    assert "refused the login of user 'meter'" in text
    assert "wrong-guess" not in text
