from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.daemon import meter_sensors, running_supervisor
from tests.fixtures.sinks import RecordingSink
from tests.fixtures.snapshots import NOW, daemon_snapshot, sensor_snapshot
from tests.fixtures.waiting import wait_until
from wattd.config import Config
from wattd.core.readings import Flag
from wattd.core.snapshot import (
    DaemonSnapshot,
)
from wattd.daemon.supervisor import Supervisor
from wattd.sinks.web.metrics import (
    CHUNK_CHARS,
    SENSOR_LABELS,
    build_registry,
    render,
    render_chunks,
)
from wattd.sources.simulate import (
    MeterModel,
    ResistiveLoad,
    Simulator,
    SmpsLoad,
    run_on_pty,
)

if TYPE_CHECKING:
    from pathlib import Path

    from prometheus_client.metrics_core import Metric

    from tests.fixtures.pty import Pty


def parse(body: bytes) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(fam: Metric, suffix: str = "", **labels: str) -> float:
    name = fam.name + suffix
    found = [
        s.value
        for s in fam.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, fam.samples)
    return found[0]


def test_sensor_families_have_units_types_and_identity_labels() -> None:
    body, content_type = render(daemon_snapshot())
    assert content_type.startswith("text/plain; version=0.0.4")
    fams = parse(body)
    expected_types = {
        "wattd_power_watts": "gauge",
        "wattd_energy_joules": "counter",
        "wattd_voltage_volts": "gauge",
        "wattd_current_amperes": "gauge",
        "wattd_power_factor_ratio": "gauge",
        "wattd_rssi_dbm": "gauge",
        "wattd_sensor_last_seen_timestamp_seconds": "gauge",
        "wattd_sensor_frames": "counter",
        "wattd_sensor_bad_checksum": "counter",
        # Info families are plain gauges named *_info in the 0.0.4 text format.
        "wattd_sensor_info": "gauge",
    }
    for name, kind in expected_types.items():
        assert fams[name].type == kind, name
    power = fams["wattd_power_watts"]
    assert len(power.samples) == 1  # sensor 7 has no reading yet
    sample = power.samples[0]
    assert sample.labels == {
        "sensor": "1",
        "name": "web-1",
        "rack": "A",
        "customer": "acme",
        "location": "dc-1",
    }
    assert set(sample.labels) == set(SENSOR_LABELS)
    assert sample.value == 123.5
    assert value(fams["wattd_energy_joules"], "_total", sensor="1") == 2.5 * 3600
    assert value(fams["wattd_voltage_volts"], sensor="1") == 119.8
    assert value(fams["wattd_current_amperes"], sensor="1") == 1.07
    assert value(fams["wattd_power_factor_ratio"], sensor="1") == 0.96
    assert value(fams["wattd_rssi_dbm"], sensor="1") == -61
    last_seen = value(fams["wattd_sensor_last_seen_timestamp_seconds"], sensor="1")
    assert last_seen == (NOW - timedelta(seconds=3)).timestamp()
    assert value(fams["wattd_sensor_bad_checksum"], "_total", sensor="1") == 2
    # The unconfigured sensor still has its counters, with empty metadata labels.
    assert value(fams["wattd_sensor_frames"], "_total", sensor="7", rack="") == 1
    assert (
        value(fams["wattd_sensor_info"], sensor="7", configured="false", port="rx") == 1
    )
    assert value(fams["wattd_sensor_flag"], sensor="1", flag="drift_corrected") == 1
    assert not [
        s for s in fams["wattd_sensor_flag"].samples if s.labels["sensor"] == "7"
    ]


def test_port_and_decoder_counters_by_result() -> None:
    fams = parse(render(daemon_snapshot())[0])
    frames = fams["wattd_frames"]
    assert frames.type == "counter"
    assert value(frames, "_total", port="rx", result="ok") == 97
    assert value(frames, "_total", port="rx", result="bad_checksum") == 3
    assert value(frames, "_total", port="rx", result="garbage") == 4
    # Every reject reason exists from the start, so rate() works on the first error.
    results = {s.labels["result"] for s in frames.samples}
    assert {"truncated", "bad_length", "bad_payload", "encrypted"} <= results
    assert value(fams["wattd_garbage_bytes"], "_total", port="rx") == 41
    assert value(fams["wattd_port_connected"], port="rx", device="/dev/ttyUSB0") == 1
    assert value(fams["wattd_port_outages"], "_total", port="rx") == 1
    assert value(fams["wattd_port_frames_per_second"], port="rx") == 1.5
    assert value(fams["wattd_modem_status"], "_total", status="hardware reset") == 1


def test_sink_families_queue_drops_errors_and_spool() -> None:
    fams = parse(render(daemon_snapshot())[0])
    assert value(fams["wattd_sink_queue_depth"], sink="mqtt") == 5
    assert value(fams["wattd_sink_dropped"], "_total", sink="mqtt") == 7
    assert value(fams["wattd_sink_errors"], "_total", sink="influxdb") == 9
    assert value(fams["wattd_sink_up"], sink="mqtt") == 1
    assert value(fams["wattd_sink_up"], sink="influxdb") == 0
    # Each sink names its backlog its own way; both end up as the spool depth.
    assert value(fams["wattd_sink_spool_depth"], sink="mqtt") == 12
    assert value(fams["wattd_sink_spool_depth"], sink="influxdb") == 321
    assert fams["wattd_sink_written"].type == "counter"


