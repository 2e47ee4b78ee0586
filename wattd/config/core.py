"""The core sections: mains, sensors, serial ports, energy, store and logging."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final, Literal, Self

from pydantic import Field, field_validator, model_validator

from wattd.config.base import AdcChannel, Address, _Model
from wattd.config.redact import shown
from wattd.core.calibration import (
    DEFAULT_COUNTS_PER_AMP,
    DEFAULT_CURRENT_ZERO,
    Calibration,
)

FLEET_NAME_CHARS: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""A sensor ``id`` or the ``site``: safe as a tag value, a topic level and a path."""


def check_fleet_name(value: str, what: str) -> str:
    """``value`` if it is a valid ``id``/``site``, else a ValueError naming it."""
    if not FLEET_NAME_CHARS.fullmatch(value):
        msg = f"{what} {shown(value)} must be 1-64 letters, digits, '_', '.' or '-'"
        raise ValueError(msg)
    return value


class MainsConfig(_Model):
    """Site-wide mains settings; sensors may override them."""

    nominal_vrms: float = Field(default=120.0, gt=0, le=480)
    frequency_hz: Literal[50, 60] = 60


class SensorConfig(_Model):
    """One meter: its radio address, calibration and metadata."""

    address: Address
    id: str | None = None
    """Fleet-unique asset tag; the meter's identity on every host it moves to."""
    name: str | None = Field(default=None, min_length=1, max_length=64)
    current_zero: float = Field(default=DEFAULT_CURRENT_ZERO, ge=0, le=1023)
    counts_per_amp: float = Field(default=DEFAULT_COUNTS_PER_AMP, gt=0, le=1023)
    nominal_vrms: float | None = Field(default=None, gt=0, le=480)
    counts_per_volt: float | None = Field(default=None, gt=0, le=100)
    voltage_zero: float | None = Field(default=None, ge=0, le=1023)
    mains_hz: Literal[50, 60] | None = None
    voltage_channel: AdcChannel = 0
    current_channel: AdcChannel = 4
    sample_interval_ms: float | None = Field(default=None, ge=0.2, le=5.0)
    max_amps: float = Field(default=20.0, gt=0, le=100)
    mode: Literal["standard", "legacy"] = "standard"
    correct_zero_drift: bool = False
    energy_offset_wh: float = Field(default=0.0, ge=0)
    rack: str | None = None
    customer: str | None = None
    location: str | None = None
    tariff: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str | None) -> str | None:
        return None if value is None else check_fleet_name(value, "id")

    @model_validator(mode="after")
    def _check_channels(self) -> Self:
        if self.voltage_channel == self.current_channel:
            msg = (
                "voltage_channel and current_channel are both"
                f" AD{self.current_channel};"
                " they must differ (Tweet-a-Watt: voltage 0, current 4)"
            )
            raise ValueError(msg)
        if self.voltage_zero is not None and self.counts_per_volt is None:
            msg = "voltage_zero needs counts_per_volt as well (or remove both)"
            raise ValueError(msg)
        return self

    @property
    def display_name(self) -> str:
        """The configured name, or ``sensor-<address>``."""
        return self.name or f"sensor-{self.address}"

    @property
    def current_zero_configured(self) -> bool:
        """Whether the entry sets ``current_zero`` (else it is estimated)."""
        return "current_zero" in self.model_fields_set

    @property
    def estimates_zero(self) -> bool:
        """Whether the current zero comes from the waveform, not the config.

        The legacy method keeps the configured (or default) zero: it exists to
        reproduce old figures.
        """
        return not self.current_zero_configured and self.mode != "legacy"

    def calibration(self, mains: MainsConfig) -> Calibration:
        """Turn this sensor's settings into the power maths' calibration."""
        return Calibration(
            current_zero=self.current_zero,
            counts_per_amp=self.counts_per_amp,
            nominal_vrms=self.nominal_vrms or mains.nominal_vrms,
            counts_per_volt=self.counts_per_volt,
            voltage_zero=self.voltage_zero,
            mains_hz=float(self.mains_hz or mains.frequency_hz),
            sample_interval_ms=self.sample_interval_ms,
            voltage_channel=self.voltage_channel,
            current_channel=self.current_channel,
            max_amps=self.max_amps,
            legacy=self.mode == "legacy",
        )

    def metadata(self) -> dict[str, str]:
        """Labels for sinks: rack, customer, location, free-form labels and ``id``.

        The ``id`` rides in the labels every reading of the sensor shares, so
        it reaches each sink without a field per reading; set, it wins over a
        free-form label of that name.
        """
        out = {
            k: v
            for k, v in (
                ("rack", self.rack),
                ("customer", self.customer),
                ("location", self.location),
            )
            if v
        }
        out.update(self.labels)
        if self.id:
            out["id"] = self.id
        return out


class PortConfig(_Model):
    """One serial port with a receiving XBee on it."""

    device: str = Field(min_length=1)
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400] = 9600
    api_mode: Literal[1, 2] = 1
    name: str | None = None

    @property
    def display_name(self) -> str:
        """The configured name, or the device path."""
        return self.name or self.device


class EnergyConfig(_Model):
    """Energy integration."""

    max_gap_s: float = Field(default=10.0, gt=0, le=3600)
    """Longer silences are reported as gaps instead of being integrated."""


class StoreConfig(_Model):
    """The embedded SQLite store (the default sink)."""

    enabled: bool = True
    path: Path | None = None
    readings_retention_days: float = Field(default=7.0, ge=0)
    rollup_1m_retention_days: float = Field(default=90.0, ge=0)
    rollup_1h_retention_days: float = Field(default=0.0, ge=0)
    frames_retention_days: float = Field(default=14.0, ge=0)
    batch_size: int = Field(default=500, ge=1, le=100_000)
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)


class LoggingConfig(_Model):
    """Log level and format (``auto`` picks text on a terminal, journal otherwise)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "text", "journal"] = "auto"
