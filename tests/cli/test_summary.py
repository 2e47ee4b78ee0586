from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_report import CONFIG, write_readings
from tests.sinks.summaries.publishers.recorder import RecordingServer
from wattd.cli import main

SUMMARY = """\
summaries:
  daily:
    period: day
    by: customer
    template: "{{name}}: {{kwh:.1f}} kWh, {{money}} {{period_label}}"
{destinations}"""


def setup(tmp_path: Path, destinations: str = "") -> tuple[Path, Path]:
    config = tmp_path / "wattd.yaml"
    config.write_text(
        CONFIG.format(state=tmp_path / "state")
        + SUMMARY.format(destinations=destinations)
    )
    readings = tmp_path / "readings.jsonl"
    write_readings(readings)
    return config, readings


def test_dry_run_prints_the_summaries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, readings = setup(tmp_path)
    args = [
        "summary",
        "-c",
        str(config),
        "--readings",
        str(readings),
        "--at",
        "2025-03-06T09:00",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "[daily/acme/2025-03-05] acme: 2.4 kWh, €0.60 yesterday",
        "[daily/globex/2025-03-05] globex: 1.2 kWh, €0.30 yesterday",
    ]


def test_send_posts_once_per_period(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with RecordingServer() as server:
        dest = (
            "    min_interval_s: 0\n    destinations:\n"
            f"      webhook: {{enabled: true, url: '{server.url}'}}\n"
        )
        config, readings = setup(tmp_path, dest)
        args = ["summary", "-c", str(config), "--readings", str(readings)]
        args += ["--at", "2025-03-06T09:00", "--send"]
        assert main(args) == 0
        assert len(server.requests) == 2
        assert main(args) == 0  # the same period again: skipped
        assert len(server.requests) == 2
        out = capsys.readouterr().out
        assert "[daily/acme/2025-03-05] webhook: sent" in out
        assert "[daily/acme/2025-03-05] webhook: already-sent" in out


def test_unknown_summary_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = setup(tmp_path)
    assert main(["summary", "-c", str(config), "--name", "nope"]) == 2
    assert "no summary nope" in capsys.readouterr().err
