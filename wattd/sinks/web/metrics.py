"""Prometheus metrics, built from the daemon snapshot at scrape time.

Nothing is updated per reading: the reading path stays as cheap as without an
exporter, and a scrape costs one :class:`~wattd.core.snapshot.DaemonSnapshot` plus
formatting (a few milliseconds per thousand sensors). The families follow the
Prometheus naming conventions: base units in the name (``_watts``, ``_volts``,
``_amperes``, ``_seconds``), ``_total`` on counters, unix times as
``_timestamp_seconds``.

Energy is exported in **joules** (``wattd_energy_joules_total``), not
watt-hours: the joule is Prometheus' base unit for energy (node_exporter,
Kepler and Scaphandre use it), so ``rate(wattd_energy_joules_total[5m])`` is
directly the mean power in watts, comparable to ``wattd_power_watts``. One
watt-hour is 3600 J. The counter is wattd's persisted ``wh_total``, which never
goes down; its value does not reset when the daemon restarts.

Every per-sensor family carries the same identity labels (``sensor``,
``name``, ``rack``, ``customer``, ``location``; empty when not configured), so
they join with each other and with per-host metrics by rack or customer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from wattd.core.frames import RejectReason

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from wattd.core.snapshot import (
        DaemonSnapshot,
        PortSnapshot,
        SensorSnapshot,
        SinkSnapshot,
    )

__all__ = [
    "SENSOR_LABELS",
    "SnapshotCollector",
    "build_registry",
    "render",
    "render_chunks",
]

SENSOR_LABELS: Final = ("sensor", "name", "rack", "customer", "location")
JOULES_PER_WH: Final = 3600.0
CHUNK_CHARS: Final = 32 * 1024
"""Size of the pieces :func:`render_chunks` yields (text of ~250 sensor lines)."""
# A sink's own stats() names its backlog in one of these ways (first wins).
_BACKLOG_KEYS: Final = ("spool_depth", "backlog")
_REJECT_REASONS: Final = tuple(str(r) for r in RejectReason)
# The library's own number format (Go-style), so both paths print alike.
_number = cast("Callable[[float], str]", floatToGoString)


class SnapshotCollector(Collector):
    """Turns one daemon snapshot into metric families on every collect()."""

    def __init__(
        self, snapshot: Callable[[], DaemonSnapshot], *, sensors: bool = True
    ) -> None:
        self._snapshot = snapshot
        self._sensors = sensors

    def describe(self) -> list[Metric]:
        """Nothing up front: registering must not take a snapshot."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every wattd family, from a single snapshot."""
        snap = self._snapshot()
        yield from _daemon_families(snap)
        if self._sensors:
            yield from _sensor_families(snap.sensors)
        yield from _port_families(snap.ports)
        yield from _sink_families(snap.sinks)


