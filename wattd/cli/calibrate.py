"""``wattd calibrate``: measure a meter's zero (and gains) and write them to the config.

Frames come from a live port (``--port``; the daemon must not hold it) or from a
capture (``--capture``: a ``wattd record`` recording or raw bytes). Without
``--reference-watts`` the meter must have nothing plugged in and the current
zero is measured; with it, a known resistive load is plugged in and the gains
are fitted (see :mod:`wattd.core.calibrate`). ``--write`` edits the sensor's entry
in the config file in place, keeping comments and layout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import math
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from wattd.cli import EXIT_OK
from wattd.cli._args import address, default_config_path, positive_float, positive_int
from wattd.cli._invocation import wattd_command
from wattd.cli._signals import on_stop_signals
from wattd.errors import CalibrationError, ConfigError, SerialPortGone

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from wattd.config import Config, SensorConfig
    from wattd.core.calibrate import GainEstimate, ZeroEstimate
    from wattd.core.iosample import IoSampleFrame

log = logging.getLogger("wattd.core.calibrate")

BAUD_RATES: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
DEFAULT_FRAMES: Final = 30
"""About a minute of one meter's frames: a 95 % interval of ~0.05 counts."""
DEFAULT_TIMEOUT_S: Final = 180.0
READ_SIZE: Final = 4096
_POLL_S: Final = 0.2
# Digits written to the config: well below each figure's uncertainty.
_DIGITS: Final = {
    "current_zero": 2,
    "counts_per_amp": 3,
    "counts_per_volt": 4,
    "voltage_zero": 1,
}

