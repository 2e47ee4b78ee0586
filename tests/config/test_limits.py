"""Config files that must be refused quickly and clearly, however they were made.

Alias bombs, huge files, deep nesting, bytes that are not UTF-8: each gets a
one-line error with file and line, from ``check-config``, from ``run`` (status
78) and from a reload (logged every time, no traceback), and none of them
costs more than a moment.
"""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.daemon import running_supervisor
from tests.fixtures.pty import Pty
from wattd.cli import main
from wattd.cli._args import EXIT_CONFIG
from wattd.config import load_config, parse_config, yamlread
from wattd.config.model import MAX_PORTS, MAX_SENSORS
from wattd.config.yamlread import MAX_DEPTH, MAX_FILE_BYTES
from wattd.core.calibration import DEFAULT_COUNTS_PER_AMP
from wattd.daemon.supervisor import Supervisor
from wattd.errors import ConfigError

# Loads one config file in a fresh interpreter and reports time and peak
# memory of just the load, so a regression costs the child, not the suite.
_MEASURE = """
import json, sys, time, tracemalloc
from wattd.config import load_config
from wattd.errors import ConfigError
from wattd.core.calibration import DEFAULT_COUNTS_PER_AMP
tracemalloc.start()
start = time.perf_counter()
try:
    load_config(sys.argv[1])
    outcome = "accepted"
except ConfigError as exc:
    outcome = str(exc)
elapsed = time.perf_counter() - start
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"elapsed_s": elapsed, "peak_bytes": peak, "outcome": outcome}))
"""


def _limit_memory() -> None:
    # A child that blows up hits this instead of the machine's memory.
    gib = 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (2 * gib, 2 * gib))


