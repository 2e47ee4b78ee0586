"""A batch's readings as columns, turned into readings or JSON lines on demand.

Building a :class:`~wattd.core.readings.Reading` per row costs more than the
maths that made it, so a job that only prints asks for JSON lines, which are
formatted straight from the columns, byte for byte as
``json.dumps(reading.to_json_dict(), separators=(",", ":"))`` writes them.

How (:func:`json_lines`): ``Reading.to_json_dict`` rounds each figure
(``round(x, n)``) and ``json.dumps`` prints the float with ``repr``.
``"%.nf"`` gives the same correctly rounded digits as ``round``, and dropping
the trailing zeros but one decimal gives the digits ``repr`` prints for the
rounded float, except where ``repr`` uses an exponent (below 1e-4 or from
1e16). So each column is formatted in one ``%`` operation and cleaned up
with a few ``str.replace`` passes, and each group of rows that share a
template (a sensor with the same optional keys and flags) in one more. Rows
with figures ``repr`` would write with an exponent, and sensors whose name
or labels hold a quote, go through ``json.dumps`` row by row.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import TYPE_CHECKING, Final

import numpy as np

from wattd.core.readings import Flag, Reading, round_finite

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from wattd.core.pipeline import SensorSettings

__all__ = ["FLAG_BITS", "ReadingColumns", "flags_json", "flags_of", "json_lines"]

FLAG_BITS: Final = {flag: 1 << n for n, flag in enumerate(Flag)}
_FLAG_SETS: dict[int, frozenset[Flag]] = {}
_FLAG_JSON: dict[int, str] = {}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)


def flags_of(bits: int) -> frozenset[Flag]:
    """The flags a bit mask stands for (one shared frozenset per mask)."""
    found = _FLAG_SETS.get(bits)
    if found is None:
        found = frozenset(f for f, bit in FLAG_BITS.items() if bits & bit)
        _FLAG_SETS[bits] = found
    return found


def flags_json(bits: int) -> str:
    """The flags of a bit mask as the JSON list ``to_json_dict`` writes."""
    found = _FLAG_JSON.get(bits)
    if found is None:
        found = json.dumps(sorted(flags_of(bits)), separators=(",", ":"))
        _FLAG_JSON[bits] = found
    return found


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReadingColumns:
    """The readings of one batch, one row each, in order.

    NaN stands for None in the optional float columns.
    """

    sensor: NDArray[np.int64]
    settings: Sequence[SensorSettings]
    time_us: NDArray[np.int64]
    monotonic_s: NDArray[np.float64]
    watts: NDArray[np.float64]
    va: NDArray[np.float64]
    vrms: NDArray[np.float64]
    irms: NDArray[np.float64]
    power_factor: NDArray[np.float64]
    wh_total: NDArray[np.float64]
    wh_delta: NDArray[np.float64]
    rssi_dbm: Sequence[int | None]
    flag_bits: NDArray[np.int64]
    sample_interval_ms: NDArray[np.float64]
    cycles: NDArray[np.float64]
    gap_s: NDArray[np.float64]
    zero_drift_counts: NDArray[np.float64]
    current_zero_counts: NDArray[np.float64]
    ports: Sequence[str]
    frame_hash: Sequence[int] | None = None

    def __len__(self) -> int:
        return len(self.sensor)

    def readings(self) -> list[Reading]:
        """The rows as readings, equal to what the per-frame pipeline returns."""
        hashes: Sequence[int | None] = self.frame_hash or [None] * len(self)
        rows = zip(
            self.sensor.tolist(),
            self.settings,
            self.time_us.tolist(),
            self.monotonic_s.tolist(),
            self.watts.tolist(),
            self.va.tolist(),
            self.vrms.tolist(),
            self.irms.tolist(),
            self.power_factor.tolist(),
            self.wh_total.tolist(),
            self.wh_delta.tolist(),
            self.rssi_dbm,
            self.flag_bits.tolist(),
            self.sample_interval_ms.tolist(),
            self.cycles.tolist(),
            self.gap_s.tolist(),
            self.zero_drift_counts.tolist(),
            self.current_zero_counts.tolist(),
            self.ports,
            hashes,
            strict=True,
        )
        return [
            Reading(
                sensor=sensor,
                name=settings.name,
                time=_EPOCH + time_us * _US,
                monotonic_s=mono,
                watts=watts,
                va=va,
                vrms=vrms,
                irms=irms,
                power_factor=_opt(pf),
                wh_total=wh_total,
                wh_delta=wh_delta,
                rssi_dbm=rssi,
                flags=flags_of(bits),
                sample_interval_ms=_opt(interval),
                cycles=cycles,
                gap_s=_opt(gap),
                current_zero_drift_counts=_opt(drift),
                current_zero_counts=zero,
                port=port,
                labels=settings.labels,
                frame_hash=frame_hash,
            )
            for (
                sensor,
                settings,
                time_us,
                mono,
                watts,
                va,
                vrms,
                irms,
                pf,
                wh_total,
                wh_delta,
                rssi,
                bits,
                interval,
                cycles,
                gap,
                drift,
                zero,
                port,
                frame_hash,
            ) in rows
        ]

    def jsonl(self, only: frozenset[int] | None = None) -> list[str]:
        """The rows as JSON lines (with newlines), optionally of some sensors only.

        Byte for byte ``json.dumps(reading.to_json_dict(), separators=(",",
        ":"))`` plus a newline; :func:`json_lines` says how.
        """
        return json_lines(self, only)


# -- JSON lines ------------------------------------------------------------

_END: Final = "\x01"
_DIGITS: Final = {
    "watts": 3,
    "va": 3,
    "vrms": 3,
    "irms": 5,
    "power_factor": 4,
    "wh_total": 6,
    "sample_interval_ms": 4,
    "gap_s": 3,
    "zero_drift_counts": 3,
}
_OPTIONAL: Final = (
    ("sample_interval_ms", "sample_interval_ms"),
    ("gap_s", "gap_s"),
    ("zero_drift_counts", "zero_drift_counts"),
)


def _figures(values: NDArray[np.float64], digits: int) -> NDArray[np.object_]:
    """One column as the text of its rounded figures (``null`` if not finite)."""
    text = (f"%.{digits}f{_END}" * len(values)) % tuple(values.tolist())
    for _ in range(digits):
        if "0" + _END not in text:
            break
        text = text.replace("0" + _END, _END)
    text = text.replace("." + _END, ".0" + _END)
    for bad in ("-inf", "inf", "nan"):
        text = text.replace(bad + _END, "null" + _END)
    out = np.empty(len(values), np.object_)
    out[:] = text.split(_END)[:-1]
    return out


def _exponent_rows(cols: ReadingColumns) -> NDArray[np.bool_]:
    """Rows where ``repr`` of a rounded figure would use an exponent."""
    odd = np.zeros(len(cols), np.bool_)
    for name, digits in _DIGITS.items():
        size = np.abs(getattr(cols, name))
        odd |= size >= 1e15
        if digits > 4:
            odd |= (size >= 0.5 * 10.0**-digits) & (size < 1e-4)
    return odd


def _template(settings: SensorSettings, sensor: int, shape: int, bits: int) -> str:
    """The ``%s`` template of one group of rows, or '' for the slow way."""
    labels = dict(settings.labels)
    if '"' in settings.name or any('"' in k or '"' in v for k, v in labels.items()):
        return ""
    text = (
        '{"time":"%sZ","sensor":'
        + str(sensor)
        + ',"name":'
        + json.dumps(settings.name).replace("%", "%%")
        + ',"watts":%s,"va":%s,"vrms":%s,"irms":%s,"pf":%s,"wh_total":%s'
        + ',"rssi_dbm":%s,"flags":'
        + flags_json(bits)
    )
    for k, (_, key) in enumerate(_OPTIONAL):
        if shape >> k & 1:
            text += f',"{key}":%s'
    if labels:
        text += ',"labels":' + json.dumps(labels, separators=(",", ":")).replace(
            "%", "%%"
        )
    return text + "}\n"


def json_lines(cols: ReadingColumns, only: frozenset[int] | None) -> list[str]:
    """The rows (of the ``only`` sensors, if given) as JSON lines."""
    rows = np.arange(len(cols))
    if only is not None:
        rows = rows[np.isin(cols.sensor, np.array(sorted(only), np.int64))]
    if not len(rows):
        return []
    stamps = np.datetime_as_string(cols.time_us[rows].astype("datetime64[us]"))
    whole = (cols.time_us[rows] % 1_000_000) == 0
    times = np.empty(len(rows), np.object_)
    times[:] = [
        t[:-7] if w else t for t, w in zip(stamps.tolist(), whole.tolist(), strict=True)
    ]
    every = cols.rssi_dbm
    picked = every if len(rows) == len(cols) else [every[i] for i in rows.tolist()]
    rssi = np.empty(len(rows), np.object_)
    rssi[:] = ["null" if v is None else str(v) for v in picked]
    text = {name: _figures(getattr(cols, name)[rows], d) for name, d in _DIGITS.items()}
    shape = np.zeros(len(rows), np.int64)
    for k, (name, _) in enumerate(_OPTIONAL):
        shape |= (~np.isnan(getattr(cols, name)[rows])).astype(np.int64) << k
    _, slot = np.unique(cols.sensor[rows], return_inverse=True)
    keys = (slot.astype(np.int64) << 20) | (shape << 16) | cols.flag_bits[rows]
    slow = _exponent_rows(cols)[rows]
    keys[slow] = -1
    out = np.empty(len(rows), np.object_)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    edges = np.flatnonzero(np.diff(ordered)) + 1
    for group in np.split(order, edges):
        first = int(group[0])
        if keys[first] < 0:
            continue
        row = int(rows[first])
        template = _template(
            cols.settings[row],
            int(cols.sensor[row]),
            int(shape[first]),
            int(cols.flag_bits[row]),
        )
        if not template:
            slow[group] = True
            continue
        fields = [times, text["watts"], text["va"], text["vrms"], text["irms"]]
        fields += [text["power_factor"], text["wh_total"], rssi]
        for k, (name, _) in enumerate(_OPTIONAL):
            if shape[first] >> k & 1:
                fields.append(text[name])
        flat = tuple(chain.from_iterable(zip(*(f[group] for f in fields), strict=True)))
        out[group] = (template * len(group) % flat).splitlines(keepends=True)
    for j in np.flatnonzero(slow).tolist():
        out[j] = _slow_line(cols, int(rows[j]))
    return list(out)


def _slow_line(cols: ReadingColumns, i: int) -> str:
    """One row through ``json.dumps``, as ``Reading.to_json_dict`` builds it."""
    settings = cols.settings[i]
    stamp = str(np.datetime_as_string(cols.time_us[i].astype("datetime64[us]")))
    if cols.time_us[i] % 1_000_000 == 0:
        stamp = stamp[:-7]
    out: dict[str, object] = {
        "time": stamp + "Z",
        "sensor": int(cols.sensor[i]),
        "name": settings.name,
        "watts": round_finite(float(cols.watts[i]), 3),
        "va": round_finite(float(cols.va[i]), 3),
        "vrms": round_finite(float(cols.vrms[i]), 3),
        "irms": round_finite(float(cols.irms[i]), 5),
        "pf": round_finite(float(cols.power_factor[i]), 4),
        "wh_total": round_finite(float(cols.wh_total[i]), 6),
        "rssi_dbm": cols.rssi_dbm[i],
        "flags": sorted(flags_of(int(cols.flag_bits[i]))),
    }
    for name, key in _OPTIONAL:
        value = float(getattr(cols, name)[i])
        if not math.isnan(value):
            out[key] = round_finite(value, _DIGITS[name])
    if settings.labels:
        out["labels"] = dict(settings.labels)
    return json.dumps(out, separators=(",", ":")) + "\n"
