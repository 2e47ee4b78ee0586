"""Argument types shared by the commands (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
import math

__all__ = ["address", "positive_float", "positive_int"]


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def address(text: str) -> int:
    """A radio address: decimal or 0x-hex, 16 or 64 bits."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an address (decimal or 0x-hex)"
        ) from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"address {value} is out of range")
    return value