def build_registry(
    snapshot: Callable[[], DaemonSnapshot], *, process: bool = True
) -> CollectorRegistry:
    """A registry with wattd's families and (by default) the process collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    if process:
        ProcessCollector(registry=registry)
    return registry


def render(snapshot: DaemonSnapshot, accept: str = "") -> tuple[bytes, str]:
    """Exposition of one snapshot in the format ``accept`` asks for.

    Returns the body and its content type (Prometheus text 0.0.4, or
    OpenMetrics when the scraper prefers it). Safe to call from a worker
    thread: the snapshot is frozen. :func:`render_chunks` is the same body
    in pieces.
    """
    chunks, content_type = render_chunks(snapshot, accept)
    return b"".join(chunks), content_type


def render_chunks(
    snapshot: DaemonSnapshot, accept: str = ""
) -> tuple[Iterator[bytes], str]:
    """:func:`render` as pieces of at most ~32 KB, made as they are taken.

    A server can send each piece as it comes: at a thousand sensors the whole
    body is ~1.5 MB, which a scrape would otherwise hold (and free) at once.
    The work happens while the iterator is consumed, which may be on a worker
    thread, one piece at a time.

    The per-sensor families are most of a scrape (a dozen lines per sensor)
    and prometheus-client formats each line from scratch, checking and
    escaping every label; at a thousand sensors that is ~90 ms of CPU holding
    the GIL. So those lines are written here, each sensor's label set escaped
    once, in exactly the library's format (the tests compare both); everything
    else goes through the library.
    """
    encoder, content_type = choose_encoder(accept)
    openmetrics = content_type.startswith("application/openmetrics-text")
    return _chunks(snapshot, encoder, openmetrics=openmetrics), content_type


def _chunks(
    snapshot: DaemonSnapshot,
    encoder: Callable[[CollectorRegistry], bytes],
    *,
    openmetrics: bool,
) -> Iterator[bytes]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snapshot, sensors=False))
    ProcessCollector(registry=registry)
    head = encoder(registry)
    eof = b"# EOF\n"
    if openmetrics and head.endswith(eof):
        head = head[: -len(eof)]
    yield head
    lines: list[str] = []
    size = 0
    for line in _sensor_lines(snapshot.sensors, openmetrics=openmetrics):
        lines.append(line)
        size += len(line)
        if size >= CHUNK_CHARS:
            yield "".join(lines).encode()
            lines.clear()
            size = 0
    if lines:
        yield "".join(lines).encode()
    if openmetrics:
        yield eof


# -- families -------------------------------------------------------------------


def _daemon_families(snap: DaemonSnapshot) -> Iterator[Metric]:
    info = InfoMetricFamily("wattd_build", "wattd version.", labels=("version",))
    info.add_metric([snap.version], {})
    yield info
    yield GaugeMetricFamily(
        "wattd_start_time_seconds",
        "When the daemon started (unix time).",
        value=snap.started_at.timestamp(),
    )
    yield CounterMetricFamily(
        "wattd_readings_total",
        "Readings computed from IO frames since the daemon started.",
        value=snap.readings_total,
    )
    yield GaugeMetricFamily(
        "wattd_config_last_reload_success",
        "1 if the last config (re)load was applied, 0 if it was rejected.",
        value=0.0 if snap.last_reload_error else 1.0,
    )
    yield GaugeMetricFamily(
        "wattd_config_last_reload_timestamp_seconds",
        "When the running config was loaded (unix time).",
        value=snap.config_loaded_at.timestamp(),
    )
    saved = GaugeMetricFamily(
        "wattd_state_last_save_timestamp_seconds",
        "When the energy totals were last saved (unix time).",
    )
    if snap.state_saved_at is not None:
        saved.add_metric([], snap.state_saved_at.timestamp())
    yield saved
    yield GaugeMetricFamily(
        "wattd_state_save_ok",
        "1 if the last state save worked, 0 if it failed.",
        value=0.0 if snap.state_save_error else 1.0,
    )


def _sensor_labels(s: SensorSnapshot) -> list[str]:
    return [
        str(s.sensor),
        s.name,
        s.labels.get("rack", ""),
        s.labels.get("customer", ""),
        s.labels.get("location", ""),
    ]


# Per-sensor scalar families: (name, help, counter?, value or None to skip).
# Built one family at a time, so a scrape holds one family's samples at once,
# not all of them (13 families x 1,000 sensors is 13,000 samples).
_SensorValue = Callable[["SensorSnapshot"], "float | None"]
_SENSOR_SCALARS: Final[tuple[tuple[str, str, bool, _SensorValue], ...]] = (
    ("wattd_power_watts", "Real power of the last reading.", False, lambda s: s.watts),
    (
        "wattd_energy_joules_total",
        "Energy drawn through the meter (persisted; 1 Wh = 3600 J).",
        True,
        lambda s: None if s.wh_total is None else s.wh_total * JOULES_PER_WH,
    ),
    (
        "wattd_voltage_volts",
        "RMS voltage of the last reading.",
        False,
        lambda s: s.vrms,
    ),
    (
        "wattd_current_amperes",
        "RMS current of the last reading.",
        False,
        lambda s: s.irms,
    ),
    (
        "wattd_power_factor_ratio",
        "Power factor of the last reading (absent when the current is too small).",
        False,
        lambda s: s.power_factor,
    ),
    (
        "wattd_rssi_dbm",
        "Radio signal strength of the last frame.",
        False,
        lambda s: None if s.rssi_dbm is None else float(s.rssi_dbm),
    ),
    (
        "wattd_sensor_last_seen_timestamp_seconds",
        "When the sensor's last frame arrived (unix time).",
        False,
        lambda s: None if s.last_seen is None else s.last_seen.timestamp(),
    ),
    ("wattd_sensor_frames_total", "IO frames received.", True, lambda s: s.frames),
    ("wattd_sensor_readings_total", "Readings computed.", True, lambda s: s.readings),
    (
        "wattd_sensor_bad_checksum_total",
        "Corrupt frames that still named this sensor (best effort).",
        True,
        lambda s: s.bad_checksum,
    ),
)


def _sensor_families(sensors: tuple[SensorSnapshot, ...]) -> Iterator[Metric]:
    labels = [_sensor_labels(s) for s in sensors]
    for name, doc, is_counter, get in _SENSOR_SCALARS:
        family: GaugeMetricFamily | CounterMetricFamily = (
            CounterMetricFamily(name, doc, labels=SENSOR_LABELS)
            if is_counter
            else GaugeMetricFamily(name, doc, labels=SENSOR_LABELS)
        )
        for s, values in zip(sensors, labels, strict=True):
            value = get(s)
            if value is not None:
                family.add_metric(values, value)
        yield family
    flags = GaugeMetricFamily(
        "wattd_sensor_flag", _FLAG_HELP, labels=(*SENSOR_LABELS, "flag")
    )
    for s, values in zip(sensors, labels, strict=True):
        for flag in sorted(s.flags):
            flags.add_metric([*values, str(flag)], 1.0)
    yield flags
    info = InfoMetricFamily(
        "wattd_sensor", _INFO_HELP, labels=(*SENSOR_LABELS, "port", "configured")
    )
    for s, values in zip(sensors, labels, strict=True):
        info.add_metric([*values, s.port, "true" if s.configured else "false"], {})
    yield info


_FLAG_HELP: Final = "1 for each data-quality flag set on the last reading."
_INFO_HELP: Final = (
    "Sensor metadata: the port it was heard on, whether it is configured."
)


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(labels: dict[str, str]) -> str:
    # The library's text format: names sorted, values escaped as above.
    return ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(labels.items()))


def _help(doc: str) -> str:
    return doc.replace("\\", "\\\\").replace("\n", "\\n")


def _sensor_lines(
    sensors: tuple[SensorSnapshot, ...], *, openmetrics: bool
) -> Iterator[str]:
    """The per-sensor families as exposition lines (see :func:`render`)."""
    identity = [
        dict(zip(SENSOR_LABELS, _sensor_labels(s), strict=True)) for s in sensors
    ]
    labels = [_label_text(i) for i in identity]
    for name, doc, is_counter, get in _SENSOR_SCALARS:
        family = name.removesuffix("_total") if is_counter and openmetrics else name
        kind = "counter" if is_counter else "gauge"
        yield f"# HELP {family} {_help(doc)}\n# TYPE {family} {kind}\n"
        for s, text in zip(sensors, labels, strict=True):
            value = get(s)
            if value is not None:
                yield f"{name}{{{text}}} {_number(value)}\n"
    yield f"# HELP wattd_sensor_flag {_help(_FLAG_HELP)}\n"
    yield "# TYPE wattd_sensor_flag gauge\n"
    for s, ident in zip(sensors, identity, strict=True):
        for flag in sorted(s.flags):
            text = _label_text({**ident, "flag": str(flag)})
            yield f"wattd_sensor_flag{{{text}}} 1.0\n"
    info = "wattd_sensor" if openmetrics else "wattd_sensor_info"
    yield f"# HELP {info} {_help(_INFO_HELP)}\n"
    yield f"# TYPE {info} {'info' if openmetrics else 'gauge'}\n"
    for s, ident in zip(sensors, identity, strict=True):
        extra = {"port": s.port, "configured": "true" if s.configured else "false"}
        yield f"wattd_sensor_info{{{_label_text({**ident, **extra})}}} 1.0\n"


def _port_families(ports: tuple[PortSnapshot, ...]) -> Iterator[Metric]:
    frames = CounterMetricFamily(
        "wattd_frames_total",
        "Frame candidates by result: ok, or why they were rejected.",
        labels=("port", "result"),
    )
    io = CounterMetricFamily(
        "wattd_io_frames_total", "Valid IO sample frames.", labels=("port",)
    )
    garbage = CounterMetricFamily(
        "wattd_garbage_bytes_total",
        "Bytes outside any frame (line noise, partial frames).",
        labels=("port",),
    )
    read = CounterMetricFamily(
        "wattd_serial_read_bytes_total", "Bytes read from the port.", labels=("port",)
    )
    connected = GaugeMetricFamily(
        "wattd_port_connected", "1 while the port is open.", labels=("port", "device")
    )
    connections = CounterMetricFamily(
        "wattd_port_connections_total", "Successful opens.", labels=("port",)
    )
    outages = CounterMetricFamily(
        "wattd_port_outages_total", "Times the port went away.", labels=("port",)
    )
    rate = GaugeMetricFamily(
        "wattd_port_frames_per_second",
        "Valid frames per second over the last 30 s (rate() of"
        ' wattd_frames_total{result="ok"} is the same over your window).',
        labels=("port",),
    )
    age = GaugeMetricFamily(
        "wattd_port_last_frame_age_seconds",
        "Seconds since the port's last valid frame.",
        labels=("port",),
    )
    modem = CounterMetricFamily(
        "wattd_modem_status_total",
        "Modem status frames (radio resets...) by status.",
        labels=("port", "status"),
    )
    for p in ports:
        frames.add_metric([p.name, "ok"], p.frames_ok)
        for reason in sorted({*_REJECT_REASONS, *p.rejected}):
            frames.add_metric([p.name, reason], p.rejected.get(reason, 0))
        io.add_metric([p.name], p.io_frames)
        garbage.add_metric([p.name], p.garbage_bytes)
        read.add_metric([p.name], p.bytes_read)
        connected.add_metric([p.name, p.device], 1.0 if p.connected else 0.0)
        connections.add_metric([p.name], p.connections)
        outages.add_metric([p.name], p.outages)
        rate.add_metric([p.name], p.frames_per_s)
        if p.last_frame_age_s is not None:
            age.add_metric([p.name], p.last_frame_age_s)
        for status, count in sorted(p.modem_status.items()):
            modem.add_metric([p.name, status], count)
    yield from (frames, io, garbage, read, connected, connections, outages, rate)
    yield from (age, modem)


def _sink_families(sinks: tuple[SinkSnapshot, ...]) -> Iterator[Metric]:
    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=("sink",))

    def counter(name: str, doc: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=("sink",))

    up = gauge("wattd_sink_up", "1 once the sink started, 0 while it cannot.")
    depth = gauge("wattd_sink_queue_depth", "Readings queued in front of the sink.")
    capacity = gauge(
        "wattd_sink_queue_capacity", "Readings the queue holds before dropping."
    )
    frame_depth = gauge(
        "wattd_sink_frame_queue_depth", "Raw frames queued in front of the sink."
    )
    written = counter("wattd_sink_written_total", "Readings the sink accepted.")
    frames_written = counter(
        "wattd_sink_frames_written_total", "Raw frames the sink accepted."
    )
    dropped = counter(
        "wattd_sink_dropped_total",
        "Readings lost: queue full (oldest first) or not flushed at shutdown.",
    )
    frames_dropped = counter(
        "wattd_sink_frames_dropped_total", "Raw frames lost in front of the sink."
    )
    rejected = counter(
        "wattd_sink_rejected_total", "Readings the sink refused for good."
    )
    errors = counter(
        "wattd_sink_errors_total", "Failed write/start attempts (each retry counts)."
    )
    spool = gauge(
        "wattd_sink_spool_depth",
        "Items in the durable spool waiting for the server (MQTT, InfluxDB).",
    )
    age = gauge(
        "wattd_sink_last_write_age_seconds", "Seconds since the last accepted write."
    )
    for s in sinks:
        label = [s.name]
        up.add_metric(label, 1.0 if s.started else 0.0)
        depth.add_metric(label, s.queue_depth)
        capacity.add_metric(label, s.queue_capacity)
        frame_depth.add_metric(label, s.frame_queue_depth)
        written.add_metric(label, s.written)
        frames_written.add_metric(label, s.frames_written)
        dropped.add_metric(label, s.dropped)
        frames_dropped.add_metric(label, s.frames_dropped)
        rejected.add_metric(label, s.rejected)
        errors.add_metric(label, s.errors)
        backlog = next((s.extra[k] for k in _BACKLOG_KEYS if k in s.extra), None)
        if backlog is not None:
            spool.add_metric(label, backlog)
        if s.last_write_age_s is not None:
            age.add_metric(label, s.last_write_age_s)
    yield from (up, depth, capacity, frame_depth, written, frames_written)
    yield from (dropped, frames_dropped, rejected, errors, spool, age)
