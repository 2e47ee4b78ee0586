"""``wattd demo``: simulated meters on a pseudo-terminal, read by the real daemon.

Nothing is faked on the daemon side: the simulator writes Tweet-a-Watt radio
frames to a pty exactly as a USB XBee would deliver them, and the same
:class:`~wattd.daemon.supervisor.Supervisor` that ``wattd run`` uses opens that pty,
decodes, computes power and energy and stores everything in SQLite. The table
shows what the daemon measured next to what the simulated loads really draw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from wattd.cli._invocation import wattd_command
from wattd.cli._signals import on_stop_signals

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

    from wattd.config import Config
    from wattd.sources.simulate import MeterModel, SimFrame, SimPty

log = logging.getLogger("wattd")

DEFAULT_METERS: Final = 4
REFRESH_S: Final = 1.0
# Names for the first simulated meters; more meters get generic names.
_NAMES: Final = ("fridge", "desk-lamp", "laptop", "fan", "kettle", "server")


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/wattd-demo`` (``~/.local/state/wattd-demo``)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "wattd-demo"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wattd demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="live demo: simulated meters on a pty, read by the real daemon",
        description=(
            "Start simulated Tweet-a-Watt meters on a pseudo-terminal and the real"
            " daemon reading it, storing into SQLite, with a live table of watts,"
            " energy and frame health. Runs until Ctrl-C (or --duration)."
            " No hardware and no servers needed."
        ),
    )
    parser.add_argument(
        "--meters",
        type=int,
        default=DEFAULT_METERS,
        metavar="N",
        help=f"number of simulated meters (default: {DEFAULT_METERS})",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after S seconds (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the SQLite store and state go (default: ~/.local/state/wattd-demo)",
    )
    parser.add_argument(
        "--temp",
        action="store_true",
        help="use a temporary state directory, removed at exit",
    )
    parser.add_argument(
        "--api-mode", type=int, choices=(1, 2), default=1, help="XBee API mode"
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.02,
        metavar="RATE",
        help="share of frames hit by line noise (garbage, bit flips); default 0.02",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        metavar="X",
        help="simulated time runs X times faster than real time (default: 1)",
    )
    parser.add_argument("--seed", type=int, default=1, help="simulation seed")
    parser.add_argument(
        "--refresh",
        type=float,
        default=REFRESH_S,
        metavar="S",
        help="seconds between table updates (default: 1)",
    )
    parser.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C or the duration ends."""
    from wattd.errors import ConfigError

    if not 1 <= args.meters <= 1000:
        raise ConfigError(f"--meters must be 1..1000, got {args.meters}")
    if args.speed <= 0:
        raise ConfigError(f"--speed must be > 0, got {args.speed:g}")
    if args.log_level is None and sys.stdout.isatty():
        from wattd.support.logsetup import setup_logging

        # The table already shows frame health; warnings about line noise
        # would only scroll it away.
        setup_logging("error")
    with _state_dir(args) as state_dir:
        asyncio.run(_demo(args, state_dir))
    if args.temp:
        print("stopped; the temporary store was removed", file=sys.stderr)
    else:
        wattd = wattd_command()
        config = shlex.quote(str(state_dir / "demo.yaml"))
        print(
            f"stopped; readings are in {state_dir / 'wattd.sqlite'}\n"
            f"look back at them with: {wattd} query --config {config}\n"
            f"or see their cost with:  {wattd} report --period day --config {config}",
            file=sys.stderr,
        )
    return 0


@contextlib.contextmanager
def _state_dir(args: argparse.Namespace) -> Iterator[Path]:
    if args.temp:
        with tempfile.TemporaryDirectory(prefix="wattd-demo-") as tmp:
            yield Path(tmp)
    else:
        path: Path = args.state_dir or default_state_dir()
        path.mkdir(parents=True, exist_ok=True)
        yield path


def demo_meters(count: int, seed: int) -> list[MeterModel]:
    """A varied, recognisable set of simulated meters."""
    from wattd.sources.simulate import (
        IDLE,
        InductiveLoad,
        Load,
        MeterModel,
        ResistiveLoad,
        SmpsLoad,
        StepsLoad,
        varied_meters,
    )

    fridge = StepsLoad(
        steps=((0.0, IDLE), (20.0, InductiveLoad(watts=120.0, power_factor=0.75))),
        period_s=60.0,
    )
    curated: list[Load] = [
        fridge,
        ResistiveLoad(watts=60.0),
        SmpsLoad(watts=65.0),
        InductiveLoad(watts=45.0, power_factor=0.7),
        ResistiveLoad(watts=1800.0),
        SmpsLoad(watts=240.0),
    ]
    meters = [
        MeterModel.with_quirks(k + 1, load, seed=seed)
        for k, load in enumerate(curated[:count])
    ]
    if count > len(curated):
        meters += varied_meters(
            count - len(curated), seed=seed, first_address=len(curated) + 1
        )
    return meters


