"""Secrets in the config: never blank, four ways to give them, never shown."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from tests.fixtures.configs import load_error
from wattd.cli import main
from wattd.config import dump_effective, load_config
from wattd.errors import ConfigErrors

# Every section that holds secrets, with the rest of what it needs, so each
# secret key can be tried in each form.
SECTIONS = {
    "mqtt": "mqtt:\n  enabled: true\n  username: u\n",
    "influxdb": "influxdb:\n  enabled: true\n  bucket: b\n",
    "web": "web:\n  enabled: true\n  username: u\n",
    "x": (
        "summaries:\n  weekly:\n    destinations:\n      x:\n        enabled: true\n"
        "        consumer_secret: cs\n        access_token: at\n"
        "        access_token_secret: ats\n"
    ),
    "mastodon": (
        "summaries:\n  weekly:\n    destinations:\n      mastodon:\n"
        "        enabled: true\n        api_base_url: https://social.example\n"
    ),
    "webhook": (
        "summaries:\n  weekly:\n    destinations:\n      webhook:\n"
        "        enabled: true\n        url: https://hooks.example/x\n"
    ),
}
SECRETS = [
    ("mqtt", "password", "mqtt.password"),
    ("influxdb", "token", "influxdb.token"),
    ("web", "password", "web.password"),
    ("x", "consumer_key", "summaries.weekly.destinations.x.consumer_key"),
    ("mastodon", "access_token", "summaries.weekly.destinations.mastodon.access_token"),
    ("webhook", "secret", "summaries.weekly.destinations.webhook.secret"),
]


def indent_of(section: str) -> str:
    last = SECTIONS[section].rstrip("\n").rsplit("\n", 1)[-1]
    return last[: len(last) - len(last.lstrip())]


def config_with(tmp_path: Path, section: str, line: str) -> tuple[Path, int]:
    """A config whose ``section`` has ``line`` added; returns it and the line number."""
    text = SECTIONS[section] + indent_of(section) + line + "\n"
    path = tmp_path / "wattd.yaml"
    path.write_text(text)
    return path, text.count("\n")


@pytest.mark.parametrize(("section", "name", "key"), SECRETS)
@pytest.mark.parametrize("value", ["''", '"   "', '"\\t"'])
def test_an_inline_blank_secret_is_an_error(
    tmp_path: Path, section: str, name: str, key: str, value: str
) -> None:
    path, line = config_with(tmp_path, section, f"{name}: {value}")
    err = load_error(path)
    assert (err.line, err.key) == (line, key)
    assert "is empty; set the secret" in err.message


def test_the_open_dashboard_of_an_empty_token_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wattd.yaml"
    path.write_text("web: {enabled: true, host: 0.0.0.0, token: ''}\n")
    assert main(["check-config", str(path)]) == 78
    printed = capsys.readouterr().err
    assert printed.strip() == (
        f"{path}:1: web.token: is empty; set the secret, or remove the key if none"
        " is needed"
    )
    monkeypatch.setenv("WATTD_TEST_EMPTY", "")
    path.write_text("web:\n  host: 0.0.0.0\n  token: ${WATTD_TEST_EMPTY}\n")
    err = load_error(path)
    assert (err.line, err.key) == (3, "web.token")
    assert "is empty" in err.message


@pytest.mark.parametrize(("section", "name", "key"), SECRETS)
def test_a_blank_secret_file_is_an_error(
    tmp_path: Path, section: str, name: str, key: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(" \n\t\n")
    path, line = config_with(tmp_path, section, f"{name}_file: {secret}")
    err = load_error(path)
    assert (err.line, err.key) == (line, f"{key}_file")
    assert err.message == f"{secret} is empty"


@pytest.mark.parametrize(("section", "name", "key"), SECRETS)
def test_a_credential_is_read_from_the_credentials_directory(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    section: str,
    name: str,
    key: str,
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "the-secret").write_text("cred-VALUE-42\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path, line = config_with(tmp_path, section, f"{name}_credential: the-secret")
    config = load_config(path)
    owner = config.model_dump()
    for part in key.split(".")[:-1]:
        owner = owner[part]
    secret = owner[name]
    assert secret.get_secret_value() == "cred-VALUE-42"
    assert "cred-VALUE-42" not in dump_effective(config)

    (creds / "the-secret").write_text("\n  \n")
    err = load_error(path)
    assert (err.line, err.key) == (line, f"{key}_credential")
    assert err.message == "credential the-secret is empty"
    (creds / "the-secret").unlink()
    err = load_error(path)
    assert (err.line, err.key) == (line, f"{key}_credential")
    assert err.message == (
        f"credential the-secret is not in {creds}; does the unit load it with"
        " LoadCredential=?"
    )
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    err = load_error(path)
    assert err.key == f"{key}_credential"
    assert err.message.startswith(
        "$CREDENTIALS_DIRECTORY is not set, so credential the-secret cannot be read;"
        " systemd sets it for a service with LoadCredential=the-secret:PATH."
    )


def test_the_service_example_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/service.md: LoadCredential=mqtt-password:/etc/wattd/mqtt-password
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt-password").write_text("hunter2\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = tmp_path / "wattd.yaml"
    path.write_text(
        "mqtt:\n  enabled: true\n  username: wattd\n"
        "  password_credential: mqtt-password\n"
    )
    config = load_config(path)
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "hunter2"
    assert yaml.safe_load(dump_effective(config))["mqtt"]["password"] == "**********"


def test_one_secret_one_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("x")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    path = tmp_path / "wattd.yaml"
    path.write_text(
        "mqtt:\n  enabled: true\n  username: u\n  password_file: "
        f"{secret}\n  password_credential: pw\n"
    )
    err = load_error(path)
    assert (err.line, err.key) == (1, "mqtt")
    both = "give either password_file or password_credential, not both"
    assert err.message == both
    path.write_text(
        "mqtt:\n  enabled: true\n  username: u\n  password: x\n  password_file: "
        f"{secret}\n  password_credential: pw\n"
    )
    assert load_error(path).message == (
        "give only one of password, password_file, password_credential"
    )


@pytest.mark.parametrize("name", ["../etc/shadow", "a/b", ".", ".."])
def test_a_credential_name_is_a_plain_file_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / "wattd.yaml"
    path.write_text(f"mqtt:\n  username: u\n  password_credential: '{name}'\n")
    err = load_error(path)
    assert (err.line, err.key) == (3, "mqtt.password_credential")
    assert "must be a plain file name" in err.message


def test_a_disabled_section_reads_no_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "wattd.yaml"
    path.write_text("influxdb:\n  bucket: b\n  token_credential: influx-token\n")
    assert load_config(path).influxdb.token is None


def test_oversized_or_undecodable_secret_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    path = tmp_path / "wattd.yaml"
    path.write_text(
        f"mqtt:\n  enabled: true\n  username: u\n  password_file: {secret}\n"
    )
    secret.write_bytes(b"x" * (64 * 1024 + 1))
    too_large = f"{secret} is larger than 64 KiB; it should hold just the secret"
    assert load_error(path).message == too_large
    secret.write_bytes(b"caf\xe9\n")
    assert load_error(path).message == f"{secret} is not UTF-8 text"


def test_check_config_masks_headers_url_credentials_and_hook_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wattd.yaml"
    path.write_text(
        textwrap.dedent(
            """
            ports: [{device: /dev/ttyUSB0}]
            influxdb:
              enabled: true
              url: https://admin:pw-in-url-1@influx.example:8086/
              bucket: b
            summaries:
              daily:
                period: day
                destinations:
                  webhook:
                    enabled: true
                    url: https://hooks.slack.com/services/T0/B0/hook-secret-2?sig=qs-3
                    headers: {Authorization: Bearer header-secret-4, X-Team: ops}
                  mastodon:
                    enabled: true
                    api_base_url: https://bot:pw-in-url-5@social.example
                    access_token: token-6
            """
        )
    )
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    for secret in ("pw-in-url-1", "hook-secret-2", "qs-3", "header-secret-4"):
        assert secret not in out + err
    for secret in ("ops", "pw-in-url-5", "token-6", "bot"):
        assert secret not in out + err
    effective = yaml.safe_load(out)
    assert effective["influxdb"]["url"] == "https://**********@influx.example:8086/"
    hook = effective["summaries"]["daily"]["destinations"]["webhook"]
    assert hook["url"] == "https://hooks.slack.com/**********"
    assert hook["headers"] == {"Authorization": "**********", "X-Team": "**********"}
    mastodon = effective["summaries"]["daily"]["destinations"]["mastodon"]
    assert mastodon["api_base_url"] == "https://**********@social.example"
    assert mastodon["access_token"] == "**********"


def test_errors_never_echo_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTD_TEST_HOOK", "sk-live-ENV-77")
    path = tmp_path / "wattd.yaml"
    path.write_text(
        textwrap.dedent(
            """
            influxdb:
              url: ftp://admin:pw-in-url-8@influx.example/
            summaries:
              daily:
                destinations:
                  webhook:
                    url: https://hooks.example/x
                    headers: {Authorization: 123456789, X-Key: [sk-list-9]}
                    token: {value: "${WATTD_TEST_HOOK}"}
                  mastodon:
                    api_base_url: 12
                    access_token: [tok-in-list]
            mqtt:
              password: 424242
            """
        )
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    text = str(info.value)
    for secret in ("pw-in-url-8", "123456789", "sk-list-9", "sk-live-ENV-77"):
        assert secret not in text
    assert "tok-in-list" not in text
    assert "424242" not in text
    assert "ftp://**********@influx.example/" in text
    assert "headers.Authorization" in text  # the place is still named


def test_a_webhook_header_must_have_a_value(tmp_path: Path) -> None:
    path = tmp_path / "wattd.yaml"
    path.write_text(
        "summaries:\n  daily:\n    destinations:\n      webhook:\n"
        "        url: https://hooks.example/x\n        headers: {Authorization: ' '}\n"
    )
    err = load_error(path)
    assert err.key == "summaries.daily.destinations.webhook.headers"
    assert err.message == "header 'Authorization' is empty; give its value or remove it"
