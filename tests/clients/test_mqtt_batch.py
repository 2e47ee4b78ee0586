"""BatchPublisher against a real broker: order, acknowledgements, a lost link."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import aiomqtt
import pytest

from tests.fixtures.waiting import wait_until
from wattd.clients.mqtt import MAX_INFLIGHT, BatchPublisher

if TYPE_CHECKING:
    from tests.fixtures.services import Mosquitto


def ignore(_index: int) -> None:
    """For batches whose confirmations the test does not look at."""


def client(broker: Mosquitto) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host, broker.port, max_inflight_messages=MAX_INFLIGHT, timeout=5
    )


async def test_a_batch_arrives_in_order_and_every_message_is_confirmed(
    mosquitto: Mosquitto,
) -> None:
    topic = f"batch-{uuid.uuid4().hex}"
    count = MAX_INFLIGHT * 6  # more than paho lets out unconfirmed at once
    received: list[bytes] = []
    async with client(mosquitto) as sub, client(mosquitto) as pub:
        await sub.subscribe(f"{topic}/#", qos=1)

        async def listen() -> None:
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                received.append(message.payload)

        listener = asyncio.create_task(listen())
        confirmed: list[int] = []
        messages = [(f"{topic}/{i % 7}", b"%d" % i) for i in range(count)]
        publisher = BatchPublisher(pub)
        await publisher.publish(
            messages, qos=1, retain=False, timeout_s=10, confirmed=confirmed.append
        )
        assert sorted(confirmed) == list(range(count))
        # aiomqtt's own publish still gets its acknowledgement beside it.
        await asyncio.wait_for(pub.publish(f"{topic}/end", b"end", qos=1), 10)
        await wait_until(lambda: len(received) == count + 1)
        listener.cancel()
    assert received == [b"%d" % i for i in range(count)] + [b"end"]


async def test_a_lost_connection_fails_the_wait_and_says_what_was_confirmed(
    fresh_mosquitto: Mosquitto,
) -> None:
    confirmed: list[int] = []
    async with client(fresh_mosquitto) as pub:
        publisher = BatchPublisher(pub)
        await publisher.publish(
            [("t/first", b"1")], qos=1, retain=False, timeout_s=10, confirmed=ignore
        )
        # Stopped: nothing more is acknowledged and the link goes away.
        fresh_mosquitto.stop()
        with pytest.raises(aiomqtt.MqttError):
            await asyncio.wait_for(
                publisher.publish(
                    [("t/x", b"%d" % i) for i in range(200)],
                    qos=1,
                    retain=False,
                    timeout_s=5,
                    confirmed=confirmed.append,
                ),
                15,
            )
    assert len(confirmed) < 200


async def test_qos_0_is_refused_since_nothing_would_be_acknowledged(
    mosquitto: Mosquitto,
) -> None:
    async with client(mosquitto) as pub:
        with pytest.raises(ValueError, match="qos must be 1 or 2"):
            await BatchPublisher(pub).publish(
                [("t", b"x")], qos=0, retain=False, timeout_s=1, confirmed=ignore
            )
