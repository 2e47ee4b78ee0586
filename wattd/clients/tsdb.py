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
the probe's value and the time the store gave it on receipt.

The HTTP is the standard library's: one POST per query, HTTP basic auth when a
user is given, and no proxy from the environment (a proxy set for downloads
would otherwise carry the store's queries). Every failure is one
:class:`~wattd.errors.TsdbError` line that names the store and what to check.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import math
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any, Final, Protocol

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
from wattd.errors import TsdbError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

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
_MESSAGE_CHARS: Final = 300
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
    http = _Http(kind, url, username=username, password=password, timeout_s=timeout_s)
    if kind == "victoriametrics":
        return VictoriaMetricsReader(http, measurement)
    if kind == "influxdb":
        if not database:
            raise TsdbError(f"{http.where}: give the database to read (--database)")
        return InfluxQLReader(http, measurement, database, retention_policy)
    raise TsdbError(f"unknown store {kind!r}; use one of {', '.join(KINDS)}")


class VictoriaMetricsReader:
    """Minute figures from VictoriaMetrics' ``/api/v1/query_range``."""

    def __init__(self, http: _Http, measurement: str) -> None:
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
        http: _Http,
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
                        f"{self._http.where}: {_shorten(str(result['error']))};"
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
                raise TsdbError(f"{self._http.where}: {_shorten(str(answer['error']))}")
        return out


# -- HTTP -------------------------------------------------------------------------


class _Http:
    """POSTs forms to one store and turns every failure into a TsdbError."""

    def __init__(
        self,
        kind: str,
        url: str,
        *,
        username: str | None,
        password: str | None,
        timeout_s: float,
    ) -> None:
        self.base = url.rstrip("/")
        self.where = f"{kind} at {self.base}"
        parts = urllib.parse.urlsplit(self.base)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise TsdbError(
                f"{self.where}: the URL must start with http:// or https://"
            )
        if parts.username is not None or parts.password is not None:
            # Keeps passwords out of the command line and the process list.
            raise TsdbError(
                f"{kind}: put the user in --username and the password in"
                " --password-file or $WATTD_SOURCE_PASSWORD, not in the URL"
            )
        self.timeout_s = timeout_s
        self._headers = {"Accept": "application/json"}
        if username is not None:
            pair = f"{username}:{password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post_json(self, path: str, params: Mapping[str, str]) -> Any:
        """The JSON answer to one query."""
        with self._open(path, params) as response:
            try:
                return json.loads(self._read(response.read))
            except ValueError:
                raise self._not_json(path) from None

    def post_json_lines(self, path: str, params: Mapping[str, str]) -> Iterator[Any]:
        """The answer's JSON documents, one per line, as they arrive."""
        with self._open(path, params) as response:
            while line := self._read(response.readline):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        raise self._not_json(path) from None

    @contextlib.contextmanager
    def _open(
        self, path: str, params: Mapping[str, str]
    ) -> Iterator[http.client.HTTPResponse]:
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.base + path, data=body, headers=self._headers, method="POST"
        )
        try:
            response = self._opener.open(request, timeout=self.timeout_s)
        except urllib.error.HTTPError as exc:
            raise self._refused(path, exc) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        with response:
            yield response

    def _read(self, read: Callable[[], bytes]) -> bytes:
        """One read of the answer; a connection lost meanwhile is a TsdbError."""
        try:
            return read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None

    def _not_json(self, path: str) -> TsdbError:
        return TsdbError(
            f"{self.where}: {path} did not answer with JSON; is the URL the store's"
            " base URL (for example http://host:8428 or http://host:8086)?"
        )

    def _refused(self, path: str, exc: urllib.error.HTTPError) -> TsdbError:
        status = exc.code
        said = _server_message(exc.read(4096))
        detail = f"HTTP {status}: {said}" if said else f"HTTP {status}"
        if status in {401, 403}:
            return TsdbError(
                f"{self.where} refused the credentials ({detail}); check --username"
                " and the password (--password-file or $WATTD_SOURCE_PASSWORD)"
            )
        if status == 404:
            return TsdbError(
                f"{self.where} has no {path} ({detail}); is the URL the store's"
                " base URL, and is the store of that kind?"
            )
        return TsdbError(f"{self.where} refused the query ({detail})")

    def _unreachable(self, exc: Exception) -> TsdbError:
        reason: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, TimeoutError | socket.timeout):
            return TsdbError(
                f"{self.where} did not answer within {self.timeout_s:g} s;"
                " it is overloaded or unreachable"
            )
        if isinstance(reason, socket.gaierror):
            host = urllib.parse.urlsplit(self.base).hostname
            msg = f"{self.where}: cannot resolve host {host!r}; check the URL"
            return TsdbError(msg)
        if isinstance(reason, ssl.SSLError):
            return TsdbError(f"{self.where}: TLS failed ({reason}); check the URL")
        if isinstance(reason, ConnectionRefusedError):
            text = "connection refused"
        elif isinstance(reason, OSError):
            text = reason.strerror or type(reason).__name__
        else:
            text = str(reason)
        return TsdbError(
            f"cannot connect to {self.where} ({_shorten(text)}); is it running,"
            " and is the URL right?"
        )


def _vm_result(http: _Http, data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or data.get("status") != "success":
        said = data.get("error") if isinstance(data, dict) else None
        raise TsdbError(f"{http.where} refused the query: {_shorten(str(said))}")
    result = data.get("data", {}).get("result", [])
    return result if isinstance(result, list) else []


def _server_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return _shorten(text)
    if isinstance(data, dict) and data.get("error"):
        return _shorten(str(data["error"]))
    return _shorten(text)


def _shorten(text: str) -> str:
    """One line of at most :data:`_MESSAGE_CHARS` characters."""
    flat = " ".join(text.split())
    if len(flat) > _MESSAGE_CHARS:
        return flat[: _MESSAGE_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return flat


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
