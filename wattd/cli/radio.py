"""``wattd radio``: show and set up XBee radios without X-CTU.

``show`` prints the settings that matter for Tweet-a-Watt; ``setup-receiver`` and
``setup-meter`` write the receiver's and a meter's settings. Both print every
setting as old -> new (unchanged ones marked) and, with ``--dry-run``, stop there.
Values are hexadecimal, as the radio and X-CTU show them; the meter address is the
sensor number, in decimal as in the config.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Final

from wattd.cli import EXIT_OK
from wattd.ops.radio import (
    DEFAULT_BAUD,
    DEFAULT_CHANNEL,
    DEFAULT_PAN_ID,
    DEFAULT_TIMEOUT_S,
    apply,
    describe_radio,
    format_changes,
    format_values,
    meter_settings,
    open_radio,
    plan,
    read_settings,
    receiver_settings,
)

if TYPE_CHECKING:
    from wattd.ops.radio import Change, Radio


def _hex(text: str) -> int:
    try:
        return int(text.lower().removeprefix("0x"), 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hex number") from None


def _address(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number (decimal, or hex as 0x...)"
        ) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``radio`` command group."""
    p = subparsers.add_parser(
        "radio",
        help="show or set up the XBee radios (instead of X-CTU)",
        description=(
            "Read or write the settings of the XBee on a serial port: the USB"
            " receiver, or a meter's radio seated in the USB adapter. Radios in"
            " API mode and in transparent mode (the factory default) both work."
        ),
    )
    sub = p.add_subparsers(dest="radio_command", metavar="ACTION", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("port", metavar="PORT", help="serial device, e.g. /dev/ttyUSB0")
        q.add_argument(
            "--baud",
            type=int,
            default=DEFAULT_BAUD,
            help=f"serial speed the radio uses (BD; default {DEFAULT_BAUD})",
        )
        q.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT_S,
            metavar="S",
            help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT_S:g})",
        )

    def network(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--channel",
            type=_hex,
            default=DEFAULT_CHANNEL,
            metavar="HEX",
            help=f"CH, the same on every radio (default {DEFAULT_CHANNEL:X})",
        )
        q.add_argument(
            "--pan-id",
            type=_hex,
            default=DEFAULT_PAN_ID,
            metavar="HEX",
            help=(
                f"ID, the same on every radio (default {DEFAULT_PAN_ID:X}, Digi's"
                " factory value; the 2009 kit profile used 3137)"
            ),
        )
        q.add_argument(
            "--dry-run",
            action="store_true",
            help="only show what would change; write nothing",
        )

    show = sub.add_parser("show", help="print the radio's Tweet-a-Watt settings")
    common(show)
    show.set_defaults(func=run_show)

    receiver = sub.add_parser(
        "setup-receiver",
        help="set up the USB receiver (MY=0, no sleep, API mode, IU=1)",
        epilog=PAN_HINT,
    )
    common(receiver)
    network(receiver)
    receiver.add_argument(
        "--api-mode",
        type=int,
        choices=(1, 2),
        default=1,
        help="AP to set: 1 plain or 2 escaped (default 1; match serial.api_mode)",
    )
    receiver.set_defaults(func=run_setup_receiver)

    meter = sub.add_parser(
        "setup-meter",
        help="set up a meter's radio (MY=N, SM=4 ST=3 SP=C8, D0=D4=2, IT=13 IR=1)",
    )
    common(meter)
    network(meter)
    meter.add_argument(
        "--address",
        type=_address,
        required=True,
        metavar="N",
        help="sensor number (MY), 1 and up, one per meter",
    )
    meter.set_defaults(func=run_setup_meter)


PAN_HINT: Final = (
    "More than one coordinator in radio range? Give each its own PAN ID"
    " (--pan-id here and for its meters' setup-meter): two coordinators on one"
    " PAN both hear every meter in range, and both hosts report it."
)


def _open(args: argparse.Namespace) -> Radio:
    return open_radio(args.port, args.baud, timeout_s=args.timeout)


def run_show(args: argparse.Namespace) -> int:
    """Print the radio's settings."""
    with _open(args) as radio:
        print(describe_radio(radio.info))
        values = read_settings(radio)
    for line in format_values(values):
        print(line)
    return EXIT_OK


def run_setup_receiver(args: argparse.Namespace) -> int:
    """Write the receiver settings."""
    target = receiver_settings(
        channel=args.channel, pan_id=args.pan_id, api_mode=args.api_mode
    )
    status = _setup(args, "receiver", target)
    print(f"This coordinator uses PAN ID {args.pan_id:X}. {PAN_HINT}")
    return status


def run_setup_meter(args: argparse.Namespace) -> int:
    """Write a meter's settings."""
    target = meter_settings(
        address=args.address, channel=args.channel, pan_id=args.pan_id
    )
    return _setup(args, f"meter {args.address}", target)


def _setup(args: argparse.Namespace, what: str, target: dict[str, int]) -> int:
    with _open(args) as radio:
        print(describe_radio(radio.info))
        changes = plan(radio, target)
        print(f"Tweet-a-Watt {what} settings (old -> new):")
        for line in format_changes(changes):
            print(line)
        changed = sum(c.changed for c in changes)
        if args.dry_run:
            print(_summary(changes, written=False))
            return EXIT_OK
        apply(radio, changes)
    print(_summary(changes, written=changed > 0))
    if any(c.setting.command == "AP" and c.changed for c in changes):
        print(
            f"The radio now speaks API mode {target['AP']}: set serial.api_mode to"
            " match in the wattd config."
        )
    return EXIT_OK


def _summary(changes: list[Change], *, written: bool) -> str:
    changed = sum(c.changed for c in changes)
    total = len(changes)
    if not changed:
        return f"All {total} settings already match; nothing to write."
    if not written:
        return f"Dry run: {changed} of {total} settings would change; nothing written."
    return (
        f"Changed {changed} of {total} settings, saved them (WR) and applied them (AC)."
    )
