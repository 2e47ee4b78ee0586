"""``wattd mqtt-test`` against real brokers: each failure names what to check."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import aiomqtt
import pytest

from tests.fixtures.services import Mosquitto, TestCa, mosquitto_password_file
from tests.fixtures.waiting import wait_until
from wattd.cli import main
from wattd.config import Config
from wattd.sinks.mqtt.sink import MqttSink

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.services


def write_config(tmp_path: Path, broker: Mosquitto, **mqtt: Any) -> Path:
    node = mqtt.pop("node_id", f"t{uuid.uuid4().hex[:8]}")
    settings = {"enabled": True, "host": broker.host, "port": broker.port}
    settings.update(node_id=node, **mqtt)
    data = {"state_dir": str(tmp_path / "state"), "mqtt": settings}
    path = tmp_path / "wattd.yaml"
    path.write_text(json.dumps(data))  # JSON is valid YAML
    return path


def run_check(path: Path, *extra: str) -> int:
    return main(["mqtt-test", "--config", str(path), "--timeout", "1", *extra])


def test_a_working_broker_passes_every_step(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, mosquitto, node_id="clinode")
    assert run_check(path) == 0
    out = capsys.readouterr().out
    assert "ok: connected to" in out
    assert "ok: may publish to wattd/clinode/mqtt-test/echo" in out
    assert "ok: retained messages are kept" in out
    assert "ok: Home Assistant topics usable" in out
    assert out.rstrip().endswith(f"OK: wattd can publish to 127.0.0.1:{mosquitto.port}")

    async def leftovers() -> list[str]:
        # The retained test message was cleared again.
        async with aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            await client.subscribe("wattd/clinode/mqtt-test/#", qos=1)
            found: list[str] = []
            try:
                async with asyncio.timeout(0.5):
                    async for m in client.messages:
                        found.append(m.topic.value)  # noqa: PERF401 - ends by timeout
            except TimeoutError:
                pass
            return found

    assert asyncio.run(leftovers()) == []


def test_connection_refused_says_to_check_the_broker(
    tmp_path: Path,
    make_broker: Callable[..., Mosquitto],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(tmp_path, make_broker())  # never started
    assert run_check(path) == 1
    out = capsys.readouterr().out
    assert "FAIL:" in out
    assert "refused the connection" in out
    assert "listening on that port" in out


def test_wrong_password_is_reported_as_a_login_problem(
    tmp_path: Path,
    make_broker: Callable[..., Mosquitto],
    capsys: pytest.CaptureFixture[str],
) -> None:
    passwd = mosquitto_password_file(tmp_path / "passwd", {"meter": "right horse"})
    broker = make_broker(
        extra_conf=f"user root\npassword_file {passwd}", anonymous=False
    )
    broker.start()
    path = write_config(tmp_path, broker, username="meter", password="wrong-guess")
    assert run_check(path) == 1
    captured = capsys.readouterr()
    assert "refused the login of user 'meter'" in captured.out
    assert "mqtt.password" in captured.out
    assert "wrong-guess" not in captured.out + captured.err
    # ... and the right one, from a password file, passes.
    secret = tmp_path / "secret"
    secret.write_text("right horse\n")
    path = write_config(tmp_path, broker, username="meter", password_file=str(secret))
    assert run_check(path) == 0


def test_acl_denial_is_detected_even_though_the_broker_accepts_the_publish(
    tmp_path: Path,
    make_broker: Callable[..., Mosquitto],
    capsys: pytest.CaptureFixture[str],
) -> None:
    passwd = mosquitto_password_file(tmp_path / "passwd", {"meter": "pw"})
    acl = tmp_path / "acl"
    acl.write_text("user meter\ntopic readwrite power/#\n")
    broker = make_broker(
        extra_conf=f"user root\npassword_file {passwd}\nacl_file {acl}",
        anonymous=False,
    )
    broker.start()
    denied = write_config(tmp_path, broker, username="meter", password="pw")
    assert run_check(denied) == 1
    out = capsys.readouterr().out
    assert "ACL" in out
    assert "wattd/#" in out
    # Base topic allowed, but not the Home Assistant discovery prefix.
    no_ha = write_config(
        tmp_path, broker, username="meter", password="pw", base_topic="power"
    )
    assert run_check(no_ha) == 1
    out = capsys.readouterr().out
    assert "ok: retained messages are kept" in out
    assert "discovery prefix 'homeassistant'" in out
    no_discovery = write_config(
        tmp_path,
        broker,
        username="meter",
        password="pw",
        base_topic="power",
        discovery={"enabled": False},
    )
    assert run_check(no_discovery) == 0


def test_tls_success_and_untrusted_certificate(
    tmp_path: Path,
    make_broker: Callable[..., Mosquitto],
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca = TestCa(tmp_path / "ca")
    other = TestCa(tmp_path / "other", name="some other CA")
    broker = make_broker(extra_conf=ca.mosquitto_conf())
    broker.start()
    good = write_config(tmp_path, broker, tls={"ca_file": str(ca.ca_cert)})
    assert run_check(good) == 0
    assert "over TLS" in capsys.readouterr().out
    bad = write_config(tmp_path, broker, tls={"ca_file": str(other.ca_cert)})
    assert run_check(bad) == 1
    out = capsys.readouterr().out
    assert "CERTIFICATE_VERIFY_FAILED" in out
    assert "mqtt.tls.ca_file" in out
    plain = write_config(tmp_path, broker)
    assert run_check(plain) == 1
    assert "configure mqtt.tls" in capsys.readouterr().out
    # insecure skips the certificate check (for testing setups only).
    insecure = write_config(tmp_path, broker, tls={"insecure": True})
    assert run_check(insecure) == 0


async def test_a_running_daemon_is_not_disturbed(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, mosquitto, node_id="busy")
    config = Config.model_validate(json.loads(path.read_text()))
    sink = MqttSink(config)
    await sink.start()
    task = asyncio.create_task(sink.run())
    try:
        await wait_until(lambda: sink.connected, timeout_s=5, what="sink connected")
        assert await asyncio.to_thread(run_check, path) == 0
        await asyncio.sleep(0.2)
        assert sink.connected
        assert sink.counters["connects"] == 1  # its own client id was not reused
    finally:
        await sink.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "OK:" in capsys.readouterr().out


def test_disabled_mqtt_is_noted_but_still_checked(
    mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, mosquitto, enabled=False)
    assert run_check(path) == 0
    assert "mqtt.enabled is false" in capsys.readouterr().out
