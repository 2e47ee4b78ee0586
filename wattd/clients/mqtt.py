"""How wattd connects to an MQTT broker: client options, TLS, login, and errors.

:func:`make_client` builds an unconnected :class:`aiomqtt.Client` from the
``mqtt:`` settings (login, keepalive, the retained ``offline`` last will);
:func:`build_tls_context` turns ``mqtt.tls`` into an SSL context whose
:class:`TlsContext` can close the sockets of failed handshakes; and
:func:`describe_error` turns an aiomqtt/paho failure into a
:class:`~wattd.errors.SinkError` that says what to check. The MQTT sink,
``wattd mqtt-test`` and the summaries' MQTT destination all connect this way.
:class:`BatchPublisher` is how the sink publishes readings: many messages,
one wait for their acknowledgements.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any, Final

import aiomqtt

from wattd.clients.topics import PAYLOAD_OFFLINE, Topics
from wattd.errors import SinkAuthError, SinkError, SinkTlsError, SinkUnavailable

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Sequence

    from wattd.config import MqttConfig, TlsConfig

__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_INFLIGHT",
    "BatchPublisher",
    "TlsContext",
    "build_tls_context",
    "describe_error",
    "make_client",
    "reason_code",
]

CONNECT_TIMEOUT_S: Final = 10.0
"""aiomqtt's ``timeout``: for the connection, and for each acknowledgement."""
MAX_INFLIGHT: Final = 50
"""Publishes awaiting their PUBACK at once. Enough to keep a LAN link busy;
more costs CPU, since aiomqtt and paho scan their pending lists per message.
The MQTT sink keeps its publish window to the same number."""

# CONNACK codes meaning "your credentials are wrong / you may not connect":
# MQTT 3.1.1 return codes 4 and 5, and their MQTT 5 reason codes 134 and 135.
_BAD_CREDENTIALS: Final = frozenset({4, 134})
_NOT_AUTHORISED: Final = frozenset({5, 135})


def make_client(
    mqtt: MqttConfig,
    *,
    tls_context: ssl.SSLContext | None,
    client_id: str | None = None,
    will: bool = True,
) -> aiomqtt.Client:
    """A new, unconnected client for ``mqtt`` (with the status last will)."""
    _paho_problems.last = None
    topics = Topics.from_config(mqtt)
    return aiomqtt.Client(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password else None,
        identifier=client_id or mqtt.client_id or f"wattd-{mqtt.node_id}",
        will=(
            aiomqtt.Will(topics.status, PAYLOAD_OFFLINE, qos=1, retain=True)
            if will
            else None
        ),
        clean_session=True,
        keepalive=mqtt.keepalive_s,
        timeout=CONNECT_TIMEOUT_S,
        tls_context=tls_context,
        max_inflight_messages=MAX_INFLIGHT,
        logger=_client_log,
    )