def demo_config(meters: list[MeterModel], device: str, state_dir: Path) -> Config:
    """A config for the demo: one port, each meter's true calibration, the store."""
    from wattd.config import Config

    sensors: list[dict[str, Any]] = []
    for m in meters:
        cal = m.calibration_values()
        index = m.address - 1
        name = _NAMES[index] if index < len(_NAMES) else f"meter-{m.address}"
        sensors.append(
            {
                "address": m.address,
                "name": name,
                "current_zero": round(float(cal["current_zero"]), 2),
                "counts_per_amp": float(cal["counts_per_amp"]),
                "counts_per_volt": round(float(cal["counts_per_volt"]), 4),
                "voltage_zero": round(float(cal["voltage_zero"]), 2),
                "location": "demo",
            }
        )
    return Config.model_validate(
        {
            "ports": [{"device": device, "name": "demo-xbee"}],
            "sensors": sensors,
            "state_dir": str(state_dir),
            "save_interval_s": 5,
        }
    )


async def _demo(args: argparse.Namespace, state_dir: Path) -> None:
    from wattd.sources.simulate import open_pty

    with open_pty() as pty:
        await _demo_on(pty, args, state_dir)


async def _demo_on(pty: SimPty, args: argparse.Namespace, state_dir: Path) -> None:
    from wattd.cli.console import LiveConsole, render
    from wattd.config import dump_effective
    from wattd.daemon.supervisor import Supervisor
    from wattd.sources.simulate import Simulator, run_on_pty

    device = pty.path
    meters = demo_meters(args.meters, args.seed)
    sim = Simulator(meters, seed=args.seed, api_mode=args.api_mode, noise=args.noise)
    config = demo_config(meters, device, state_dir)
    config_file = state_dir / "demo.yaml"
    # So that `wattd query` / `wattd report` can find the demo's store later.
    config_file.write_text(dump_effective(config), encoding="utf-8")
    truth: dict[int, float] = {}
    injected = _Injected()

    def on_frame(frame: SimFrame) -> None:
        truth[frame.address] = frame.true_watts
        injected.add(frame)

    stop = asyncio.Event()
    supervisor = Supervisor(config, flush_timeout_s=5.0)
    loop = asyncio.get_running_loop()
    console = LiveConsole()
    title = f"wattd demo: {len(meters)} simulated meters on {device}; Ctrl-C stops"
    log.info("demo state (SQLite store) in %s", state_dir)
    with on_stop_signals(stop.set):
        async with asyncio.TaskGroup() as tg:
            daemon = tg.create_task(supervisor.run(), name="wattd.demo.daemon")
            await supervisor.ready.wait()
            tg.create_task(
                run_on_pty(
                    sim,
                    pty.master,
                    speed=args.speed,
                    stop_event=stop,
                    slave_fd=pty.slave,
                    on_frame=on_frame,
                ),
                name="wattd.demo.meters",
            )
            deadline = None if args.duration is None else loop.time() + args.duration
            while not stop.is_set():
                wait = args.refresh
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - loop.time()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await stop.wait()
                console.show(
                    render(
                        supervisor.snapshot(),
                        title=title,
                        true_watts=truth,
                        notes=injected.notes(args.noise),
                    )
                )
                if deadline is not None and loop.time() >= deadline:
                    stop.set()
            supervisor.request_stop()
            await daemon


class _Injected:
    """The line noise the demo adds on purpose, to show it on screen."""

    def __init__(self) -> None:
        self.corrupted = 0
        self.garbage_bytes = 0

    def add(self, frame: SimFrame) -> None:
        self.corrupted += frame.corrupted
        self.garbage_bytes += frame.garbage

    def notes(self, rate: float) -> list[str]:
        if rate <= 0:
            return ["no simulated line noise (--noise 0)"]
        return [
            f"simulated line noise (--noise {rate:g}), added on purpose:"
            f" {_count(self.corrupted, 'frame')} with a flipped bit and"
            f" {_count(self.garbage_bytes, 'garbage byte')} so far; the daemon"
            " counts and skips them"
        ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
