"""The fault soak, short: broker killed, TSDB stopped, line noise, SIGHUP, unplug.

The full-length run is ``benchmarks/soak.py``; this runs the same code for a
few seconds of faults and checks that every frame written to the serial line
is a reading in every sink (or a counted decode error).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.services import require_binary

SOAK = REPO_ROOT / "benchmarks" / "soak.py"


def load_soak() -> ModuleType:
    for binary in ("mosquitto", "victoria-metrics", "socat"):
        require_binary(binary)  # a missing one skips the test (tests/conftest.py)
    spec = importlib.util.spec_from_file_location("wattd_soak", SOAK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.services
@pytest.mark.timeout(120)
async def test_every_frame_survives_overlapping_faults(tmp_path: Path) -> None:
    soak = load_soak()
    report = await soak.run_soak(
        tmp_path, duration_s=12.0, meters=6, speed=20.0, garbage_rate=0.05, seed=3
    )
    print(report.summary())
    assert report.problems() == []
    # The faults really happened, and overlapped.
    events = "\n".join(report.timeline)
    for text in ("broker: SIGKILL", "tsdb: stopped", "SIGHUP", "serial: unplugged"):
        assert text in events
    assert report.port_outages >= 1
    assert report.held_back > 0  # meters kept transmitting while unplugged
    assert report.decode_errors > 0  # the noise produced rejected candidates
    # Enough traffic that an outage had a backlog to deliver.
    assert report.total_sent >= 300
    assert report.decoded_ok == report.total_sent
    for sink in (report.store, report.mqtt, report.influx):
        assert sink == report.sent
