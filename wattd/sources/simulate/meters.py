"""Simulated meters: one Kill-A-Watt with its XBee, its load, supply and quirks.

Every meter sees the mains voltage ``v(t) = Vrms*sqrt(2)*sin(2*pi*f*t)`` (one
shared grid phase) and draws the current of its load. Per-unit quirks (current
zero, voltage gain and offset, interval, noise, RSSI) are drawn from the seed,
as the real units in the public captures differ. Tests can check the true
power, Vrms, Irms and energy against their own integration of
:meth:`MeterModel.voltage_volts` and :meth:`MeterModel.current_amps`.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Final

from wattd.errors import ConfigError
from wattd.sources.simulate.loads import (
    IDLE,
    SQRT2,
    TAU,
    InductiveLoad,
    Load,
    ResistiveLoad,
    SmpsLoad,
    StepsLoad,
    active_load,
    load_energy_ws,
)

ADC_MAX: Final = 1023
SAMPLES_PER_FRAME: Final = 19
VOLTAGE_CHANNEL: Final = 0
CURRENT_CHANNEL: Final = 4
MEAN_FRAME_PERIOD_S: Final = 2.08
# Last sample to the end of the frame on the host's UART: radio turnaround plus
# 88 bytes at 9600 baud (~92 ms).
TX_DELAY_S: Final = 0.1


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MeterModel:
    """One simulated Kill-A-Watt with its XBee: load, supply and analogue quirks.

    ``voltage_amplitude_counts`` is the sine amplitude the voltage channel shows
    at ``nominal_vrms``; the supply actually runs at ``vrms``.
    """

    address: int
    load: Load
    mains_hz: float = 60.0
    vrms: float = 120.0
    nominal_vrms: float = 120.0
    current_zero_counts: float = 492.0
    counts_per_amp: float = 15.5
    voltage_zero_counts: float = 515.0
    voltage_amplitude_counts: float = 340.0
    sample_interval_ms: float = 1.3
    first_gap_extra: float = 0.15
    """Sample 0 is early: the gap to sample 1 is ``1 + first_gap_extra`` intervals."""
    noise_counts: float = 0.7
    rssi_dbm: int = -60
    frame_period_s: float = MEAN_FRAME_PERIOD_S

    def __post_init__(self) -> None:
        checks = (
            (
                0 <= self.address <= 0xFFFD,
                "address must be 0..0xFFFD (0xFFFE/F are reserved)",
            ),
            (self.mains_hz in (50.0, 60.0), "mains_hz must be 50 or 60"),
            (20.0 <= self.vrms <= 480.0, "vrms must be 20..480"),
            (20.0 <= self.nominal_vrms <= 480.0, "nominal_vrms must be 20..480"),
            (
                0.2 <= self.sample_interval_ms <= 5.0,
                "sample_interval_ms must be 0.2..5",
            ),
            (0.0 <= self.first_gap_extra < 1.0, "first_gap_extra must be 0..1"),
            (self.noise_counts >= 0.0, "noise_counts must be >= 0"),
            (-100 <= self.rssi_dbm <= 0, "rssi_dbm must be -100..0"),
            (0.5 <= self.frame_period_s <= 60.0, "frame_period_s must be 0.5..60"),
            (self.counts_per_amp > 0, "counts_per_amp must be > 0"),
        )
        for ok, what in checks:
            if not ok:
                raise ConfigError(f"meter {self.address}: {what}")

    @property
    def counts_per_volt(self) -> float:
        """Voltage-channel gain in ADC counts per volt."""
        return self.voltage_amplitude_counts / (self.nominal_vrms * SQRT2)

    def sample_offsets_s(self) -> tuple[float, ...]:
        """Time of each sample relative to sample 0, in seconds."""
        dt = self.sample_interval_ms / 1000.0
        first = (1.0 + self.first_gap_extra) * dt
        return (0.0, *(first + k * dt for k in range(SAMPLES_PER_FRAME - 1)))

    def voltage_volts(self, t_s: float) -> float:
        """The continuous mains voltage at ``t_s``."""
        return SQRT2 * self.vrms * math.sin(TAU * ((t_s * self.mains_hz) % 1.0))

    def current_amps(self, t_s: float) -> float:
        """The continuous load current at ``t_s``."""
        load = active_load(self.load, t_s)
        return load.shape(self.vrms)((t_s * self.mains_hz) % 1.0)

    def true_watts(self, t_s: float) -> float:
        """True real power at ``t_s``."""
        return active_load(self.load, t_s).watts

    def true_irms(self, t_s: float) -> float:
        """True RMS current at ``t_s``."""
        return active_load(self.load, t_s).irms(self.vrms)

    def true_energy_wh(self, t0_s: float, t1_s: float) -> float:
        """Exact energy drawn between two simulated times, in Wh."""
        return load_energy_ws(self.load, t0_s, t1_s) / 3600.0

    def calibration_values(self) -> dict[str, float | int]:
        """This unit's true calibration, keyed like the ``sensors`` config entries."""
        return {
            "address": self.address,
            "current_zero": self.current_zero_counts,
            "counts_per_amp": self.counts_per_amp,
            "counts_per_volt": self.counts_per_volt,
            "voltage_zero": self.voltage_zero_counts,
            "nominal_vrms": self.nominal_vrms,
            "mains_hz": int(self.mains_hz),
        }

    @classmethod
    def with_quirks(
        cls,
        address: int,
        load: Load,
        *,
        seed: int | str = 0,
        mains_hz: float = 60.0,
        nominal_vrms: float = 120.0,
        vrms: float | None = None,
        rssi_dbm: int | None = None,
    ) -> MeterModel:
        """A meter whose per-unit quirks are drawn (deterministically) from the seed.

        Ranges follow the public captures: current zero 470-507 counts, voltage
        amplitude 260-390 counts, voltage offset 505-525, interval 1.2-1.4 ms.
        """
        rng = random.Random(f"wattd-sim-unit:{seed}:{address}")
        return cls(
            address=address,
            load=load,
            mains_hz=mains_hz,
            vrms=vrms if vrms is not None else nominal_vrms * rng.uniform(0.98, 1.02),
            nominal_vrms=nominal_vrms,
            current_zero_counts=rng.uniform(470.0, 507.0),
            counts_per_amp=15.5,
            voltage_zero_counts=rng.uniform(505.0, 525.0),
            voltage_amplitude_counts=rng.uniform(260.0, 390.0),
            sample_interval_ms=rng.uniform(1.2, 1.4),
            first_gap_extra=rng.uniform(0.12, 0.18),
            noise_counts=rng.uniform(0.5, 1.0),
            rssi_dbm=rssi_dbm if rssi_dbm is not None else rng.randint(-82, -40),
            frame_period_s=rng.uniform(2.05, 2.09),
        )


