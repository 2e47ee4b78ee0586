"""Readers of a central time-series store, for fleet reports.

Every host of a fleet writes its readings as line protocol to one store;
these readers ask it for each series' energy counter per clock minute and
return the plain rows of :mod:`wattd.costing.fleet`.

* :class:`VictoriaMetricsReader` uses the Prometheus query API. The store
  keeps field ``wh_total`` of measurement ``power`` as the series
  ``power_wh_total``, with the tags as labels. ``first_over_time``,
  ``last_over_time``, ``max_over_time`` and ``count_over_time`` over 60 s
  windows at a 60 s step give exact minute figures; ``last_over_time`` of
  ``power_frame_hash`` gives each minute's last frame hash. Each window ends 1 ms
  before its minute does, so with the store's millisecond timestamps it is
  the minute ``[m, m + 60 s)``, as InfluxDB groups it.
* :class:`InfluxQLReader` uses InfluxDB 1.x's ``/query`` (which InfluxDB 3
  keeps): one ``SELECT first(), last(), max(), count() ... GROUP BY time(1m), *``
  per span, in chunked answers so the server's row limit never cuts it short;
  ``last("frame_hash")`` per minute in a query of its own.

Both also read each node's latest clock probe (:mod:`wattd.costing.clocks`):
the probe's value and the time the store gave it on receipt; and, for
``wattd fleet status`` (:mod:`wattd.costing.fleetstatus`), each node's latest
health probe and each series' number of minutes with a point in a window.
The HTTP is in :mod:`wattd.clients.tsdbhttp`.
"""

from __future__ import annotations

import math
from typing import Any, Final, Protocol

from wattd.clients.tsdbhttp import StoreHttp, shorten
from wattd.costing.clocks import CLOCK_FIELD, CLOCK_MEASUREMENT, ClockProbe
from wattd.costing.fleet import (
    MINUTE_S,
    MinuteTotals,
    SeriesHashes,
    SeriesLabels,
    SeriesMinutes,
    SeriesPoint,
    series_labels,
)
from wattd.costing.fleetstatus import (
    NODE_FIELDS,
    NODE_MEASUREMENT,
    MeterMinutes,
    NodeProbe,
)
from wattd.errors import TsdbError

__all__ = [
    "KINDS",
    "QUERY_TIMEOUT_S",
    "InfluxQLReader",
    "TsdbReader",
    "VictoriaMetricsReader",
    "open_reader",
]

KINDS: Final = ("victoriametrics", "influxdb")
QUERY_TIMEOUT_S: Final = 120.0
"""A day of minute figures for hundreds of meters takes the store a while."""
_EDGE_S: Final = 0.001
"""Windows end this much before a minute's end: one millisecond, the store's
resolution."""
_CHUNK_ROWS: Final = 10_000


class TsdbReader(Protocol):
    """What a fleet report needs from a store."""

    def last_points(self, start_s: int, end_s: int) -> list[SeriesPoint]:
        """The last energy point of every series within ``[start_s, end_s)``."""
        ...

    def minutes(self, start_s: int, end_s: int) -> list[SeriesMinutes]:
        """Every series' minutes with data within ``[start_s, end_s)``."""
        ...

    def frame_hashes(self, start_s: int, end_s: int) -> list[SeriesHashes]:
        """Every series' last frame hash per minute within ``[start_s, end_s)``."""
        ...

    def clock_probes(self, start_s: int, end_s: int) -> list[ClockProbe]:
        """The last clock probe of every node within ``[start_s, end_s)``."""
        ...

    def node_probes(self, start_s: int, end_s: int) -> list[NodeProbe]:
        """The last health probe of every node within ``[start_s, end_s)``."""
        ...

    def minutes_with_data(self, start_s: int, end_s: int) -> list[MeterMinutes]:
        """Per series, the minutes of ``[start_s, end_s)`` with an energy point."""
        ...


def open_reader(
    kind: str,
    url: str,
    *,
    measurement: str,
    database: str | None = None,
    retention_policy: str | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = QUERY_TIMEOUT_S,
) -> TsdbReader:
    """The reader for a store of ``kind`` (one of :data:`KINDS`) at ``url``.

    Raises:
        TsdbError: an unknown kind, or InfluxDB without a database.
    """
    http = StoreHttp(
        kind, url, username=username, password=password, timeout_s=timeout_s
    )
    if kind == "victoriametrics":
        return VictoriaMetricsReader(http, measurement)
    if kind == "influxdb":
        if not database:
            raise TsdbError(f"{http.where}: give the database to read (--database)")
        return InfluxQLReader(http, measurement, database, retention_policy)
    raise TsdbError(f"unknown store {kind!r}; use one of {', '.join(KINDS)}")


