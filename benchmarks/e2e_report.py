"""The results of ``benchmarks/bench_e2e.py``: one row per run, and the tables."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Result", "ratios", "table"]


@dataclass
class Result:
    code: str
    """Which wattd ran: ``working tree`` or ``baseline <rev>``."""
    sensors: int
    target_rate: float
    frames: int
    fed_rate: float
    lost_store: int
    lost_mqtt: int
    lost_influx: int
    lost_decoder: int
    cpu_us_per_frame: float
    latency_p50_ms: float
    latency_p99_ms: float
    rss_mb: float
    peak_rss_mb: float
    dashboard_events: int


def table(results: list[Result]) -> str:
    head = (
        "| code | sensors | frames/s fed | frames | lost (store/MQTT/Influx/decoder) "
        "| CPU µs/frame | MQTT latency p50 / p99 | RSS (peak) |"
    )
    lines = [head, "|:---|---:|---:|---:|:---:|---:|---:|---:|"]
    lines += [
        f"| {r.code} | {r.sensors:,} | {r.fed_rate:,.0f} | {r.frames:,} "
        f"| {r.lost_store}/{r.lost_mqtt}/{r.lost_influx}/{r.lost_decoder} "
        f"| {r.cpu_us_per_frame:.0f} "
        f"| {r.latency_p50_ms:.0f} / {r.latency_p99_ms:.0f} ms "
        f"| {r.rss_mb:.0f} MB ({r.peak_rss_mb:.0f}) |"
        for r in results
    ]
    return "\n".join(lines)


def ratios(results: list[Result]) -> str:
    """Working tree over baseline, per fleet size, for the figures that matter."""
    lines = [
        "| sensors | CPU µs/frame | MQTT latency p50 | RSS |",
        "|---:|---:|---:|---:|",
    ]
    base = {r.sensors: r for r in results if r.code != "working tree"}
    for new in results:
        old = base.get(new.sensors)
        if new.code != "working tree" or old is None:
            continue
        lines.append(
            f"| {new.sensors:,} "
            f"| {new.cpu_us_per_frame / old.cpu_us_per_frame:.2f}x "
            f"| {new.latency_p50_ms / old.latency_p50_ms:.2f}x "
            f"| {new.rss_mb / old.rss_mb:.2f}x |"
        )
    return "\n".join(lines)