class BatchPublisher:
    """Publishes a batch of messages in order and waits once for all their PUBACKs.

    ``aiomqtt.Client.publish`` costs, for every message, a task (its
    ``wait_for``), an event and a walk over all pending calls; at thousands
    of readings a second that was the largest part of the daemon's CPU time.
    This hands the whole batch to the paho client that aiomqtt drives (paho
    keeps at most :data:`MAX_INFLIGHT` unacknowledged and sends the rest, in
    order, as acknowledgements come in) and waits on one future.

    It takes paho's ``on_publish`` for the messages it sent and passes every
    other acknowledgement on to aiomqtt's handler, so ``client.publish`` keeps
    working beside it. It reaches into aiomqtt 2.x (``_client``,
    ``_disconnected``); ``tests/clients/test_mqtt_batch.py`` runs it against a
    real broker.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self._paho = client._client  # aiomqtt 2.x: see the class docstring
        self._theirs: Any = self._paho.on_publish
        self._paho.on_publish = self._on_publish
        self._waiting: dict[int, int] = {}
        """paho message id: index in the batch being published."""
        self._confirmed: Callable[[int], None] | None = None
        self._all_done: asyncio.Future[None] | None = None
        self._acked = 0

    async def publish(
        self,
        messages: Sequence[tuple[str, bytes]],
        *,
        qos: int,
        retain: bool,
        timeout_s: float,
        confirmed: Callable[[int], None],
    ) -> None:
        """Publish ``(topic, payload)`` messages; ``confirmed(i)`` on each PUBACK.

        Returns once every message is acknowledged. ``confirmed`` is called
        from paho's callback as they come, so after a failure or a
        cancellation the caller already knows which ones made it.

        Raises:
            aiomqtt.MqttError: a message could not be queued (connection gone),
                the connection was lost, or no acknowledgement came for
                ``timeout_s``.
        """
        if qos < 1:
            msg = "BatchPublisher waits for acknowledgements: qos must be 1 or 2"
            raise ValueError(msg)
        if not messages:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._all_done, self._confirmed = done, confirmed
        waiting = self._waiting
        try:
            for index, (topic, payload) in enumerate(messages):
                info = self._paho.publish(topic, payload, qos, retain)
                if info.rc != 0:
                    raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
                waiting[info.mid] = index
            await self._wait(done, timeout_s)
        finally:
            waiting.clear()
            self._all_done = self._confirmed = None

    async def _wait(self, done: asyncio.Future[None], timeout_s: float) -> None:
        """Until ``done``; fail once the link is lost or silent for ``timeout_s``."""
        lost: asyncio.Future[Any] = self.client._disconnected
        while not done.done():
            seen = self._acked
            await asyncio.wait(
                (done, lost), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            if done.done():
                break
            if lost.done():
                # Retrieved here, so asyncio does not report it as unhandled.
                cause = None if lost.cancelled() else lost.exception()
                msg = "the connection was lost while messages awaited their PUBACK"
                raise aiomqtt.MqttError(msg) from cause
            if self._acked == seen:
                msg = f"no PUBACK from the broker for {timeout_s:g} s"
                raise aiomqtt.MqttError(msg)

    def _on_publish(
        self,
        client: object,
        userdata: object,
        mid: int,
        reason_code: object,
        properties: object,
    ) -> None:
        index = self._waiting.pop(mid, None)
        if index is None or self._confirmed is None:
            if self._theirs is not None:
                self._theirs(client, userdata, mid, reason_code, properties)
            return
        self._acked += 1
        self._confirmed(index)
        done = self._all_done
        if not self._waiting and done is not None and not done.done():
            done.set_result(None)


class TlsContext(ssl.SSLContext):
    """An SSL context that can close the sockets of failed handshakes.

    When the TLS handshake fails, paho drops the half-made socket without
    closing it; the file descriptor then lingers until garbage collection.
    This context remembers what it wrapped so the caller can close it.
    """

    def __init__(self, protocol: int) -> None:
        # SSLContext.__new__ consumed ``protocol``; __init__ has nothing to add.
        super().__init__()
        self._wrapped: list[ssl.SSLSocket] = []

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        """Wrap like :class:`ssl.SSLContext` does, and remember the socket."""
        wrapped = super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )
        self._wrapped.append(wrapped)
        return wrapped

    def connected(self) -> None:
        """The connection succeeded: its socket belongs to the client now."""
        self._wrapped.clear()

    def close_failed(self) -> None:
        """The connection failed: close whatever it left behind."""
        for sock in self._wrapped:
            sock.close()
        self._wrapped.clear()


def build_tls_context(tls: TlsConfig) -> TlsContext:
    """An SSL context from the TLS settings (reads the files: call off-loop).

    Raises:
        SinkTlsError: a file is missing or not a usable certificate/key.
    """
    # PROTOCOL_TLS_CLIENT verifies the certificate and the host name.
    context = TlsContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if tls.ca_file is None:
            context.load_default_certs()
        else:
            context.load_verify_locations(cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise SinkTlsError(
            f"cannot load the CA file {tls.ca_file}: {_os_text(exc)}; set"
            " mqtt.tls.ca_file to the PEM certificate of the CA that signed the"
            " broker's certificate",
            sink="mqtt",
        ) from None
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(
                str(tls.cert_file), str(tls.key_file) if tls.key_file else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise SinkTlsError(
                f"cannot load the client certificate {tls.cert_file}"
                f"{f' / key {tls.key_file}' if tls.key_file else ''}:"
                f" {_os_text(exc)}; both must be PEM files and the key must match"
                " the certificate (and not be password protected)",
                sink="mqtt",
            ) from None
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe_error(
    exc: BaseException,
    mqtt: MqttConfig,
    *,
    timeout_s: float = CONNECT_TIMEOUT_S,
    lost: bool = False,
) -> SinkError:
    """Turn an aiomqtt/paho failure into a SinkError that says what to check.

    paho reports socket and TLS failures after the TCP connect only in its log
    (aiomqtt then merely times out), so the last such line is folded in.
    ``lost`` means the connection had been up: then the broker went away, and
    advice about the settings would mislead.
    """
    where = f"broker {mqtt.host}:{mqtt.port}"
    if lost:
        detail = _paho_problems.last
        why = (
            f" ({detail.removeprefix('failed to receive on socket: ')})"
            if detail
            else ""
        )
        return SinkUnavailable(f"lost the connection to {where}{why}", sink="mqtt")
    code = getattr(exc, "rc", None)
    if isinstance(exc, aiomqtt.MqttCodeError) and code is not None:
        value = reason_code(code)
        if value in _BAD_CREDENTIALS | _NOT_AUTHORISED:
            why = (
                "bad user name or password"
                if value in _BAD_CREDENTIALS
                else ("not authorised")
            )
            if mqtt.username:
                hint = (
                    "check mqtt.username and mqtt.password / password_file against"
                    " the broker's users (password_file, ACL)"
                )
                who = f"user {mqtt.username!r}"
            else:
                hint = (
                    "the broker wants a login: set mqtt.username and"
                    " mqtt.password / password_file"
                )
                who = "an anonymous client"
            return SinkAuthError(
                f"{where} refused the login of {who} ({why}); {hint}", sink="mqtt"
            )
        if isinstance(exc, aiomqtt.exceptions.MqttConnectError):
            return SinkUnavailable(
                f"{where} refused the connection ({exc}); check the broker log",
                sink="mqtt",
            )
    text = str(exc) or type(exc).__name__
    detail = _paho_problems.last
    if detail and detail not in text:
        text = f"{text}: {detail.removeprefix('failed to receive on socket: ')}"
    lower = text.lower()
    if "ssl" in lower or "certificate" in lower or "tls" in lower:
        return SinkTlsError(
            f"TLS with {where} failed ({text}); check that mqtt.tls.ca_file signed"
            " the broker's certificate, that mqtt.host matches the name in it,"
            " that the port is the broker's TLS listener, and whether the broker"
            " requires a client certificate (mqtt.tls.cert_file / key_file)",
            sink="mqtt",
        )
    if "reset by peer" in lower or "broken pipe" in lower:
        return SinkUnavailable(
            f"{where} dropped the connection before answering ({text}); if that"
            " port is a TLS listener, configure mqtt.tls",
            sink="mqtt",
        )
    if "refused" in lower:
        return SinkUnavailable(
            f"{where} refused the connection; is the broker running and listening"
            " on that port?",
            sink="mqtt",
        )
    if "name or service not known" in lower or "nodename nor servname" in lower:
        return SinkUnavailable(
            f"cannot resolve the host name {mqtt.host!r}; check mqtt.host", sink="mqtt"
        )
    if "timed out" in lower:
        return SinkUnavailable(
            f"{where} did not answer within {timeout_s:g} s; check host, port and"
            " firewall (a TLS listener also stays silent to plain MQTT)",
            sink="mqtt",
        )
    return SinkUnavailable(f"connection to {where} failed: {text}", sink="mqtt")


class _PahoProblems(logging.Filter):
    """Remembers paho's last warning or error and keeps it out of the log.

    Those lines ("failed to receive on socket: ...") are the only trace of a
    TLS alert or a reset connection; :func:`describe_error` reports them with
    advice instead. They still reach the log when debugging.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        """Record warnings and errors; pass them on only at debug level."""
        if record.levelno < logging.WARNING:
            return True
        self.last = record.getMessage()
        return _client_log.isEnabledFor(logging.DEBUG)


# paho logs under the sink's name, so ``wattd.sinks.mqtt.sink`` at debug level
# shows paho's own lines beside the sink's.
_client_log = logging.getLogger("wattd.sinks.mqtt.sink.client")
_paho_problems = _PahoProblems()
_client_log.addFilter(_paho_problems)


def reason_code(value: object) -> int:
    """The integer of a paho ReasonCode, or of a plain int."""
    inner = getattr(value, "value", value)
    return inner if isinstance(inner, int) else -1


def _os_text(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)
