"""The simulator: many meters sharing one receiver, frames out in time order.

Every ~2.08 s a meter's radio takes 19 sample pairs (AD0 voltage, AD4 current)
1.2-1.4 ms apart, with sample 0 taken early (the gap before sample 1 is 12-18 %
longer), adds ADC noise, rounds to 10 bits, clips at 0/1023 and sends one 0x83
frame; line noise and drops happen on the way to the serial port.

Determinism. Each meter has its own random stream seeded from ``(seed,
address)``, and drops, line garbage and bit flips each have their own stream,
so adding noise does not change the samples of any frame, and the output does
not depend on how :meth:`Simulator.advance` calls are chunked. The cost of a
frame does not grow with the number of meters (a heap picks the next one).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections.abc import Iterable, Iterator, Mapping

from wattd.core.frames import ApiMode, encode_frame
from wattd.core.iosample import encode_rx16_io
from wattd.errors import ConfigError
from wattd.sources.simulate.loads import (
    SQRT2,
    TAU,
    CurrentShape,
    SteadyLoad,
    active_load,
)
from wattd.sources.simulate.meters import (
    ADC_MAX,
    CURRENT_CHANNEL,
    TX_DELAY_S,
    VOLTAGE_CHANNEL,
    MeterModel,
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LineNoise:
    """Serial-line trouble, each as a probability per frame.

    ``garbage_rate``: random bytes (1-24) arrive before the frame.
    ``flip_rate``: one bit of the frame is flipped on the wire.
    """

    garbage_rate: float = 0.0
    flip_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("garbage_rate", "flip_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a probability 0..1")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SimFrame:
    """One transmission of one meter, with the truth at that moment.

    ``data`` is exactly what reaches the serial port (garbage, then the frame,
    possibly with a flipped bit); it is empty when the frame was dropped.
    ``frame`` is the clean frame the radio meant to send.
    """

    time_s: float
    """Simulated arrival time of the frame's last byte."""
    address: int
    seq: int
    data: bytes
    frame: bytes
    garbage: int
    corrupted: bool
    dropped: bool
    rssi_dbm: int
    voltage_counts: tuple[int, ...]
    current_counts: tuple[int, ...]
    sample_times_s: tuple[float, ...]
    true_watts: float
    true_vrms: float
    true_irms: float


class _MeterRun:
    """Mutable per-meter state inside a simulator."""

    __slots__ = ("model", "next_s", "offsets", "rng", "seq", "shapes")

    def __init__(self, model: MeterModel, seed: int | str) -> None:
        self.model = model
        self.rng = random.Random(f"wattd-sim-meter:{seed}:{model.address}")
        self.offsets = model.sample_offsets_s()
        self.seq = 0
        # Radios power up at random moments, so meters are never in lockstep.
        self.next_s = self.rng.uniform(0.05, model.frame_period_s)
        self.shapes: dict[SteadyLoad, CurrentShape] = {}


