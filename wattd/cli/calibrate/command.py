"""``wattd calibrate``: its arguments, the estimate they ask for, and its output.

Frames come from :mod:`~wattd.cli.calibrate.frames`, the fitting maths from
:mod:`wattd.core.calibrate`, and ``--write`` goes through
:mod:`~wattd.cli.calibrate.configfile`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from wattd.cli import EXIT_OK
from wattd.cli._args import (
    add_config,
    address,
    config_path,
    positive_float,
    positive_int,
)
from wattd.cli.calibrate.configfile import write_sensor_values
from wattd.cli.calibrate.frames import DEFAULT_FRAMES, DEFAULT_TIMEOUT_S, collect_frames
from wattd.errors import CalibrationError, ConfigError

if TYPE_CHECKING:
    from wattd.config import Config, SensorConfig
    from wattd.core.calibrate import GainEstimate, ZeroEstimate
    from wattd.core.iosample import IoSampleFrame

__all__ = [
    "compute",
    "config_values",
    "describe",
    "handle",
    "register",
    "result_json",
]

BAUD_RATES: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
# Digits written to the config: well below each figure's uncertainty.
_DIGITS: Final = {
    "current_zero": 2,
    "counts_per_amp": 3,
    "counts_per_volt": 4,
    "voltage_zero": 1,
}


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
    add_config(
        p,
        "config file: channels, mains and port settings come from it, and"
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
    config_path = _config_path(args)
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


# -- maths and output -------------------------------------------------------------


def compute(
    args: argparse.Namespace,
    frames: list[IoSampleFrame],
    sensor_cfg: SensorConfig,
    config: Config | None,
) -> ZeroEstimate | GainEstimate:
    """Run the estimate the arguments ask for."""
    from wattd.config import MainsConfig
    from wattd.core.calibrate import estimate_gains, estimate_zero, sensor_samples

    # The channels, mains frequency and voltage the daemon would use.
    cal = sensor_cfg.calibration(config.mains if config else MainsConfig())
    samples = sensor_samples(
        frames,
        args.sensor,
        voltage_channel=cal.voltage_channel,
        current_channel=cal.current_channel,
    )
    if not samples:
        raise CalibrationError(
            f"none of the {len(frames)} frames carries both"
            f" AD{cal.voltage_channel} and AD{cal.current_channel};"
            " check voltage_channel and current_channel",
            sensor=args.sensor,
        )
    if args.reference_watts is None:
        return estimate_zero(samples, sensor=args.sensor, mains_hz=cal.mains_hz)
    return estimate_gains(
        samples,
        reference_watts=args.reference_watts,
        reference_volts=args.reference_volts,
        nominal_vrms=cal.nominal_vrms,
        sensor=args.sensor,
        mains_hz=cal.mains_hz,
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


# -- the config -------------------------------------------------------------------


def _config_path(args: argparse.Namespace) -> Path | None:
    """The config file to read, or None when there is none to read."""
    path = config_path(args)
    if args.config is not None or path.exists():
        return path
    if args.write:
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


def _source_name(args: argparse.Namespace) -> str:
    return str(args.capture) if args.capture is not None else str(args.port)