StreamPair = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattd calibrate``."""
    p = subparsers.add_parser(
        "calibrate",
        help="measure a meter's current zero (or gains) and write it to the config",
        description=(
            "Without --reference-watts: unplug every load from the Kill-A-Watt and"
            " measure the current channel's zero from no-load frames. With"
            " --reference-watts W: plug in a resistive load of known power (heater,"
            " kettle, incandescent lamp) and fit counts_per_amp, and with"
            " --reference-volts V (read from a voltmeter) also counts_per_volt and"
            " voltage_zero. --write puts the result into the config file,"
            " keeping its comments."
        ),
    )
    p.add_argument(
        "--sensor",
        required=True,
        type=address,
        metavar="N",
        help="the meter's radio address (MY), decimal or 0x-hex",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--port", metavar="DEV", help="read live frames from this serial device"
    )
    source.add_argument(
        "--capture",
        type=Path,
        metavar="FILE",
        help="read frames from a recording (wattd record) or raw capture",
    )
    p.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="config file: channels, mains and port settings come from it, and"
        " --write edits it (default: $WATTD_CONFIG or /etc/wattd/wattd.yaml"
        " if it exists)",
    )
    p.add_argument(
        "--frames",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"frames to use (live default: {DEFAULT_FRAMES}; capture default: all)",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="give up on a live port after S seconds (default: %(default)g)",
    )
    p.add_argument("--baud", type=int, choices=BAUD_RATES, default=None)
    p.add_argument("--api-mode", type=int, choices=(1, 2), default=None)
    p.add_argument(
        "--reference-watts",
        type=positive_float,
        metavar="W",
        help="a known resistive load is plugged in: fit counts_per_amp",
    )
    p.add_argument(
        "--reference-volts",
        type=positive_float,
        metavar="V",
        help="the supply voltage from a voltmeter: also fit counts_per_volt and"
        " voltage_zero (needs --reference-watts)",
    )
    p.add_argument(
        "--write",
        action="store_true",
        help="write the result into the sensor's entry in the config file",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    """Run ``wattd calibrate``."""
    if args.reference_volts is not None and args.reference_watts is None:
        raise ConfigError("--reference-volts needs --reference-watts as well")
    config_path = _config_path(args.config, required=args.write)
    config: Config | None = None
    if config_path is not None:
        from wattd.config import load_config

        config = load_config(config_path)
    sensor_cfg = _sensor_config(config, args.sensor)
    frames = collect_frames(args, config)
    result = compute(args, frames, sensor_cfg, config)
    values = config_values(result)
    if args.json:
        print(json.dumps(result_json(result, values, sensor_cfg), indent=2))
    else:
        print(describe(result, sensor_cfg, source=_source_name(args)))
    if args.write and config_path is not None:
        write_sensor_values(config_path, args.sensor, values)
        print(
            f"wrote {', '.join(f'{k}: {v}' for k, v in values.items())} for sensor"
            f" {args.sensor} to {config_path}; apply it with"
            " `systemctl reload wattd` (or SIGHUP)",
            file=sys.stderr,
        )
    return EXIT_OK


# -- frames ----------------------------------------------------------------------


def collect_frames(
    args: argparse.Namespace, config: Config | None
) -> list[IoSampleFrame]:
    """The sensor's IO frames from the capture or the live port.

    Raises:
        CalibrationError: the source holds no frame of the sensor.
    """
    if args.capture is not None:
        frames = frames_from_capture(args.capture, args.sensor, api_mode=args.api_mode)
        if args.frames is not None:
            frames = frames[: args.frames]
        if not frames:
            raise CalibrationError(
                f"{args.capture} holds no IO frame from this sensor; check --sensor"
                f" (`{wattd_command()} replay {shlex.quote(str(args.capture))}"
                " --format table` lists the addresses it contains)",
                sensor=args.sensor,
            )
        return frames
    port_cfg = None
    if config is not None:
        port_cfg = next((p for p in config.ports if p.device == args.port), None)
    baud = args.baud or (port_cfg.baud if port_cfg else 9600)
    api_mode = args.api_mode or (port_cfg.api_mode if port_cfg else 1)
    return asyncio.run(
        _read_live(
            args.port,
            args.sensor,
            baud=baud,
            api_mode=api_mode,
            count=args.frames or DEFAULT_FRAMES,
            timeout_s=args.timeout,
        )
    )


def frames_from_capture(
    path: Path, sensor: int, *, api_mode: int | None = None
) -> list[IoSampleFrame]:
    """Every IO frame of ``sensor`` in a recording or raw capture.

    Raises:
        CaptureError: the file is unreadable or holds no XBee frames.
    """
    from wattd.core.frames import FrameDecoder
    from wattd.core.iosample import IoSampleFrame
    from wattd.sources.recording import load_capture

    capture = load_capture(path)
    decoder = FrameDecoder(api_mode or capture.api_mode)
    events = decoder.feed(capture.data) + decoder.close()
    return [e for e in events if isinstance(e, IoSampleFrame) and e.sensor_id == sensor]


async def _read_live(
    device: str,
    sensor: int,
    *,
    baud: int,
    api_mode: int,
    count: int,
    timeout_s: float,
    opener: Callable[[str, int], Awaitable[StreamPair]] | None = None,
) -> list[IoSampleFrame]:
    stop = asyncio.Event()
    with on_stop_signals(stop.set):
        return await read_port_frames(
            device,
            sensor,
            baud=baud,
            api_mode=api_mode,
            count=count,
            timeout_s=timeout_s,
            stop_event=stop,
            opener=opener,
        )


async def read_port_frames(
    device: str,
    sensor: int,
    *,
    baud: int = 9600,
    api_mode: int = 1,
    count: int = DEFAULT_FRAMES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    stop_event: asyncio.Event | None = None,
    opener: Callable[[str, int], Awaitable[StreamPair]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[IoSampleFrame]:
    """Read ``count`` IO frames of ``sensor`` from a serial port.

    Stops early (with what it has) at ``timeout_s`` or on ``stop_event``.

    Raises:
        SerialPortGone: the port cannot be opened or vanished.
        CalibrationError: no frame of the sensor arrived at all.
    """
    from wattd.core.frames import FrameDecoder
    from wattd.core.iosample import IoSampleFrame
    from wattd.sources.serial import describe_open_error, open_port

    try:
        reader, writer = await (opener or open_port)(device, baud)
    except OSError as exc:
        text = describe_open_error(device, exc).removeprefix(f"{device} ")
        raise SerialPortGone(
            f"{text}; stop the daemon while calibrating, or calibrate from a"
            f" recording (`{wattd_command()} record {shlex.quote(device)} -o"
            " noload.jsonl`, then --capture noload.jsonl)",
            source=device,
        ) from None
    decoder = FrameDecoder(api_mode)
    frames: list[IoSampleFrame] = []
    others: set[int] = set()
    report = progress or _print_progress
    deadline = time.monotonic() + timeout_s
    try:
        while len(frames) < count and not (stop_event and stop_event.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                data = await asyncio.wait_for(
                    reader.read(READ_SIZE), min(_POLL_S, left)
                )
            except TimeoutError:
                continue
            except OSError as exc:
                raise SerialPortGone(f"device lost ({exc})", source=device) from None
            if not data:
                raise SerialPortGone("device closed (end of file)", source=device)
            for event in decoder.feed(data):
                if not isinstance(event, IoSampleFrame):
                    continue
                if event.sensor_id == sensor:
                    frames.append(event)
                    report(len(frames), count)
                else:
                    others.add(event.sensor_id)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)
    if not frames:
        heard = (
            f"; heard from sensor(s) {', '.join(map(str, sorted(others)))}"
            if others
            else "; no IO frames at all: check the port, baud and that the meter"
            " is powered"
        )
        raise CalibrationError(
            f"no frame from this sensor in {timeout_s:g} s{heard}", sensor=sensor
        )
    return frames


def _print_progress(have: int, want: int) -> None:
    if sys.stderr.isatty():
        end = "" if have < want else "\n"
        print(f"\rframes: {have}/{want}", end=end, file=sys.stderr, flush=True)


# -- maths and output -------------------------------------------------------------


def compute(
    args: argparse.Namespace,
    frames: list[IoSampleFrame],
    sensor_cfg: SensorConfig,
    config: Config | None,
) -> ZeroEstimate | GainEstimate:
    """Run the estimate the arguments ask for."""
    from wattd.core.calibrate import estimate_gains, estimate_zero, sensor_samples

    samples = sensor_samples(
        frames,
        args.sensor,
        voltage_channel=sensor_cfg.voltage_channel,
        current_channel=sensor_cfg.current_channel,
    )
    if not samples:
        raise CalibrationError(
            f"none of the {len(frames)} frames carries both"
            f" AD{sensor_cfg.voltage_channel} and AD{sensor_cfg.current_channel};"
            " check voltage_channel and current_channel",
            sensor=args.sensor,
        )
    mains_hz = float(
        sensor_cfg.mains_hz or (config.mains.frequency_hz if config else 60)
    )
    if args.reference_watts is None:
        return estimate_zero(samples, sensor=args.sensor, mains_hz=mains_hz)
    nominal = sensor_cfg.nominal_vrms or (
        config.mains.nominal_vrms if config else 120.0
    )
    return estimate_gains(
        samples,
        reference_watts=args.reference_watts,
        reference_volts=args.reference_volts,
        nominal_vrms=nominal,
        sensor=args.sensor,
        mains_hz=mains_hz,
    )


def config_values(result: ZeroEstimate | GainEstimate) -> dict[str, float]:
    """The sensor config keys to write, rounded to sensible digits."""
    from wattd.core.calibrate import ZeroEstimate

    raw: dict[str, float | None]
    if isinstance(result, ZeroEstimate):
        raw = {"current_zero": result.current_zero}
    else:
        raw = {
            "counts_per_amp": result.counts_per_amp,
            "counts_per_volt": result.counts_per_volt,
            "voltage_zero": result.voltage_zero,
        }
    return {k: round(v, _DIGITS[k]) for k, v in raw.items() if v is not None}


def describe(
    result: ZeroEstimate | GainEstimate, sensor_cfg: SensorConfig, *, source: str
) -> str:
    """Human-readable result, with the config's current values for comparison."""
    from wattd.core.calibrate import ZeroEstimate

    lines: list[str] = []
    if isinstance(result, ZeroEstimate):
        amps = result.std_counts / sensor_cfg.counts_per_amp
        lines += [
            f"sensor {result.sensor}: {result.frames} no-load frames from {source}"
            f" ({result.samples} samples)",
            f"  current zero      {result.current_zero:8.2f} counts"
            f"  ± {_fmt(result.ci95_counts, 2)} (95 % confidence)",
            f"  noise             {result.std_counts:8.2f} counts RMS  ({amps:.3f} A)",
        ]
        if result.voltage_zero is not None:
            lines.append(f"  voltage DC level  {result.voltage_zero:8.1f} counts")
        change = result.current_zero - sensor_cfg.current_zero
        lines.append(
            f"  config has        {sensor_cfg.current_zero:8.2f}"
            f"  (change {change:+.2f} counts)"
        )
        if result.ci95_counts > 0.25:
            lines.append("  note: the interval is wide; collect more frames (--frames)")
    else:
        ref = (
            f"at {result.reference_volts:g} V (voltmeter)"
            if result.reference_volts is not None
            else f"assuming {result.volts_used:g} V (nominal; give --reference-volts"
            " to measure the voltage gain)"
        )
        lines += [
            f"sensor {result.sensor}: {result.frames} frames from {source} with a"
            f" {result.reference_watts:g} W resistive load {ref}",
            f"  counts per amp    {result.counts_per_amp:9.3f}"
            f"  ± {_fmt(result.counts_per_amp_ci95, 3)}"
            f"  (config has {sensor_cfg.counts_per_amp:g})",
        ]
        if result.counts_per_volt is not None:
            lines.append(
                f"  counts per volt   {result.counts_per_volt:9.4f}"
                f"  ± {_fmt(result.counts_per_volt_ci95, 4)}"
                f"  (config has {sensor_cfg.counts_per_volt or 'none'})"
            )
        if result.voltage_zero is not None:
            lines.append(
                f"  voltage zero      {result.voltage_zero:9.1f} counts"
                f"  (config has {sensor_cfg.voltage_zero or 'none'})"
            )
        lines.append(f"  power factor      {result.power_factor:9.3f}")
    if result.sample_interval_ms is not None:
        width = 8 if isinstance(result, ZeroEstimate) else 9
        lines.append(f"  sample interval   {result.sample_interval_ms:{width}.3f} ms")
    return "\n".join(lines)