def test_daemon_families_and_process_metrics() -> None:
    fams = parse(render(daemon_snapshot())[0])
    assert value(fams["wattd_build_info"], version="9.9.9") == 1
    assert value(fams["wattd_readings"], "_total") == 39
    assert value(fams["wattd_config_last_reload_success"]) == 0
    assert (
        value(fams["wattd_start_time_seconds"])
        == (NOW - timedelta(hours=1)).timestamp()
    )
    # The default process collector reads /proc for this process.
    assert value(fams["process_resident_memory_bytes"]) > 1_000_000
    assert fams["process_cpu_seconds"].type == "counter"


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    body, content_type = render(
        daemon_snapshot(), "application/openmetrics-text; version=1.0.0"
    )
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_registering_takes_no_snapshot_and_each_collect_takes_one() -> None:
    calls: list[int] = []

    def source() -> DaemonSnapshot:
        calls.append(1)
        return daemon_snapshot()

    registry = build_registry(source, process=False)
    assert calls == []
    list(registry.collect())
    list(registry.collect())
    assert len(calls) == 2


# -- from a running daemon -----------------------------------------------------------


async def test_metrics_of_a_running_daemon_match_its_readings(
    tmp_path: Path, pty: Pty
) -> None:
    meters = [
        MeterModel.with_quirks(1, ResistiveLoad(watts=200.0), seed=3),
        MeterModel.with_quirks(2, SmpsLoad(watts=80.0), seed=3),
    ]
    sink = RecordingSink("recorder")
    config = Config.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "ports": [{"device": pty.path, "name": "sim"}],
            "sensors": meter_sensors(meters, rack="R9"),
            "store": {"enabled": False},
        }
    )
    sup = Supervisor(config, sink_factory=lambda _c: [sink], flush_timeout_s=5)
    sim = Simulator(meters, seed=5)
    async with running_supervisor(sup):
        stats = await run_on_pty(sim, pty.master, speed=20.0, until_s=20.0)
        await wait_until(
            lambda: len(sink.received) >= stats.frames,
            what=f"{stats.frames} readings",
        )
        fams = parse(render(sup.snapshot())[0])
    last = {r.sensor: r for r in sink.received}
    for m in meters:
        reading = last[m.address]
        labels = {"sensor": str(m.address), "rack": "R9"}
        assert value(fams["wattd_power_watts"], **labels) == pytest.approx(
            reading.watts
        )
        assert value(fams["wattd_energy_joules"], "_total", **labels) == pytest.approx(
            reading.wh_total * 3600
        )
        assert value(fams["wattd_current_amperes"], **labels) == pytest.approx(
            reading.irms
        )
        assert value(fams["wattd_power_watts"], **labels) == pytest.approx(
            m.true_watts(0), rel=0.05
        )
    total = sum(1 for r in sink.received)
    assert value(fams["wattd_frames"], "_total", port="sim", result="ok") == total
    assert value(fams["wattd_sink_written"], "_total", sink="recorder") == total


def library_exposition(snap: DaemonSnapshot, accept: str) -> bytes:
    """The same families formatted entirely by prometheus-client."""
    from prometheus_client.exposition import choose_encoder

    encoder, _ = choose_encoder(accept)
    return encoder(build_registry(lambda: snap, process=False))


def without_process(body: bytes) -> set[str]:
    return {
        line
        for line in body.decode().splitlines()
        if "process_" not in line and line != "# EOF"
    }


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
def test_fast_sensor_lines_match_the_library_byte_for_byte(accept: str) -> None:
    # Awkward label values (quotes, backslash, newline, non-ASCII), flags, a
    # sensor without readings: the hand-written lines must equal the library's.
    snap = daemon_snapshot()
    odd = sensor_snapshot(
        sensor=0xFFFE,
        name='odd "name" \\ with\nnewline \u2013 ü',
        labels={"rack": 'r"1', "customer": "a\\b", "location": "ünï"},
        flags=frozenset({Flag.CLIPPED, Flag.NEGATIVE_POWER}),
        watts=-0.0,
        wh_total=1e-12,
        vrms=float("nan"),
        power_factor=1.0,
    )
    snap = dataclasses.replace(snap, sensors=(*snap.sensors, odd))
    fast, content_type = render(snap, accept)
    slow = library_exposition(snap, accept)
    assert without_process(fast) == without_process(slow)
    if accept:
        assert content_type.startswith("application/openmetrics-text")
        assert fast.endswith(b"# EOF\n")
        assert fast.count(b"# EOF") == 1


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
def test_chunks_are_small_and_make_up_the_whole_body(accept: str) -> None:
    snap = daemon_snapshot()
    many = tuple(sensor_snapshot(sensor=n, name=f"meter-{n}") for n in range(1, 401))
    snap = dataclasses.replace(snap, sensors=many)
    chunks, content_type = render_chunks(snap, accept)
    pieces = list(chunks)
    body, whole_type = render(snap, accept)
    assert content_type == whole_type
    assert len(pieces) > 3
    assert without_process(b"".join(pieces)) == without_process(body)
    # The pieces stay near the chunk size, however many sensors there are.
    assert max(len(p) for p in pieces) < CHUNK_CHARS + 1000
