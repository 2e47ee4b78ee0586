"""Fleet reports: backfill a central VictoriaMetrics, then bill from it and locally.

For each fleet size the script fills a local store with one reading per meter
per minute (``--days`` of them), sends it to a private VictoriaMetrics with
``wattd backfill``, and then times the same ``wattd report --by customer`` twice:
once read from VictoriaMetrics (``--source victoriametrics=URL``) and once from
the local store. It prints the backfill rate, both report times and their
ratio, and how each grows from the smallest fleet to the largest::

    .venv/bin/python benchmarks/bench_fleet.py        # 100 and 500 meters, 30 days
    .venv/bin/python benchmarks/bench_fleet.py --meters 100 --days 3

A month of 500 meters is 21.6 million readings; filling the store takes longer
than the measured steps, so try ``--days 3`` first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run as a script: put the repo root on sys.path so that tests.fixtures imports.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.services import MissingBinary, VictoriaMetrics, running  # noqa: E402
from wattd.core.readings import Reading  # noqa: E402
from wattd.storage.store import Store  # noqa: E402

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CUSTOMERS = ("acme", "globex", "initech", "umbrella")
INSERT_BATCH = 50_000


def write_config(workdir: Path, url: str, meters: int) -> Path:
    lines = [
        f"state_dir: {json.dumps(str(workdir))}",
        "node: bench-a",
        f"influxdb: {{enabled: true, url: {json.dumps(url)}, org: bench,"
        " bucket: fleet, token: bench-token}",
        "tariffs:",
        "  timezone: Europe/Berlin",
        "  default: market",
        "  plans:",
        "    market:",
        "      currency: EUR",
        "      price_per_kwh: 0.30",
        "      bands:",
        '        - {name: night, price_per_kwh: 0.10, hours: "22:00-06:00"}',
        '        - {name: peak, price_per_kwh: 1.00, hours: "17:00-20:00"}',
        "sensors:",
    ]
    lines += [
        f"  - {{address: {a}, name: srv-{a}, customer: {CUSTOMERS[a % len(CUSTOMERS)]},"
        f" rack: r{a % 20}}}"
        for a in range(1, meters + 1)
    ]
    path = workdir / "wattd.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def fill_store(path: Path, meters: int, minutes: int) -> int:
    """One reading per meter per minute; each meter draws its own steady load."""
    labels = {
        a: {"customer": CUSTOMERS[a % len(CUSTOMERS)], "rack": f"r{a % 20}"}
        for a in range(1, meters + 1)
    }
    count = 0
    batch: list[Reading] = []
    with Store.open(path) as store:
        for m in range(minutes):
            at = T0 + timedelta(minutes=m)
            for a in range(1, meters + 1):
                watts = 80.0 + (a % 37) * 5.0
                batch.append(
                    Reading(
                        sensor=a,
                        name=f"srv-{a}",
                        time=at,
                        monotonic_s=m * 60.0,
                        watts=watts,
                        va=watts * 1.05,
                        vrms=230.0,
                        irms=watts / 230.0,
                        power_factor=0.95,
                        wh_total=watts * m / 60.0,
                        wh_delta=0.0 if m == 0 else watts / 60.0,
                        rssi_dbm=-50,
                        labels=labels[a],
                    )
                )
            if len(batch) >= INSERT_BATCH:
                store.insert_readings(batch)
                count += len(batch)
                batch = []
        store.insert_readings(batch)
        count += len(batch)
    return count


def wattd(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "wattd", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"wattd {' '.join(args)} failed:\n{result.stderr}")
    return elapsed, result


def customer_kwh(report_json: str) -> dict[str, float]:
    data = json.loads(report_json)
    return {g["group"]: float(g["it_kwh"]) for g in data["groups"]}


def one_size(vm: VictoriaMetrics, meters: int, days: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix=f"wattd-fleet-{meters}-") as tmp:
        workdir = Path(tmp)
        config = write_config(workdir, vm.url, meters)
        t = time.perf_counter()
        readings = fill_store(workdir / "wattd.sqlite", meters, days * 24 * 60)
        fill_s = time.perf_counter() - t
        backfill_s, _ = wattd("backfill", "--to", "influxdb", "-c", str(config))
        # Recent writes become searchable once flushed from memory.
        flush = f"{vm.url}/internal/force_flush"
        urllib.request.urlopen(flush, timeout=30).close()  # noqa: S310 - loopback http
        last_day = (T0 + timedelta(days=days - 1)).date().isoformat()
        span = ["--from", T0.date().isoformat(), "--to", last_day]
        common = [*span, "--by", "customer", "--format", "json", "-c", str(config)]
        fleet_s, fleet = wattd(
            "report", "--source", f"victoriametrics={vm.url}", *common
        )
        local_s, local = wattd("report", *common)
        fleet_kwh, local_kwh = customer_kwh(fleet.stdout), customer_kwh(local.stdout)
        worst = max(
            abs(fleet_kwh.get(k, 0.0) - v) / v for k, v in local_kwh.items() if v
        )
    return {
        "meters": meters,
        "readings": readings,
        "fill_s": fill_s,
        "backfill_s": backfill_s,
        "backfill_rate": readings / backfill_s,
        "fleet_report_s": fleet_s,
        "local_report_s": local_s,
        "kwh_diff_max": worst,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--meters", default="100,500", help="fleet sizes, comma-separated"
    )
    parser.add_argument(
        "--days", type=int, default=30, help="days of 1-minute readings"
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.meters.split(",")]
    print(
        f"wattd fleet benchmark: Python {platform.python_version()},"
        f" {os.cpu_count()} CPUs; {args.days} days of 1-minute readings per meter"
    )
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="wattd-fleet-vm-") as vmdir:
            vm = VictoriaMetrics(
                Path(vmdir), extra_args=["-dedup.minScrapeInterval=1ms"]
            )
            with running(vm):
                for meters in sizes:
                    rows.append(one_size(vm, meters, args.days))
                    print(json.dumps(rows[-1]))
    except MissingBinary as exc:
        sys.exit(str(exc))
    print()
    print(
        "| meters | readings | backfill points/s | fleet report (VictoriaMetrics), s"
        " | local report, s | fleet / local | max kWh difference |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['meters']:,} | {r['readings']:,} | {r['backfill_rate']:,.0f}"
            f" | {r['fleet_report_s']:.1f} | {r['local_report_s']:.1f}"
            f" | {r['fleet_report_s'] / r['local_report_s']:.2f}x"
            f" | {r['kwh_diff_max']:.3%} |"
        )
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        scale = b["meters"] / a["meters"]
        print(
            f"\nfrom {a['meters']} to {b['meters']} meters ({scale:.0f}x): fleet report"
            f" {b['fleet_report_s'] / a['fleet_report_s']:.1f}x, local report"
            f" {b['local_report_s'] / a['local_report_s']:.1f}x, backfill rate"
            f" {b['backfill_rate'] / a['backfill_rate']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