def measure_load(path: Path) -> dict[str, object]:
    """Time, peak memory and outcome of ``load_config(path)`` in a child."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=_limit_memory,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


def alias_bomb(levels: int, width: int = 9) -> str:
    """The classic "billion laughs": each level repeats the one before."""
    items = ", ".join(['"lol"'] * width)
    lines = [f"l0: &l0 [{items}]"]
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * width)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int, width: int = 9) -> str:
    """The same through merge keys: each mapping merges the previous ``width`` times."""
    keys = ", ".join(f"k{i}: 1" for i in range(width))
    lines = [f"m0: &m0 {{{keys}}}"]
    for i in range(1, levels):
        refs = ", ".join([f"*m{i - 1}"] * width)
        lines.append(f"m{i}: &m{i} {{<<: [{refs}]}}")
    return "\n".join(lines) + "\n"


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "wattd.yaml")
    return info.value


def test_a_nine_level_alias_bomb_is_refused_in_a_moment(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(9))
    assert path.stat().st_size < 600
    result = measure_load(path)
    assert str(result["outcome"]).startswith(f"{path}:")
    assert "more than 1,000,000 keys and values" in str(result["outcome"])
    assert float(str(result["elapsed_s"])) < 2.0
    assert int(str(result["peak_bytes"])) < 100 * 1024 * 1024


def test_a_merge_key_bomb_is_refused_in_a_moment(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text(merge_bomb(9))
    result = measure_load(path)
    assert "more than 1,000,000 keys and values" in str(result["outcome"])
    assert float(str(result["elapsed_s"])) < 2.0
    assert int(str(result["peak_bytes"])) < 100 * 1024 * 1024


def test_ordinary_anchors_and_merges_still_work() -> None:
    config = parse_config(
        "sensors:\n"
        "  - &first {address: 1, counts_per_amp: 12.5, labels: &pdu {pdu: a1}}\n"
        "  - {<<: *first, address: 2, name: two}\n"
        "  - {address: 3, labels: *pdu}\n"
    )
    assert [(s.address, s.counts_per_amp, s.labels) for s in config.sensors] == [
        (1, 12.5, {"pdu": "a1"}),
        (2, 12.5, {"pdu": "a1"}),
        (3, DEFAULT_COUNTS_PER_AMP, {"pdu": "a1"}),
    ]
    assert config.sensors[1].name == "two"


def test_an_alias_inside_its_own_value_is_an_error() -> None:
    err = error_of("ports:\n  - &p {device: /dev/x, name: [*p]}\n")
    assert err.line == 2
    assert "aliases must not loop" in str(err)


def test_deep_nesting_is_refused_without_a_traceback() -> None:
    nested = "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)
    err = error_of(f"sensors: {nested}\n")
    assert f"nested more than {MAX_DEPTH} levels" in str(err)
    # Past libyaml's own limit the pure-Python parser would recurse too deep.
    err = error_of("[" * 20_000 + "]" * 20_000)
    assert "not valid YAML" in str(err)
    block = "".join(" " * i + f"k{i}:\n" for i in range(1_500))
    assert "not valid YAML" in str(error_of(block))


class _NoPurePythonParse:
    def __init__(self, *_args: object) -> None:
        raise AssertionError("the pure-Python YAML parser ran")


def thousand_sensors() -> str:
    lines = ["ports: [{device: /dev/ttyUSB0}]", "sensors:"]
    for i in range(1, 1001):
        lines += [
            f"  - address: {i}",
            f"    name: meter-{i}",
            "    counts_per_amp: 15.1",
            f"    rack: r{i % 40}",
            "    labels: {pdu: a1, outlet: '3'}",
        ]
    return "\n".join(lines) + "\n"


def test_a_thousand_sensors_load_on_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = thousand_sensors()
    monkeypatch.setattr(yamlread, "_CheckedLoader", _NoPurePythonParse)
    start = time.perf_counter()
    config = parse_config(text)
    assert time.perf_counter() - start < 2.0
    assert len(config.sensors) == 1000


def test_a_syntax_error_in_a_large_file_is_found_by_libyaml_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = thousand_sensors() + "# padding\n" * 3000 + '  - address: "1001\n'
    assert len(text) > 128 * 1024
    monkeypatch.setattr(yamlread, "_CheckedLoader", _NoPurePythonParse)
    err = error_of(text)
    lines = text.count("\n")
    assert err.line == lines + 1
    assert f"while scanning a quoted scalar that starts on line {lines}" in str(err)


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as fh:
        fh.write("sensors:\n")
        line = "  - {address: 1}\n"
        fh.write(line * (MAX_FILE_BYTES // len(line) + 1))
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert time.perf_counter() - start < 1.0
    assert str(info.value) == (
        f"{path}: the file is larger than 4 MiB, far more than a config needs;"
        " is this the right file?"
    )


def test_too_many_sensors_or_ports_is_one_clear_error() -> None:
    sensors = "".join(f"  - {{address: {i}}}\n" for i in range(1, MAX_SENSORS + 2))
    err = error_of("sensors:\n" + sensors)
    assert (err.line, err.key) == (1, "sensors")
    assert "10,001 sensors is more than the 10,000" in str(err)
    ports = "".join(f"  - {{device: /dev/tty{i}}}\n" for i in range(MAX_PORTS + 1))
    err = error_of("ports:\n" + ports)
    assert (err.line, err.key) == (1, "ports")
    assert "65 ports is more than the 64" in str(err)
    # At the limit it is fine.
    parse_config("sensors:\n" + sensors.rsplit("  - ", 1)[0])


def test_bytes_that_are_not_utf8_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"ports:\n  - device: /dev/ttyUSB0\n    name: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: not UTF-8 text: byte 0xe9")
    assert "column 14" in str(info.value)


def test_control_characters_name_their_line() -> None:
    err = error_of("ports:\n  - device: /dev/x\x00\n")
    assert err.line == 2
    assert "character #x0000 at column 19" in str(err)


def test_check_config_and_run_report_undecodable_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wattd.yaml"
    path.write_bytes(b"ports: [{device: /dev/ttyUSB0}]\n# \xff\xfe\n")
    assert main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err
    assert err.strip() == (
        f"{path}:2: not UTF-8 text: byte 0xff at column 3 (byte offset 34) cannot"
        " be read; save the file as UTF-8"
    )
    assert main(["run", "--config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{path}:2: not UTF-8 text" in err
    assert "Traceback" not in err


def test_run_refuses_a_config_with_nothing_to_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wattd.yaml"
    path.write_text("")
    assert main(["check-config", "--quiet", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path} sets nothing, so `wattd run` has nothing to read" in err
    assert main(["run", "--config", str(path)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{path}: no ports configured, so there is nothing to read" in err
    path.write_text("sensors: [{address: 1}]\n")
    assert main(["check-config", "--quiet", str(path)]) == 0
    assert "configures no ports" in capsys.readouterr().err


async def test_every_rejected_reload_is_logged_on_one_line(
    tmp_path: Path, pty: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "wattd.yaml"
    good = f"ports:\n  - device: {pty.path}\nstate_dir: {tmp_path}\n"
    path.write_text(good)
    sup = Supervisor(load_config(path), config_path=path, sink_factory=lambda _: [])
    bad = [
        b"ports:\n  - device: /dev/x\n    name: caf\xe9\n",
        b"ports:\n  - device: /dev/x\n    name: caf\xe9\n",
        alias_bomb(9).encode(),
        b"ports: [{device: /dev/x, baud: 1}]\nsave_interval_s: soon\n",
    ]
    async with running_supervisor(sup):
        with caplog.at_level(logging.ERROR, logger="wattd"):
            for content in bad:
                path.write_bytes(content)
                start = time.perf_counter()
                assert not await sup.reload()
                assert time.perf_counter() - start < 2.0
        assert sup.snapshot().ports[0].device == pty.path
    rejected = [r for r in caplog.records if "reload rejected" in r.getMessage()]
    assert len(rejected) == len(bad)
    for record in rejected:
        assert "\n" not in record.getMessage()
        assert record.exc_info is None
    messages = [r.getMessage() for r in rejected]
    assert f"{path}:3: not UTF-8 text" in messages[0]
    assert messages[0] == messages[1]
    assert "more than 1,000,000 keys and values" in messages[2]
    assert messages[3].endswith(
        f"previous config: 2 problems: {path}:1: ports[0].baud: Input should be"
        " 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200 or 230400 (got 1);"
        f" {path}:2: save_interval_s: Input should be a valid number, unable to"
        " parse string as a number (got 'soon')"
    )
