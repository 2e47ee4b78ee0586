"""Who gets an answer: credentials on every endpoint, blank secrets, Host names."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from pydantic import SecretStr

from tests.sinks.web.test_app import make_config, serving
from wattd.config import Config, WebConfig, parse_config
from wattd.errors import ConfigError
from wattd.sinks.web.auth import Authenticator

if TYPE_CHECKING:
    from pathlib import Path

TOKEN = "s3cr3t-token"
# Each endpoint and what it answers once access is granted.
ENDPOINTS = {
    "/": 200,
    "/static/app.js": 200,
    "/api/state": 200,
    "/api/events": 200,
    "/api/sensors/1/waveform": 404,  # no frame yet: past the door, still nothing
    "/api/history?hours=1": 200,
    "/metrics": 200,
    "/no/such/page": 404,
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def status(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> int:
    async with http.get(url, headers=headers or {}, allow_redirects=False) as resp:
        return resp.status


async def test_every_endpoint_wants_valid_credentials(tmp_path: Path) -> None:
    config = make_config(tmp_path, token=TOKEN, username="ops", password="pa55")
    wrong = {
        "missing": {},
        "wrong token": {"Authorization": "Bearer not-the-token"},
        "empty token": {"Authorization": "Bearer "},
        "token as basic": {"Authorization": f"Basic {TOKEN}"},
        "wrong password": {"Authorization": basic("ops", "wrong")},
        "wrong user": {"Authorization": basic("nobody", "pa55")},
        "empty basic": {"Authorization": basic("", "")},
        "forged cookie": {"Cookie": "wattd_session=0123abcd"},
    }
    valid = {
        "token": {"Authorization": f"Bearer {TOKEN}"},
        "basic": {"Authorization": basic("ops", "pa55")},
    }
    async with serving(config) as (_sink, base), aiohttp.ClientSession() as http:
        async with http.get(f"{base}/?token={TOKEN}", allow_redirects=False) as r:
            assert r.status == 303
            session = r.cookies["wattd_session"].value
        valid["session cookie"] = {"Cookie": f"wattd_session={session}"}
        http.cookie_jar.clear()
        for path, granted in ENDPOINTS.items():
            for label, headers in wrong.items():
                got = await status(http, base + path, headers)
                assert got == 401, (path, label)
            for label, headers in valid.items():
                got = await status(http, base + path, headers)
                assert got == granted, (path, label)
        for headers in (*wrong.values(), *valid.values()):
            assert await status(http, f"{base}/healthz", headers) == 200


@pytest.mark.parametrize(
    "web",
    [
        {"token": SecretStr("")},
        {"token": SecretStr("  \t")},
        {"username": "ops", "password": SecretStr("")},
        {"username": " ", "password": SecretStr(" ")},
    ],
    ids=["empty token", "blank token", "empty password", "blank user and password"],
)
async def test_a_blank_secret_opens_nothing(
    tmp_path: Path, web: dict[str, Any]
) -> None:
    # The config refuses these; the door must stay shut even if one got past.
    config = make_config(tmp_path)
    web_cfg = WebConfig.model_construct(
        **{**config.web.model_dump(exclude={"token", "username", "password"}), **web}
    )
    config = config.model_copy(update={"web": web_cfg})
    assert Authenticator(web_cfg).required
    attempts = [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer  \t"},
        {"Authorization": basic("", "")},
        {"Authorization": basic("ops", "")},
        {"Authorization": basic(" ", " ")},
    ]
    async with serving(config) as (_sink, base), aiohttp.ClientSession() as http:
        for path in ("/api/state", "/metrics", "/", "/api/events"):
            for headers in attempts:
                assert await status(http, base + path, headers) == 401, (path, headers)
        assert await status(http, f"{base}/?token=") == 401
        assert await status(http, f"{base}/?token=%20") == 401


ANSWERED = [
    "127.0.0.1",
    "127.0.0.1:{port}",
    "127.8.9.10:80",
    "localhost",
    "localhost:{port}",
    "LocalHost.:{port}",
    "dash.localhost:{port}",
    "[::1]",
    "[::1]:{port}",
    "meters.lan",
    "Meters.LAN:8080",
]
REFUSED = [
    "attacker.example",
    "attacker.example:{port}",
    "localhost.attacker.example",
    "127.0.0.1.nip.io",
    "meters.lan.attacker.example",
    "192.168.1.20",
    "[::2]:{port}",
    "[::1",
    "localhost:http",
    "",
]


async def test_without_credentials_only_loopback_names_are_answered(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, allowed_hosts=["meters.lan"])
    async with serving(config) as (sink, base), aiohttp.ClientSession() as http:
        port = sink.url.rsplit(":", 1)[1].strip("/") if sink.url else ""
        for template in ANSWERED:
            host = template.format(port=port)
            for path in ("/api/state", "/healthz"):
                assert await status(http, base + path, {"Host": host}) == 200, host
        for template in REFUSED:
            host = template.format(port=port)
            for path in ("/api/state", "/", "/metrics", "/healthz"):
                async with http.get(base + path, headers={"Host": host}) as resp:
                    assert resp.status == 421, (host, path)
                    text = await resp.text()
            assert "web.allowed_hosts" in text
            assert len(text) < 300
            assert "\n" not in text.rstrip("\n")


async def test_with_credentials_the_host_does_not_matter(tmp_path: Path) -> None:
    config = make_config(tmp_path, token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with serving(config) as (_sink, base), aiohttp.ClientSession() as http:
        host = {"Host": "attacker.example"}
        assert await status(http, f"{base}/api/state", host) == 401
        assert await status(http, f"{base}/api/state", {**host, **bearer}) == 200


def test_allowed_hosts_are_checked_and_normalised(tmp_path: Path) -> None:
    text = "web:\n  allowed_hosts: [{}]\n"
    config = parse_config(text.format("'Meters.LAN.', '[::1]', 10.0.0.7"))
    assert config.web.allowed_hosts == ("meters.lan", "::1", "10.0.0.7")
    for bad in ("meters.lan:8080", "http://meters.lan", "'*'", "a b", "''"):
        with pytest.raises(ConfigError) as info:
            parse_config(text.format(bad), tmp_path / "wattd.yaml")
        message = str(info.value)
        assert "wattd.yaml:2: web.allowed_hosts" in message, message
        assert "without scheme or port" in message
    with pytest.raises(ConfigError, match=r"max_streams \(20\) must not exceed"):
        parse_config("web:\n  max_connections: 10\n  max_streams: 20\n")
    # Round trip: what check-config prints is a valid config again.
    Config.model_validate(config.model_dump(mode="json"))