def result_json(
    result: ZeroEstimate | GainEstimate,
    values: dict[str, float],
    sensor_cfg: SensorConfig,
) -> dict[str, Any]:
    """The result as JSON-ready data (``config`` holds the values --write uses)."""
    import dataclasses

    from wattd.core.calibrate import ZeroEstimate

    data = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in dataclasses.asdict(result).items()
    }
    data["mode"] = "zero" if isinstance(result, ZeroEstimate) else "reference"
    data["config"] = values
    data["config_before"] = {k: getattr(sensor_cfg, k) for k in values}
    return data


def _fmt(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "?"
    return f"{value:.{digits}f}"


# -- the config file ----------------------------------------------------------------


def _config_path(given: Path | None, *, required: bool) -> Path | None:
    if given is not None:
        return given
    path = default_config_path()
    if path.exists():
        return path
    if required:
        raise ConfigError(
            f"--write needs a config file and {path} does not exist; pass --config"
        )
    return None


def _sensor_config(config: Config | None, address: int) -> SensorConfig:
    from wattd.config import SensorConfig

    if config is not None:
        found = config.sensor_map().get(address)
        if found is not None:
            return found
    return SensorConfig(address=address)


def write_sensor_values(path: Path, sensor: int, values: dict[str, float]) -> None:
    """Set ``values`` in the sensor's entry of a YAML config, keeping comments.

    The entry is added if the sensor is not listed yet. The edited text is
    validated as a whole before the file is replaced (atomically), so a failure
    leaves the file untouched.

    Raises:
        ConfigError: the file cannot be read, parsed, validated or replaced.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.util import load_yaml_guess_indent

    from wattd.config import SensorConfig, parse_config

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path) from None
    try:
        _, seq_indent, seq_offset = load_yaml_guess_indent(text)
        yaml = YAML()  # round-trip: comments, order and quoting survive
        yaml.preserve_quotes = True
        yaml.width = 4096
        yaml.indent(
            mapping=_mapping_indent(text),
            sequence=seq_indent or 2,
            offset=seq_offset or 0,
        )
        doc = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=path) from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, dict):
        raise ConfigError("the top level must be a mapping of sections", path=path)
    sensors = doc.get("sensors")
    if sensors is None:
        sensors = doc["sensors"] = CommentedSeq()
    if not isinstance(sensors, list):
        raise ConfigError("sensors must be a list", path=path, key="sensors")
    entry = None
    for item in sensors:
        if not isinstance(item, dict) or "address" not in item:
            continue
        try:
            address = SensorConfig.model_validate({"address": item["address"]}).address
        except ValueError:
            continue
        if address == sensor:
            entry = item
            break
    if entry is None:
        entry = CommentedMap(address=sensor)
        for key, value in values.items():
            entry[key] = value
        previous = sensors[-1] if sensors else None
        sensors.append(entry)
        if previous is not None:
            _move_trailing_comment(previous, entry)
    else:
        for key, value in values.items():
            entry[key] = value
    out = io.StringIO()
    yaml.dump(doc, out)
    new_text = out.getvalue()
    parse_config(new_text, path)  # never write a file the daemon would refuse
    _replace_file(path, new_text)


_NESTED_KEY: Final = re.compile(
    r"^[A-Za-z_][\w-]*:[ \t]*(#.*)?\n( +)[A-Za-z_\"']", re.M
)


def _mapping_indent(text: str) -> int:
    """How far the file indents a mapping under a top-level key (default 2)."""
    found = _NESTED_KEY.search(text)
    return len(found.group(2)) if found else 2


def _last_line_holder(node: object) -> tuple[Any, Any] | None:
    """The (container, key) whose comment slot holds what follows ``node``."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    while True:
        if isinstance(node, CommentedMap) and node:
            key: Any = list(node.keys())[-1]
        elif isinstance(node, CommentedSeq) and node:
            key = len(node) - 1
        else:
            return None
        value = node[key]
        if isinstance(value, CommentedMap | CommentedSeq) and value:
            node = value
            continue
        return node, key


def _move_trailing_comment(previous: object, new: object) -> None:
    """Keep comments that followed the old last entry after the appended one.

    ruamel attaches the blank lines and comments between the last list entry
    and the next section to that entry's last key; appending after it would
    otherwise leave them above the new entry.
    """
    import copy

    old_at = _last_line_holder(previous)
    new_at = _last_line_holder(new)
    if old_at is None or new_at is None:
        return
    slots = old_at[0].ca.items.get(old_at[1])
    if not slots or len(slots) < 3 or slots[2] is None:
        return
    token = slots[2]
    inline, newline, rest = token.value.partition("\n")
    if not newline or not rest:
        return
    moved = copy.copy(token)
    moved.value = "\n" + rest
    token.value = inline + "\n"
    new_at[0].ca.items[new_at[1]] = [None, None, moved, None]


def _replace_file(path: Path, text: str) -> None:
    try:
        mode = path.stat().st_mode & 0o7777
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ConfigError(
            f"cannot write next to the file: {exc.strerror}", path=path
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(
            f"cannot replace the file: {exc.strerror}", path=path
        ) from None


def _source_name(args: argparse.Namespace) -> str:
    return str(args.capture) if args.capture is not None else str(args.port)
