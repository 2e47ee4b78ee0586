"""IO frames of a batch, in arrival order, ready for :class:`BatchPipeline`.

:class:`FrameBatch` holds standard frames as rows of one sample array and
any other IO frame as itself. :func:`archive_batch` makes one from archived
wire frames; :class:`~wattd.core.batch.stream.StreamBatcher` from a byte
stream.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Final

import numpy as np

from wattd.core.batch.decode import STANDARD_CHANNELS, DecodedFrames, decode_frames
from wattd.core.iosample import IoSampleFrame
from wattd.core.pipeline import FRAME_HASH_BITS, frame_hash

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from numpy.typing import NDArray

__all__ = ["FrameBatch", "archive_batch", "frame_hashes"]

_NS_PER_S: Final = 1_000_000_000


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FrameBatch:
    """IO frames with their arrival times, in arrival order.

    Standard frames are rows of ``samples`` (AD0 and AD4 of 19 sets); a row
    listed in ``odd`` is that frame instead (its ``samples`` row is unused).
    """

    sensor: NDArray[np.int64]
    rssi_dbm: NDArray[np.int64]
    time_us: NDArray[np.int64]
    """Wall-clock arrival, microseconds since the Unix epoch."""
    monotonic_s: NDArray[np.float64]
    samples: NDArray[np.int64]
    odd: Mapping[int, IoSampleFrame]
    ports: Sequence[str]

    def __len__(self) -> int:
        return len(self.sensor)

    @classmethod
    def build(
        cls,
        frames: DecodedFrames,
        time_us: NDArray[np.int64],
        monotonic_s: NDArray[np.float64],
        ports: Sequence[str],
        *,
        wanted: frozenset[int] | None = None,
    ) -> FrameBatch:
        """The IO frames among decoded inputs; times and ports are per input.

        An input the per-frame decoder turned into several IO frames gives a
        row for each. ``wanted`` keeps only those sensors' frames.
        """
        index = frames.index
        sensor = frames.address16
        rssi = frames.rssi_dbm
        samples = frames.samples
        if wanted is not None:
            mine = np.isin(sensor, np.array(sorted(wanted), np.int64))
            if not mine.all():
                index, sensor, rssi = index[mine], sensor[mine], rssi[mine]
                samples = samples[mine]
        extra: list[tuple[int, int, IoSampleFrame]] = []
        for i, events in frames.others.items():
            for j, event in enumerate(events):
                if isinstance(event, IoSampleFrame) and (
                    wanted is None or event.sensor_id in wanted
                ):
                    extra.append((i, j, event))
        odd: dict[int, IoSampleFrame] = {}
        if extra:
            extra.sort(key=lambda item: (item[0], item[1]))
            where = np.array([i for i, _, _ in extra], np.int64)
            # Sort by input, standard rows before the odd ones of the same input.
            keys = np.concatenate([index * 2, where * 2 + 1])
            order = np.argsort(keys, kind="stable")
            index = np.concatenate([index, where])[order]
            pad = np.zeros((len(extra), *samples.shape[1:]), np.int64)
            samples = np.concatenate([samples, pad])[order]
            sensor = np.concatenate(
                [sensor, np.array([f.sensor_id for _, _, f in extra], np.int64)]
            )[order]
            rssi = np.concatenate([rssi, np.zeros(len(extra), np.int64)])[order]
            rows = np.empty(len(order), np.int64)
            rows[order] = np.arange(len(order))
            base = len(order) - len(extra)
            odd = {int(rows[base + k]): f for k, (_, _, f) in enumerate(extra)}
        picked = index.tolist()
        return cls(
            sensor=sensor,
            rssi_dbm=rssi,
            time_us=time_us[index],
            monotonic_s=monotonic_s[index],
            samples=samples,
            odd=odd,
            ports=[ports[i] for i in picked],
        )


def frame_hashes(batch: FrameBatch, keep: NDArray[np.int64]) -> list[int]:
    """``frame_hash`` of each kept row, from its samples as the frame holds them."""
    rows = len(keep)
    sets = batch.samples.shape[1]
    values = np.zeros((rows, 5 + 2 * sets), np.uint64)
    values[:, 0] = batch.sensor[keep]
    values[:, 2] = len(STANDARD_CHANNELS)
    values[:, 3] = STANDARD_CHANNELS[0]
    values[:, 4 : 4 + sets] = batch.samples[keep, :, 0]
    values[:, 4 + sets] = STANDARD_CHANNELS[1]
    values[:, 5 + sets :] = batch.samples[keep, :, 1]
    packed = values.astype(">u8").tobytes()
    width = values.shape[1] * 8
    shift = 64 - FRAME_HASH_BITS
    out: list[int] = []
    blake = hashlib.blake2b
    for j, i in enumerate(keep.tolist()):
        frame = batch.odd.get(i)
        if frame is not None:
            out.append(frame_hash(frame))
            continue
        digest = blake(packed[j * width : (j + 1) * width], digest_size=8).digest()
        out.append(int.from_bytes(digest, "big") >> shift)
    return out


def archive_batch(
    raws: Sequence[bytes],
    api_modes: Sequence[int],
    times_ns: Sequence[int],
    ports: Sequence[str],
    *,
    wanted: frozenset[int] | None = None,
) -> tuple[FrameBatch, int]:
    """Archived frames (one wire frame each) as a batch.

    Times are arrival times in ns; the monotonic time of each is the same
    instant in seconds, as reprocessing uses. Also returns how many of the
    frames held no IO frame at all.
    """
    decoded = decode_frames(raws, api_modes)
    empty = sum(
        1
        for events in decoded.others.values()
        if not any(isinstance(e, IoSampleFrame) for e in events)
    )
    batch = FrameBatch.build(
        decoded,
        np.array(times_ns, np.int64) // 1000,
        np.array([t / _NS_PER_S for t in times_ns], np.float64),
        ports,
        wanted=wanted,
    )
    return batch, empty