class VictoriaMetricsReader:
    """Minute figures from VictoriaMetrics' ``/api/v1/query_range``."""

    def __init__(self, http: StoreHttp, measurement: str) -> None:
        self._http = http
        self._wh = _selector(f"{measurement}_wh_total")
        self._watts = _selector(f"{measurement}_watts")
        self._hash = _selector(f"{measurement}_frame_hash")
        self._clock = _selector(f"{CLOCK_MEASUREMENT}_{CLOCK_FIELD}")

    def last_points(self, start_s: int, end_s: int) -> list[SeriesPoint]:
        """The last energy point of every series within ``[start_s, end_s)``."""
        window = f"[{end_s - start_s}s]"
        at = f"{end_s - _EDGE_S:.3f}"
        totals = self._instant(f"last_over_time({self._wh}{window})", at)
        times = self._instant(f"tlast_over_time({self._wh}{window})", at)
        return [
            SeriesPoint(labels=labels, time_s=times[labels], wh_total=total)
            for labels, total in totals.items()
            if labels in times
        ]

    def minutes(self, start_s: int, end_s: int) -> list[SeriesMinutes]:
        """Every series' minutes with data within ``[start_s, end_s)``."""
        window = f"[{MINUTE_S}s]"
        columns = {
            name: self._range(query, start_s, end_s)
            for name, query in (
                ("last", f"last_over_time({self._wh}{window})"),
                ("first", f"first_over_time({self._wh}{window})"),
                ("top", f"max_over_time({self._wh}{window})"),
                ("points", f"count_over_time({self._wh}{window})"),
                ("max_watts", f"max_over_time({self._watts}{window})"),
            )
        }
        out = []
        for labels, lasts in columns["last"].items():
            first = columns["first"].get(labels, {})
            top = columns["top"].get(labels, {})
            points = columns["points"].get(labels, {})
            watts = columns["max_watts"].get(labels, {})
            rows = [
                MinuteTotals(
                    start_s=minute,
                    first_wh=first.get(minute, last),
                    last_wh=last,
                    top_wh=top.get(minute, last),
                    points=int(points.get(minute, 1.0)),
                    max_watts=watts.get(minute),
                )
                for minute, last in sorted(lasts.items())
            ]
            out.append(SeriesMinutes(labels=labels, minutes=rows))
        return out

    def frame_hashes(self, start_s: int, end_s: int) -> list[SeriesHashes]:
        """Every series' last frame hash per minute within ``[start_s, end_s)``."""
        query = f"last_over_time({self._hash}[{MINUTE_S}s])"
        return [
            SeriesHashes(
                labels=labels,
                hashes={minute: int(value) for minute, value in values.items()},
            )
            for labels, values in self._range(query, start_s, end_s).items()
        ]

    def clock_probes(self, start_s: int, end_s: int) -> list[ClockProbe]:
        """The last clock probe of every node within ``[start_s, end_s)``."""
        window = f"[{end_s - start_s}s]"
        at = f"{end_s - _EDGE_S:.3f}"
        # A range ending now must not be moved back by the store's latency offset.
        sent = self._instant(f"last_over_time({self._clock}{window})", at, nocache=True)
        times = self._instant(
            f"tlast_over_time({self._clock}{window})", at, nocache=True
        )
        return [
            ClockProbe(node=node, sent_ms=value, stored_s=times[labels])
            for labels, value in sent.items()
            if labels in times and (node := dict(labels).get("node"))
        ]

    def node_probes(self, start_s: int, end_s: int) -> list[NodeProbe]:
        """The last health probe of every node within ``[start_s, end_s)``."""
        window = f"[{end_s - start_s}s]"
        at = f"{end_s - _EDGE_S:.3f}"
        first = _selector(f"{NODE_MEASUREMENT}_{NODE_FIELDS[0]}")
        times = self._instant(f"tlast_over_time({first}{window})", at, nocache=True)
        fields: dict[SeriesLabels, dict[str, float]] = {}
        for name in NODE_FIELDS:
            metric = _selector(f"{NODE_MEASUREMENT}_{name}")
            query = f"last_over_time({metric}{window})"
            for labels, value in self._instant(query, at, nocache=True).items():
                fields.setdefault(labels, {})[name] = value
        return [
            NodeProbe(node=node, stored_s=stored_s, fields=fields.get(labels, {}))
            for labels, stored_s in times.items()
            if (node := dict(labels).get("node"))
        ]

    def minutes_with_data(self, start_s: int, end_s: int) -> list[MeterMinutes]:
        """Per series, the minutes of ``[start_s, end_s)`` with an energy point."""
        span = end_s - start_s
        if span < MINUTE_S:
            return []
        # The subquery's steps fall on whole minutes; each counts its minute.
        inner = f"count_over_time({self._wh}[{MINUTE_S}s])"
        query = f"count_over_time(({inner})[{span}s:{MINUTE_S}s])"
        return [
            MeterMinutes(labels=labels, minutes=int(value))
            for labels, value in self._instant(query, str(end_s), nocache=True).items()
        ]

    def _instant(
        self, query: str, at: str, *, nocache: bool = False
    ) -> dict[SeriesLabels, float]:
        params = {"query": query, "time": at}
        if nocache:
            params["nocache"] = "1"
        data = self._http.post_json("/api/v1/query", params)
        out = {}
        for item in _vm_result(self._http, data):
            value = _number(item.get("value", [None, None])[1])
            if value is not None:
                out[series_labels(item.get("metric", {}))] = value
        return out

    def _range(
        self, query: str, start_s: int, end_s: int
    ) -> dict[SeriesLabels, dict[int, float]]:
        params = {
            "query": query,
            # The value at m + 60 s - 1 ms covers [m, m + 60 s).
            "start": f"{start_s + MINUTE_S - _EDGE_S:.3f}",
            "end": f"{end_s - _EDGE_S:.3f}",
            "step": f"{MINUTE_S}s",
            "nocache": "1",
        }
        data = self._http.post_json("/api/v1/query_range", params)
        out: dict[SeriesLabels, dict[int, float]] = {}
        for item in _vm_result(self._http, data):
            labels = series_labels(item.get("metric", {}))
            series = out.setdefault(labels, {})
            # A day of minutes for hundreds of meters: the loop stays plain.
            for at, text in item.get("values", []):
                try:
                    value = float(text)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    series[round(at + _EDGE_S) - MINUTE_S] = value
        return out


