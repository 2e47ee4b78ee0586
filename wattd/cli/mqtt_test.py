"""``wattd mqtt-test``: can wattd reach the broker and publish what it needs to?

One line per step, each failure saying what to check: TLS files, the connection
and login, subscribe and publish permission under ``<base>/<node>/mqtt-test``
(a broker's ACL may accept a publish and silently drop it, so the message must
come back), retained messages (wattd's state and discovery rely on them), and,
with discovery on, Home Assistant's birth topic and discovery prefix. It
connects with a client id of its own, so a running daemon is not disturbed.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import aiomqtt

from wattd.cli import EXIT_ERROR, EXIT_OK
from wattd.cli._args import add_config, config_path
from wattd.clients.mqtt import (
    build_tls_context,
    describe_error,
    make_client,
    reason_code,
)
from wattd.clients.topics import Topics
from wattd.config import load_config
from wattd.errors import SinkAuthError, SinkError, SinkRejected
from wattd.support.worker import run_blocking

if TYPE_CHECKING:
    import argparse

    from wattd.config import MqttConfig

DEFAULT_TIMEOUT_S = 5.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``mqtt-test`` command."""
    p = subparsers.add_parser(
        "mqtt-test",
        help="check the MQTT connection, login, ACL and retained messages",
        description=(
            "Connect to the broker of the config's mqtt section, subscribe and"
            " publish under <base_topic>/<node_id>/mqtt-test, check that retained"
            " messages are kept and, with discovery on, that the Home Assistant"
            " topics are usable. Exits 0 when everything works."
        ),
    )
    add_config(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for each answer (default: {DEFAULT_TIMEOUT_S:.0f})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the checks and print one line per step."""
    config = load_config(config_path(args))
    if not config.mqtt.enabled:
        print("note: mqtt.enabled is false; checking the settings anyway")
    try:
        asyncio.run(check_broker(config.mqtt, timeout_s=args.timeout))
    except SinkError as exc:
        print(f"FAIL: {_text(exc)}")
        return EXIT_ERROR
    print(f"OK: wattd can publish to {config.mqtt.host}:{config.mqtt.port}")
    return EXIT_OK


async def check_broker(mqtt: MqttConfig, *, timeout_s: float) -> None:
    """Run every check, printing ``ok: ...`` per step.

    Raises:
        SinkError: the first check that failed, saying what to fix.
    """
    tls = await run_blocking(build_tls_context, mqtt.tls) if mqtt.tls else None
    base_id = mqtt.client_id or f"wattd-{mqtt.node_id}"
    client_id = f"{base_id}-test-{uuid.uuid4().hex[:6]}"
    client = make_client(mqtt, tls_context=tls, client_id=client_id, will=False)
    client.timeout = timeout_s
    try:
        async with client:
            if tls is not None:
                tls.connected()
            who = f"user {mqtt.username!r}" if mqtt.username else "anonymously"
            print(
                f"ok: connected to {mqtt.host}:{mqtt.port}"
                f"{' over TLS' if tls else ''} {who} as {client_id}"
            )
            await _check_topics(client, mqtt, timeout_s)
    except aiomqtt.MqttError as exc:
        if tls is not None:
            tls.close_failed()
        raise describe_error(exc, mqtt, timeout_s=timeout_s) from None


async def _check_topics(
    client: aiomqtt.Client, mqtt: MqttConfig, timeout_s: float
) -> None:
    topics = Topics.from_config(mqtt)
    root = topics.test_root
    nonce = uuid.uuid4().hex.encode()
    who = f"user {mqtt.username!r}" if mqtt.username else "anonymous clients"

    await _subscribe(client, f"{root}/#", who)
    print(f"ok: may subscribe to {root}/#")

    echo = f"{root}/echo"
    await client.publish(echo, nonce, qos=1)
    if await _expect(client, echo, nonce, timeout_s) is None:
        raise SinkAuthError(
            f"the broker accepted a publish to {echo} but never delivered it back;"
            f" its ACL probably denies {who} writing (or reading) {mqtt.base_topic}/#."
            " Allow readwrite on that topic in the broker's acl_file",
            sink="mqtt",
        )
    print(f"ok: may publish to {echo} (message came back)")

    retained = f"{root}/retained"
    await client.publish(retained, nonce, qos=1, retain=True)
    await _expect(client, retained, nonce, timeout_s)
    await client.unsubscribe(f"{root}/#")
    await _subscribe(client, retained, who)
    message = await _expect(client, retained, nonce, timeout_s)
    await client.publish(retained, b"", qos=1, retain=True)  # leave nothing behind
    if message is None or not message.retain:
        raise SinkRejected(
            f"the broker did not keep a retained message on {retained}; wattd's"
            " status, last readings and Home Assistant discovery rely on retained"
            " messages (check retain_available and the ACL in the broker config)",
            sink="mqtt",
        )
    print(f"ok: retained messages are kept ({retained}, cleared again)")

    if not mqtt.discovery.enabled:
        print("ok: Home Assistant discovery is off; its topics were not checked")
        return
    await _subscribe(client, topics.ha_status, who)
    # An empty, non-retained config is a no-op for Home Assistant ("delete an
    # entity that does not exist") but proves the prefix is writable.
    probe = topics.discovery("sensor", "wattd_mqtt_test")
    await _subscribe(client, probe, who)
    await client.publish(probe, b"", qos=1)
    if await _expect(client, probe, b"", timeout_s) is None:
        raise SinkAuthError(
            f"publishing under the discovery prefix {mqtt.discovery.prefix!r} does"
            f" not get through for {who}; allow write on"
            f" {mqtt.discovery.prefix}/# in the broker's ACL, or set"
            " mqtt.discovery.enabled: false",
            sink="mqtt",
        )
    print(
        f"ok: Home Assistant topics usable ({topics.ha_status},"
        f" {mqtt.discovery.prefix}/...)"
    )


async def _subscribe(client: aiomqtt.Client, topic: str, who: str) -> None:
    granted = await client.subscribe(topic, qos=1)
    if any(reason_code(g) >= 0x80 for g in granted):
        raise SinkAuthError(
            f"the broker refused {who} a subscription to {topic}; check its ACL"
            " (acl_file) for this user",
            sink="mqtt",
        )


async def _expect(
    client: aiomqtt.Client, topic: str, payload: bytes, timeout_s: float
) -> aiomqtt.Message | None:
    """The next message on ``topic`` with ``payload``, or None after the timeout."""
    try:
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                if message.topic.value == topic and message.payload == payload:
                    return message
    except TimeoutError:
        return None
    return None


def _text(exc: SinkError) -> str:
    return str(exc).removeprefix(f"{exc.sink}: ")
