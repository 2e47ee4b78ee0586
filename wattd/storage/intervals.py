"""Energy intervals for pricing, read from what wattd keeps.

The cost engine prices :class:`~wattd.costing.cost.EnergyInterval` values and
never opens a file itself: these readers hand them in, from the SQLite store's
minute (or hour) buckets or from JSON lines of readings.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from wattd.costing.cost import EnergyInterval, intervals_from_totals
from wattd.errors import StoreError, TariffError
from wattd.storage.store import ROLLUP_TABLES, Store, to_ns

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from wattd.config import Config

__all__ = ["intervals_from_jsonl", "intervals_from_store", "recent_intervals"]

log = logging.getLogger(__name__)


def recent_intervals(
    config: Config, start: datetime, end: datetime
) -> list[EnergyInterval]:
    """Stored energy between ``start`` and ``end``, for seeding live cost.

    Blocking (it reads SQLite). No store, or an unreadable one, gives no
    intervals: live cost then starts from zero today.
    """
    if not config.tariffs.plans or not config.store.enabled:
        return []
    path = config.store_path
    if not path.exists():
        return []
    try:
        with Store.open(path, readonly=True) as store:
            return list(intervals_from_store(store, start, end))
    except StoreError as exc:
        log.warning("live cost starts from zero today: %s", exc)
        return []


def intervals_from_store(
    store: Store,
    start: datetime,
    end: datetime,
    *,
    chunk: timedelta = timedelta(days=1),
) -> Iterator[EnergyInterval]:
    """Energy intervals from the store, read one chunk at a time.

    Minute buckets are used; where retention has removed them, hour buckets.
    """
    t = start.astimezone(UTC)
    stop = end.astimezone(UTC)
    hour_ns = ROLLUP_TABLES["1h"][1]
    while t < stop:
        nxt = min(t + chunk, stop)
        lo, hi = to_ns(t), to_ns(nxt)
        rows = store.rollups("1m", lo, hi)
        if not rows:
            # Hour buckets that start before the chunk still overlap it.
            rows = store.rollups("1h", lo - lo % hour_ns, hi)
        for r in rows:
            yield EnergyInterval(
                sensor=r.sensor,
                start=r.start,
                end=r.start + timedelta(microseconds=(r.end_ns - r.start_ns) // 1000),
                wh=r.wh,
                mean_watts=r.watts_mean,
                max_watts=r.watts_max,
                readings=float(r.n_readings),
            )
        t = nxt


def intervals_from_jsonl(path: Path) -> list[EnergyInterval]:
    """Energy intervals from JSON lines of readings, as wattd publishes them.

    Each line needs ``time``, ``sensor`` and ``wh_total``; ``watts`` is optional.

    Raises:
        TariffError: a line is not such a reading (with its line number).
    """
    rows: list[tuple[int, datetime, float, float | None]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TariffError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            moment = datetime.fromisoformat(str(data["time"]).replace("Z", "+00:00"))
            watts = data.get("watts")
            rows.append(
                (
                    int(data["sensor"]),
                    moment.astimezone(UTC),
                    float(data["wh_total"]),
                    None if watts is None else float(watts),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise TariffError(
                f"{path}:{number}: not a reading with time, sensor and wh_total ({exc})"
            ) from None
    rows.sort(key=lambda r: r[1])
    return list(intervals_from_totals(rows))