class Simulator:
    """Many meters sharing one receiver; frames come out in time order.

    Args:
        meters: the meters (addresses must be unique).
        seed: makes everything reproducible.
        api_mode: 1 (unescaped) or 2 (escaped) framing on the wire.
        noise: a :class:`LineNoise`, or one rate used for both garbage and flips.
        drop_rate: probability that a frame never arrives.
    """

    def __init__(
        self,
        meters: Iterable[MeterModel],
        *,
        seed: int | str = 0,
        api_mode: ApiMode | int = ApiMode.UNESCAPED,
        noise: LineNoise | float = 0.0,
        drop_rate: float = 0.0,
    ) -> None:
        self.api_mode = ApiMode(api_mode)
        self.noise = (
            noise
            if isinstance(noise, LineNoise)
            else LineNoise(garbage_rate=noise, flip_rate=noise)
        )
        if not 0.0 <= drop_rate <= 1.0:
            raise ConfigError(
                f"drop rate must be a probability 0..1, got {drop_rate:g}"
            )
        self.drop_rate = drop_rate
        self.seed = seed
        self._runs: dict[int, _MeterRun] = {}
        for model in meters:
            if model.address in self._runs:
                raise ConfigError(f"two meters share address {model.address}")
            self._runs[model.address] = _MeterRun(model, seed)
        self._heap = [(run.next_s, addr) for addr, run in self._runs.items()]
        heapq.heapify(self._heap)
        self._drop_rng = random.Random(f"wattd-sim-drop:{seed}")
        self._garbage_rng = random.Random(f"wattd-sim-garbage:{seed}")
        self._flip_rng = random.Random(f"wattd-sim-flip:{seed}")
        self.now_s = 0.0

    @property
    def meters(self) -> Mapping[int, MeterModel]:
        """The meters by address."""
        return {addr: run.model for addr, run in self._runs.items()}

    def meter(self, address: int) -> MeterModel:
        """One meter by address.

        Raises:
            ConfigError: if no meter has that address.
        """
        run = self._runs.get(address)
        if run is None:
            raise ConfigError(f"no simulated meter has address {address}")
        return run.model

    def next_time_s(self) -> float | None:
        """When the next frame arrives, or None without meters."""
        return self._heap[0][0] if self._heap else None

    def next_frame(self) -> SimFrame:
        """Produce the next frame in time order.

        Raises:
            ConfigError: if the simulator has no meters.
        """
        if not self._heap:
            raise ConfigError("the simulator has no meters")
        t_s, address = heapq.heappop(self._heap)
        run = self._runs[address]
        frame = self._make_frame(run, t_s)
        model = run.model
        run.next_s = t_s + model.frame_period_s + run.rng.uniform(-0.012, 0.012)
        heapq.heappush(self._heap, (run.next_s, address))
        self.now_s = max(self.now_s, t_s)
        return frame

    def advance(self, until_s: float) -> list[SimFrame]:
        """All frames arriving up to ``until_s`` (inclusive), in time order."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= until_s:
            out.append(self.next_frame())
        self.now_s = max(self.now_s, until_s)
        return out

    def frames(self) -> Iterator[SimFrame]:
        """Endless frames in time order."""
        while True:
            yield self.next_frame()

    def true_watts(self, address: int, t_s: float) -> float:
        """True real power of one meter at ``t_s``."""
        return self.meter(address).true_watts(t_s)

    def true_energy_wh(self, address: int, t0_s: float, t1_s: float) -> float:
        """Exact energy one meter drew between two simulated times, in Wh."""
        return self.meter(address).true_energy_wh(t0_s, t1_s)

    def _make_frame(self, run: _MeterRun, t_s: float) -> SimFrame:
        model = run.model
        rng = run.rng
        gauss = rng.gauss
        offsets = run.offsets
        # The radio's sample clock wanders a little from frame to frame.
        scale = 1.0 + gauss(0.0, 0.002)
        t0 = t_s - TX_DELAY_S - offsets[-1] * scale
        load = active_load(model.load, t0)
        shape = run.shapes.get(load)
        if shape is None:
            shape = run.shapes[load] = load.shape(model.vrms)
        hz = model.mains_hz
        vpk = SQRT2 * model.vrms
        cpv = model.counts_per_volt
        cpa = model.counts_per_amp
        vz = model.voltage_zero_counts
        iz = model.current_zero_counts
        sigma = model.noise_counts
        sin = math.sin
        times = []
        volts = []
        amps = []
        for off in offsets:
            t = t0 + off * scale
            ph = (t * hz) % 1.0
            v = round(vz + cpv * vpk * sin(TAU * ph) + gauss(0.0, sigma))
            i = round(iz + cpa * shape(ph) + gauss(0.0, sigma))
            times.append(t)
            volts.append(0 if v < 0 else ADC_MAX if v > ADC_MAX else v)
            amps.append(0 if i < 0 else ADC_MAX if i > ADC_MAX else i)
        rssi = max(-100, min(-23, model.rssi_dbm + rng.randint(-2, 2)))
        vt = tuple(volts)
        it = tuple(amps)
        payload = encode_rx16_io(
            address=model.address,
            rssi_dbm=rssi,
            analog={VOLTAGE_CHANNEL: vt, CURRENT_CHANNEL: it},
        )
        frame = encode_frame(payload, self.api_mode)
        data, garbage, corrupted, dropped = self._line(frame)
        seq = run.seq
        run.seq += 1
        return SimFrame(
            time_s=t_s,
            address=model.address,
            seq=seq,
            data=data,
            frame=frame,
            garbage=garbage,
            corrupted=corrupted,
            dropped=dropped,
            rssi_dbm=rssi,
            voltage_counts=vt,
            current_counts=it,
            sample_times_s=tuple(times),
            true_watts=load.watts,
            true_vrms=model.vrms,
            true_irms=load.irms(model.vrms),
        )

    def _line(self, frame: bytes) -> tuple[bytes, int, bool, bool]:
        """Apply drops, garbage and bit flips; every stream draws on every frame."""
        dropped = self._drop_rng.random() < self.drop_rate
        g_roll = self._garbage_rng.random()
        g_bytes = self._garbage_rng.randbytes(self._garbage_rng.randint(1, 24))
        f_roll = self._flip_rng.random()
        f_pos = self._flip_rng.randrange(len(frame))
        f_bit = self._flip_rng.randrange(8)
        if dropped:
            return b"", 0, False, True
        garbage = g_bytes if g_roll < self.noise.garbage_rate else b""
        corrupted = f_roll < self.noise.flip_rate
        if corrupted:
            buf = bytearray(frame)
            buf[f_pos] ^= 1 << f_bit
            frame = bytes(buf)
        return garbage + frame, len(garbage), corrupted, False