def varied_meters(
    count: int,
    *,
    seed: int | str = 0,
    first_address: int = 1,
    mains_hz: float = 60.0,
    nominal_vrms: float = 120.0,
) -> list[MeterModel]:
    """``count`` meters with a realistic mix of loads, all different."""
    rng = random.Random(f"wattd-sim-fleet:{seed}")
    meters = []
    for k in range(count):
        roll = rng.random()
        load: Load
        if roll < 0.3:
            load = ResistiveLoad(watts=round(rng.uniform(25.0, 1500.0)))
        elif roll < 0.5:
            load = InductiveLoad(
                watts=round(rng.uniform(60.0, 600.0)),
                power_factor=round(rng.uniform(0.55, 0.9), 2),
            )
        elif roll < 0.75:
            load = SmpsLoad(watts=round(rng.uniform(10.0, 250.0)))
        elif roll < 0.85:
            load = IDLE
        else:
            on_s = round(rng.uniform(120.0, 900.0))
            off_s = round(rng.uniform(300.0, 1800.0))
            motor = InductiveLoad(
                watts=round(rng.uniform(90.0, 180.0)),
                power_factor=round(rng.uniform(0.7, 0.85), 2),
            )
            load = StepsLoad(steps=((0.0, IDLE), (off_s, motor)), period_s=off_s + on_s)
        meters.append(
            MeterModel.with_quirks(
                first_address + k,
                load,
                seed=seed,
                mains_hz=mains_hz,
                nominal_vrms=nominal_vrms,
            )
        )
    return meters