class InfluxQLReader:
    """Minute figures from InfluxDB 1.x's ``/query`` (InfluxQL)."""

    def __init__(
        self,
        http: StoreHttp,
        measurement: str,
        database: str,
        retention_policy: str | None,
    ) -> None:
        self._http = http
        self._database = database
        source = _identifier(measurement)
        clock = _identifier(CLOCK_MEASUREMENT)
        if retention_policy:
            source = f"{_identifier(retention_policy)}.{source}"
            clock = f"{_identifier(retention_policy)}.{clock}"
        self._from = source
        self._clock = clock
        node = _identifier(NODE_MEASUREMENT)
        self._node = (
            f"{_identifier(retention_policy)}.{node}" if retention_policy else node
        )

    def last_points(self, start_s: int, end_s: int) -> list[SeriesPoint]:
        """The last energy point of every series within ``[start_s, end_s)``."""
        query = _select('last("wh_total") AS "last"', self._from, start_s, end_s, "*")
        out = []
        for labels, rows in self._series(query).items():
            for row in rows:
                total = _number(row.get("last"))
                if total is not None:
                    out.append(
                        SeriesPoint(
                            labels=labels, time_s=row["time"] / 1000, wh_total=total
                        )
                    )
        return out

    def minutes(self, start_s: int, end_s: int) -> list[SeriesMinutes]:
        """Every series' minutes with data within ``[start_s, end_s)``."""
        fields = (
            'first("wh_total") AS "first", last("wh_total") AS "last",'
            ' max("wh_total") AS "top", count("wh_total") AS "points",'
            ' max("watts") AS "max_watts"'
        )
        query = _select(fields, self._from, start_s, end_s, "time(1m), * fill(none)")
        out = []
        for labels, rows in self._series(query).items():
            minutes = []
            for row in rows:
                last = _number(row.get("last"))
                if last is None:
                    continue
                first = _number(row.get("first"))
                top = _number(row.get("top"))
                minutes.append(
                    MinuteTotals(
                        start_s=row["time"] // 1000,
                        first_wh=last if first is None else first,
                        last_wh=last,
                        top_wh=last if top is None else top,
                        points=int(row.get("points") or 1),
                        max_watts=_number(row.get("max_watts")),
                    )
                )
            out.append(SeriesMinutes(labels=labels, minutes=minutes))
        return out

    def frame_hashes(self, start_s: int, end_s: int) -> list[SeriesHashes]:
        """Every series' last frame hash per minute within ``[start_s, end_s)``."""
        query = _select(
            'last("frame_hash") AS "hash"',
            self._from,
            start_s,
            end_s,
            "time(1m), * fill(none)",
        )
        out = []
        for labels, rows in self._series(query).items():
            hashes = {
                row["time"] // 1000: int(value)
                for row in rows
                if (value := _number(row.get("hash"))) is not None
            }
            out.append(SeriesHashes(labels=labels, hashes=hashes))
        return out

    def clock_probes(self, start_s: int, end_s: int) -> list[ClockProbe]:
        """The last clock probe of every node within ``[start_s, end_s)``."""
        field = f'last({_identifier(CLOCK_FIELD)}) AS "sent"'
        query = _select(field, self._clock, start_s, end_s, '"node"')
        return [
            ClockProbe(node=node, sent_ms=sent, stored_s=row["time"] / 1000)
            for labels, rows in self._series(query).items()
            if (node := dict(labels).get("node"))
            for row in rows
            if (sent := _number(row.get("sent"))) is not None
        ]

    def node_probes(self, start_s: int, end_s: int) -> list[NodeProbe]:
        """The last health probe of every node within ``[start_s, end_s)``."""
        where = f"time >= {start_s}s AND time < {end_s}s"
        query = (
            f"SELECT * FROM {self._node} WHERE {where}"  # noqa: S608 - quoted identifier
            ' GROUP BY "node" ORDER BY time DESC LIMIT 1'
        )
        out = []
        for labels, rows in self._series(query).items():
            node = dict(labels).get("node")
            for row in rows[:1]:
                fields = {
                    name: value
                    for name in NODE_FIELDS
                    if (value := _number(row.get(name))) is not None
                }
                if node:
                    out.append(
                        NodeProbe(node=node, stored_s=row["time"] / 1000, fields=fields)
                    )
        return out

    def minutes_with_data(self, start_s: int, end_s: int) -> list[MeterMinutes]:
        """Per series, the minutes of ``[start_s, end_s)`` with an energy point."""
        inner = _select(
            'count("wh_total") AS "n"',
            self._from,
            start_s,
            end_s,
            "time(1m), * fill(none)",
        )
        where = f"time >= {start_s}s AND time < {end_s}s"
        query = (
            f'SELECT count("n") AS "minutes" FROM ({inner})'  # noqa: S608 - as above
            f" WHERE {where} GROUP BY *"
        )
        return [
            MeterMinutes(labels=labels, minutes=int(value))
            for labels, rows in self._series(query).items()
            for row in rows
            if (value := _number(row.get("minutes"))) is not None
        ]

    def _series(self, query: str) -> dict[SeriesLabels, list[dict[str, Any]]]:
        """Rows of each series (``time`` in epoch ms), joined over the chunks."""
        params = {
            "db": self._database,
            "q": query,
            "epoch": "ms",
            "chunked": "true",
            "chunk_size": str(_CHUNK_ROWS),
        }
        out: dict[SeriesLabels, list[dict[str, Any]]] = {}
        for answer in self._http.post_json_lines("/query", params):
            for result in answer.get("results", []):
                if "error" in result:
                    raise TsdbError(
                        f"{self._http.where}: {shorten(str(result['error']))};"
                        " check --database and --retention-policy"
                    )
                for series in result.get("series", []):
                    labels = series_labels(series.get("tags") or {})
                    columns = series.get("columns", [])
                    rows = out.setdefault(labels, [])
                    rows.extend(
                        dict(zip(columns, values, strict=False))
                        for values in series.get("values", [])
                    )
            if "error" in answer:
                raise TsdbError(f"{self._http.where}: {shorten(str(answer['error']))}")
        return out


def _vm_result(http: StoreHttp, data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or data.get("status") != "success":
        said = data.get("error") if isinstance(data, dict) else None
        raise TsdbError(f"{http.where} refused the query: {shorten(str(said))}")
    result = data.get("data", {}).get("result", [])
    return result if isinstance(result, list) else []


def _number(value: object) -> float | None:
    """A finite number from a JSON value (VictoriaMetrics sends strings)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _selector(metric: str) -> str:
    """A PromQL selector of one metric name, whatever characters it holds."""
    escaped = metric.replace("\\", "\\\\").replace('"', '\\"')
    return f'{{__name__="{escaped}"}}'


def _select(fields: str, source: str, start_s: int, end_s: int, group: str) -> str:
    """An InfluxQL SELECT over ``[start_s, end_s)``, grouped by ``group``."""
    where = f"time >= {start_s}s AND time < {end_s}s"
    # The source is a quoted identifier (_identifier) and the times are integers.
    return f"SELECT {fields} FROM {source} WHERE {where} GROUP BY {group}"  # noqa: S608


def _identifier(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
