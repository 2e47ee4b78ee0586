"""The reading pipeline's settings, made from a config.

The core never sees the config: it takes these frozen values, so it stays
free of pydantic and of the file format.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from wattd.config.core import SensorConfig
from wattd.core.pipeline import PipelineSettings, SensorSettings

if TYPE_CHECKING:
    from wattd.config.model import Config

__all__ = ["pipeline_settings"]


def pipeline_settings(config: Config) -> PipelineSettings:
    """Each configured sensor's settings, and a default for any other address."""
    meta = config.sensor_meta()

    def settings(entry: SensorConfig, *, known: bool) -> SensorSettings:
        found = meta.get(entry.address) if known else None
        name, labels = (
            found
            if found is not None
            else (entry.display_name, MappingProxyType(entry.metadata()))
        )
        return SensorSettings(
            calibration=entry.calibration(config.mains),
            name=name,
            labels=labels,
            energy_offset_wh=entry.energy_offset_wh,
            correct_zero_drift=entry.correct_zero_drift,
            estimates_zero=entry.estimates_zero,
            known=known,
        )

    sensors: dict[int, SensorSettings] = {}
    for entry in config.sensors:
        if entry.address not in sensors:
            sensors[entry.address] = settings(entry, known=True)
    return PipelineSettings(
        sensors=MappingProxyType(sensors),
        unknown=lambda address: settings(SensorConfig(address=address), known=False),
        max_gap_s=config.energy.max_gap_s,
    )
