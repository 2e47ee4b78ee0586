"""The sink sections: spool, TLS, MQTT (with discovery), InfluxDB and web."""

from __future__ import annotations

import contextlib
import re
import socket
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from wattd.config.base import (
    CredentialName,
    Secret,
    _check_topic,
    _load_secret_pairs,
    _Model,
    _slug,
    is_loopback_host,
)
from wattd.config.redact import shown
from wattd.config.web import CustomerAccess


class SpoolConfig(_Model):
    """The durable on-disk spool shared by the MQTT and InfluxDB sinks."""

    path: Path | None = None
    max_items: int = Field(default=2_000_000, ge=100)
    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    when_full: Literal["drop_oldest"] = "drop_oldest"


class TlsConfig(_Model):
    """TLS settings for a client connection.

    ``ca_file`` unset means the system trust store; ``insecure`` skips both the
    certificate and the host name check (for testing only).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _check_client_cert(self) -> Self:
        if self.key_file is not None and self.cert_file is None:
            msg = "key_file needs cert_file (the client certificate) as well"
            raise ValueError(msg)
        return self


class DiscoveryConfig(_Model):
    """Home Assistant MQTT discovery."""

    enabled: bool = True
    prefix: str = "homeassistant"
    status_topic: str = "homeassistant/status"
    expire_after_s: int = Field(default=120, ge=0)
    """A meter silent this long shows as unavailable (0: never)."""

    @field_validator("prefix", "status_topic")
    @classmethod
    def _valid_topic(cls, value: str) -> str:
        return _check_topic(value, "topic")


class MqttConfig(_Model):
    """MQTT publishing (and Home Assistant discovery)."""

    enabled: bool = False
    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: Secret | None = None
    password_file: Path | None = None
    password_credential: CredentialName | None = None
    tls: TlsConfig | None = None
    client_id: str | None = None
    base_topic: str = "wattd"
    node_id: str = Field(default_factory=lambda: _slug(socket.gethostname()))
    """This host in topics and Home Assistant ids; default: the top-level ``node``."""
    topic_layout: Literal["flat", "node"] = "flat"
    """``node`` puts the node in state topics: ``<base>/<node>/<meter>/state``."""
    qos: Literal[0, 1, 2] = 1
    retain: bool = True
    per_field_topics: bool = False
    aggregate_s: float = Field(default=0.0, ge=0, le=3600)
    """Publish one mean reading per meter per this many seconds (0: every one)."""
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    reconnect_min_s: float = Field(default=1.0, gt=0, le=60)
    """First wait after a lost connection; doubles per failure (with jitter)."""
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)
    """Longest wait between attempts; also the wait after an auth/TLS refusal."""
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)

    @field_validator("base_topic")
    @classmethod
    def _valid_base(cls, value: str) -> str:
        return _check_topic(value, "base_topic")

    @field_validator("node_id")
    @classmethod
    def _valid_node(cls, value: str) -> str:
        # Home Assistant allows only these characters in a discovery node_id.
        if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
            msg = (
                f"node_id {shown(value)} may contain only letters, digits, '_' and '-'"
            )
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _load_password(self) -> Self:
        _load_secret_pairs(self, ("password",))
        if self.password is not None and self.username is None:
            msg = "a password needs a username as well"
            raise ValueError(msg)
        if self.reconnect_min_s > self.reconnect_max_s:
            msg = "reconnect_min_s must not exceed reconnect_max_s"
            raise ValueError(msg)
        return self


class InfluxConfig(_Model):
    """InfluxDB writes: 2.x/3.x token form, or 1.x database form.

    ``api`` picks the endpoint: ``v2`` is ``/api/v2/write`` (2.x, 3.x, Cloud,
    VictoriaMetrics, and 1.8+ through its compatibility API), ``v1`` is 1.x's
    native ``/write?db=`` (every 1.x release, and 3.x). ``auto`` is ``v1`` when
    ``database`` is set and neither ``bucket`` nor ``org`` is, else ``v2``.
    """

    enabled: bool = False
    url: str = "http://localhost:8086"
    api: Literal["auto", "v1", "v2"] = "auto"
    org: str | None = None
    bucket: str | None = None
    token: Secret | None = None
    token_file: Path | None = None
    token_credential: CredentialName | None = None
    database: str | None = None
    retention_policy: str | None = None
    username: str | None = None
    password: Secret | None = None
    password_file: Path | None = None
    password_credential: CredentialName | None = None
    measurement: str = Field(default="power", min_length=1, max_length=200)
    node_id: str | None = Field(default=None, min_length=1)
    """Value of the ``node`` tag; default: ``mqtt.node_id`` (the host name)."""
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    flush_interval_s: float = Field(default=1.0, gt=0, le=300)
    aggregate_s: float = Field(default=0.0, ge=0, le=3600)
    """Write one mean point per meter per this many seconds (0: every reading)."""
    frame_hash: bool = False
    """Add an integer ``frame_hash`` field (the hash of the frame's samples), so
    fleet reports can count a meter heard by two coordinators once."""
    clock_probe: bool = True
    """After a delivered batch (at most once a minute) write one ``wattd_clock``
    point without a timestamp, so fleet reports can see this host's clock offset."""
    max_backoff_s: float = Field(default=60.0, ge=1, le=3600)
    """Longest wait between retries while the server is down."""
    gzip: bool = True
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    verify_ssl: bool = True
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _load_secrets(self) -> Self:
        _load_secret_pairs(self, ("token", "password"))
        if self.enabled and self.bucket is None and self.database is None:
            msg = "set bucket (InfluxDB 2.x/3.x) or database (InfluxDB 1.8+)"
            raise ValueError(msg)
        if self.bucket is not None and self.database is not None:
            msg = (
                "give either bucket (InfluxDB 2.x/3.x) or database (InfluxDB 1.8+),"
                " not both"
            )
            raise ValueError(msg)
        if self.token is not None and (self.username or self.password):
            msg = "give either token (2.x/3.x) or username/password (1.8+), not both"
            raise ValueError(msg)
        if not self.url.startswith(("http://", "https://")):
            msg = f"url {shown(self.url)} must start with http:// or https://"
            raise ValueError(msg)
        if self.api == "v1" and self.bucket is not None:
            msg = "api v1 writes to a database: set database instead of bucket"
            raise ValueError(msg)
        if self.api == "v1" and self.token is not None:
            msg = "api v1 logs in with username and password, not token"
            raise ValueError(msg)
        return self

    @property
    def write_api(self) -> Literal["v1", "v2"]:
        """The endpoint ``api`` resolves to: ``v1`` (``/write``) or ``v2``."""
        if self.api != "auto":
            return self.api
        if self.database is not None and self.bucket is None and self.org is None:
            return "v1"
        return "v2"


class WebConfig(_Model):
    """The built-in web dashboard and /metrics endpoint.

    Bound to loopback by default. Any other address needs credentials: a
    bearer ``token`` (or ``token_file``), or ``username`` plus ``password``
    (or ``password_file``) for HTTP basic auth; both may be set. When
    credentials are set they are required on every bind. ``customers`` gives
    each customer a secret of its own, which shows only its meters.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    token: Secret | None = None
    token_file: Path | None = None
    token_credential: CredentialName | None = None
    username: str | None = Field(default=None, min_length=1)
    password: Secret | None = None
    password_file: Path | None = None
    password_credential: CredentialName | None = None
    metrics: bool = True
    stale_after_s: float = Field(default=30.0, gt=0)
    push_interval_s: float = Field(default=1.0, ge=0.1, le=60)
    """How often live values are pushed to open dashboards."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names answered without credentials, besides localhost and loopback."""
    max_connections: int = Field(default=100, ge=2, le=10_000)
    """Open connections at once; at the limit the oldest idle one is closed."""
    max_streams: int = Field(default=16, ge=1, le=10_000)
    """Open event streams at once; at the limit the oldest one is ended."""
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """A new connection (or one refused access) must send a request this soon."""
    idle_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """An accepted connection may wait this long for its next request."""
    customers: dict[str, CustomerAccess] = Field(default_factory=dict)
    """Per-customer credentials, keyed by the sensors' ``customer`` name."""
    max_bill_days: int = Field(default=366, ge=1, le=3660)
    """Longest period a bill downloaded from the page may cover."""

    @field_validator("allowed_hosts")
    @classmethod
    def _valid_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_host_entry(entry) for entry in value)

    @model_validator(mode="after")
    def _check_limits(self) -> Self:
        if self.max_streams > self.max_connections:
            msg = (
                f"max_streams ({self.max_streams}) must not exceed max_connections"
                f" ({self.max_connections}): every event stream holds a connection"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _load_secrets(self) -> Self:
        _load_secret_pairs(self, ("token", "password"))
        if (self.username is None) != (self.password is None):
            msg = "username and password go together; set both or neither"
            raise ValueError(msg)
        if self.enabled and not self.has_auth and not is_loopback_host(self.host):
            msg = (
                f"host {shown(self.host)} is reachable from other machines, so the"
                " dashboard needs credentials: set token (or token_file), or"
                " username and password (or password_file); or bind to 127.0.0.1"
            )
            raise ValueError(msg)
        if self.enabled and self.customers and not self.has_auth:
            msg = (
                "customers need the operator's own credentials as well: set token"
                " (or token_file), or username and password, under web"
            )
            raise ValueError(msg)
        return self

    @property
    def has_auth(self) -> bool:
        """True if requests must carry credentials."""
        return self.token is not None or self.username is not None


def host_name(text: str) -> str | None:
    """``text`` as a comparable host: lower case, no brackets or final dot.

    Addresses come out in their canonical form (``::1``, ``127.0.0.1``); None
    if ``text`` is neither an address nor a valid host name.
    """
    import ipaddress

    name = text.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    else:
        name = name.rstrip(".")
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(name))
    if re.fullmatch(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?", name) and ".." not in name:
        return name
    return None


def _host_entry(entry: str) -> str:
    name = host_name(entry)
    if name is None:
        msg = (
            f"{shown(entry)} is not a host name or address;"
            " give names like meters.lan or 192.168.1.20, without scheme or port"
        )
        raise ValueError(msg)
    return name
