"""Prometheus metrics, built from the daemon snapshot at scrape time.

Nothing is updated per reading: the reading path stays as cheap as without an
exporter, and a scrape costs one :class:`~wattd.snapshot.DaemonSnapshot` plus
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

from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from wattd.frames import RejectReason

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.metrics_core import Metric

    from wattd.snapshot import (
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
]

SENSOR_LABELS: Final = ("sensor", "name", "rack", "customer", "location")
JOULES_PER_WH: Final = 3600.0
# A sink's own stats() names its backlog in one of these ways (first wins).
_BACKLOG_KEYS: Final = ("spool_depth", "backlog")
_REJECT_REASONS: Final = tuple(str(r) for r in RejectReason)


class SnapshotCollector(Collector):
    """Turns one daemon snapshot into metric families on every collect()."""

    def __init__(self, snapshot: Callable[[], DaemonSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        """Nothing up front: registering must not take a snapshot."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every wattd family, from a single snapshot."""
        snap = self._snapshot()
        yield from _daemon_families(snap)
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
    thread: the snapshot is frozen.
    """
    encoder, content_type = choose_encoder(accept)
    return encoder(build_registry(lambda: snapshot)), content_type


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


def _sensor_families(sensors: tuple[SensorSnapshot, ...]) -> Iterator[Metric]:
    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=SENSOR_LABELS)

    def counter(name: str, doc: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=SENSOR_LABELS)

    power = gauge("wattd_power_watts", "Real power of the last reading.")
    energy = counter(
        "wattd_energy_joules_total",
        "Energy drawn through the meter (persisted; 1 Wh = 3600 J).",
    )
    volts = gauge("wattd_voltage_volts", "RMS voltage of the last reading.")
    amps = gauge("wattd_current_amperes", "RMS current of the last reading.")
    pf = gauge(
        "wattd_power_factor_ratio",
        "Power factor of the last reading (absent when the current is too small).",
    )
    rssi = gauge("wattd_rssi_dbm", "Radio signal strength of the last frame.")
    seen = gauge(
        "wattd_sensor_last_seen_timestamp_seconds",
        "When the sensor's last frame arrived (unix time).",
    )
    frames = counter("wattd_sensor_frames_total", "IO frames received.")
    readings = counter("wattd_sensor_readings_total", "Readings computed.")
    bad = counter(
        "wattd_sensor_bad_checksum_total",
        "Corrupt frames that still named this sensor (best effort).",
    )
    flags = GaugeMetricFamily(
        "wattd_sensor_flag",
        "1 for each data-quality flag set on the last reading.",
        labels=(*SENSOR_LABELS, "flag"),
    )
    info = InfoMetricFamily(
        "wattd_sensor",
        "Sensor metadata: the port it was heard on, whether it is configured.",
        labels=(*SENSOR_LABELS, "port", "configured"),
    )
    for s in sensors:
        labels = _sensor_labels(s)
        info.add_metric([*labels, s.port, "true" if s.configured else "false"], {})
        frames.add_metric(labels, s.frames)
        readings.add_metric(labels, s.readings)
        bad.add_metric(labels, s.bad_checksum)
        if s.last_seen is not None:
            seen.add_metric(labels, s.last_seen.timestamp())
        if s.watts is not None:
            power.add_metric(labels, s.watts)
        if s.wh_total is not None:
            energy.add_metric(labels, s.wh_total * JOULES_PER_WH)
        if s.vrms is not None:
            volts.add_metric(labels, s.vrms)
        if s.irms is not None:
            amps.add_metric(labels, s.irms)
        if s.power_factor is not None:
            pf.add_metric(labels, s.power_factor)
        if s.rssi_dbm is not None:
            rssi.add_metric(labels, float(s.rssi_dbm))
        for flag in sorted(s.flags):
            flags.add_metric([*labels, str(flag)], 1.0)
    yield from (power, energy, volts, amps, pf, rssi, seen)
    yield from (frames, readings, bad, flags, info)


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
