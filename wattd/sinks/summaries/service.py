"""Scheduled energy summaries: what to say, and posting it once per period.

* :func:`compose` - a report of the last complete period, with the period
  before it for comparison, rendered through a ``str.format`` template.
* :class:`SummaryService` - the asyncio task: sleeps until a schedule
  (:mod:`wattd.support.cron`) fires, composes in a thread and posts with
  retries and rate limits. Each post is recorded in the ledger
  (:mod:`wattd.sinks.summaries.ledger`)
  before it is sent (``posting``) and after (``sent``/``failed``), so a
  restart never posts the same period twice; a post found ``posting`` after
  a crash is not repeated (at most once). Errors are logged; nothing here
  can stop measurement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar
from zoneinfo import ZoneInfo

from wattd.costing.report.engine import TOTAL, build_report, period_range
from wattd.costing.report.text import format_money
from wattd.errors import (
    PublishError,
    PublishRejected,
    ScheduleError,
    SummaryError,
    TemplateError,
    WattdError,
)
from wattd.sinks.summaries.ledger import Ledger
from wattd.sinks.summaries.message import Period, SummaryMessage
from wattd.support.backoff import backoff_delay
from wattd.support.cron import CronSchedule
from wattd.support.worker import run_blocking

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from pathlib import Path

    from wattd.config import Config, SummaryConfig
    from wattd.costing.cost import EnergyInterval
    from wattd.costing.report.engine import GroupReport, Report
    from wattd.sinks.summaries.publishers.base import Publisher

__all__ = [
    "DEFAULT_TEMPLATE",
    "SummaryMessage",
    "SummaryService",
    "compose",
    "run",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_TEMPLATE: Final = (
    "{name} used {kwh:.0f} kWh {period_label}, {money}{in_peak}, {change};"
    " biggest: {biggest} ({biggest_kwh:.0f} kWh)"
)
DEFAULT_SCHEDULES: Final[dict[str, str]] = {
    "day": "0 8 * * *",
    "week": "0 8 * * mon",
    "month": "0 8 1 * *",
}
_LABELS: Final = {"day": "yesterday", "week": "last week", "month": "last month"}
_BEFORE: Final = {
    "day": "the day before",
    "week": "the week before",
    "month": "the month before",
}


class _NotApplicable:
    """What a template shows for a figure that does not exist, whatever the spec.

    A flat tariff has no peak hours, so ``{peak_pct:.0f}`` becomes an em dash
    rather than a misleading 0.
    """

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        return "\N{EM DASH}"

    def __str__(self) -> str:
        return "\N{EM DASH}"


_NOT_APPLICABLE: Final = _NotApplicable()

_MAX_CATCH_UP: Final = timedelta(days=40)
"""A schedule that fired while wattd was down is caught up once, if this recent."""
_MAX_SLEEP_S: Final = 60.0
"""Wake at least this often, so wall-clock jumps and suspends are noticed."""
_GIVE_UP: Final = timedelta(hours=1)
"""How long a summary that cannot be composed is retried."""
_RETRY_MAX_S: Final = 3600.0
"""Longest wait between two attempts at one post, before its jitter."""
_RETRY_JITTER: Final = 0.2
"""Each wait is drawn from 80-120 % of its step, so retries do not line up."""


def schedule_of(summary: SummaryConfig) -> CronSchedule:
    """The summary's schedule, or the default for its period."""
    return CronSchedule.parse(summary.schedule or DEFAULT_SCHEDULES[summary.period])


# -- composing ------------------------------------------------------------------


def template_fields(
    summary: str,
    period: Period,
    group: GroupReport,
    previous: GroupReport | None,
    report: Report,
    name: str,
) -> dict[str, Any]:
    """The values of one group; ``peak_pct`` is None without peak hours."""
    tz = ZoneInfo(report.timezone)
    biggest = group.biggest or ("-", 0.0)
    change_pct: float | None = None
    if previous is not None and previous.it_kwh > 0:
        change_pct = (group.it_kwh - previous.it_kwh) / previous.it_kwh * 100.0
    if change_pct is None:
        change = f"no data for {_BEFORE[period]}"
    else:
        sign = "\N{MINUS SIGN}" if change_pct < 0 else "+"
        change = f"{sign}{abs(change_pct):.0f}% vs {_BEFORE[period]}"
    peak_pct = None if group.peak_share is None else group.peak_share * 100.0
    return {
        "name": name,
        "summary": summary,
        "period": period,
        "period_label": _LABELS[period],
        "start": report.start.astimezone(tz).date().isoformat(),
        "end": (report.end.astimezone(tz) - timedelta(seconds=1)).date().isoformat(),
        "kwh": group.it_kwh,
        "facility_kwh": group.facility_kwh,
        "cost": group.cost or 0.0,
        "money": format_money(group.cost, report.currency),
        "currency": report.currency or "",
        "co2_kg": group.co2_kg or 0.0,
        "peak_pct": peak_pct,
        "in_peak": "" if peak_pct is None else f", {peak_pct:.0f}% in peak hours",
        "premium": format_money(group.peak_premium, report.currency),
        "change_pct": change_pct or 0.0,
        "change": change,
        "biggest": biggest[0],
        "biggest_kwh": biggest[1],
        "sensors": len(group.sensors),
        "mean_watts": group.mean_watts,
        "peak_watts": group.peak_watts,
        "completeness_pct": (group.completeness or 0.0) * 100.0,
    }


def compose(
    config: Config,
    name: str,
    fired: datetime,
    intervals: Callable[[datetime, datetime], Iterable[EnergyInterval]],
) -> list[SummaryMessage]:
    """The messages of summary ``name`` for the last period complete at ``fired``."""
    summary = config.summaries.get(name)
    if summary is None:
        raise SummaryError(
            f"no summary {name!r} in the config; defined: "
            + (", ".join(sorted(config.summaries)) or "none")
        )
    tz = ZoneInfo(summary.timezone or config.tariffs.timezone)
    start, end = period_range(summary.period, fired, tz, previous=True)
    before_start, before_end = period_range(summary.period, start, tz, previous=True)
    only = tuple(summary.only)
    report = build_report(config, intervals(start, end), start, end, by=summary.by)
    previous = build_report(
        config,
        intervals(before_start, before_end),
        before_start,
        before_end,
        by=summary.by,
    )
    groups = [report.total] if summary.by == "all" else list(report.groups)
    template = summary.template or DEFAULT_TEMPLATE
    out = []
    for group in groups:
        if only and group.key not in only:
            continue
        prior = previous.total if summary.by == "all" else _find(previous, group.key)
        label = "All meters" if group.key == TOTAL else group.key
        fields = template_fields(name, summary.period, group, prior, report, label)
        shown = {k: _NOT_APPLICABLE if v is None else v for k, v in fields.items()}
        try:
            text = template.format(**shown)
        except (ValueError, KeyError, IndexError) as exc:
            raise TemplateError(f"summary {name!r}: template failed: {exc}") from None
        out.append(
            SummaryMessage(
                summary=name,
                group=group.key,
                period=summary.period,
                start=start,
                end=end,
                text=text,
                fields=fields,
            )
        )
    return out


def _find(report: Report, key: str) -> GroupReport | None:
    return next((g for g in report.groups if g.key == key), None)


# -- the service ----------------------------------------------------------------


class SummaryService:
    """Runs every configured summary on its schedule (one asyncio task)."""

    def __init__(
        self,
        config: Config,
        *,
        intervals: Callable[[datetime, datetime], Iterable[EnergyInterval]]
        | None = None,
        publishers: Callable[[Config, str], Mapping[str, Publisher]] | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        ledger_path: Path | None = None,
    ) -> None:
        self.config = config
        self._intervals = intervals
        self._publishers = publishers
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep
        self.ledger = Ledger(ledger_path or config.state_dir / "summaries.json")

    def reconfigure(self, config: Config) -> None:
        """Use a new config from the next wake-up on."""
        self.config = config

    async def run(self) -> None:
        """Loop forever: wait for the next firing, handle it, repeat."""
        while True:
            try:
                await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("summary scheduler failed; trying again in a minute")
            await self._sleep(self._seconds_to_next())

    async def run_due(self) -> list[tuple[SummaryMessage, str, str]]:
        """Handle every schedule that fired since it was last checked."""
        now = self._clock()
        results: list[tuple[SummaryMessage, str, str]] = []
        for name, summary in self.config.summaries.items():
            tz = ZoneInfo(summary.timezone or self.config.tariffs.timezone)
            since = await self._io(self.ledger.checked, name)
            if since is None:
                # First start: begin from now rather than post old periods.
                await self._io(self.ledger.set_checked, name, now)
                continue
            since = max(since, now - _MAX_CATCH_UP)
            fired = schedule_of(summary).last_at_or_before(now, since, tz)
            if fired is None:
                continue
            try:
                results.extend(await self.handle(name, fired))
            except (WattdError, OSError) as exc:
                # Retried at each wake-up for an hour (a locked or missing
                # store may come back), then that period is given up.
                if now - fired < _GIVE_UP:
                    log.warning("summary %r for %s: %s; retrying", name, fired, exc)
                    continue
                log.error("summary %r for %s given up: %s", name, fired, exc)
            await self._io(self.ledger.set_checked, name, fired)
        return results

    async def handle(
        self, name: str, fired: datetime, *, send: bool = True
    ) -> list[tuple[SummaryMessage, str, str]]:
        """Compose summary ``name`` for ``fired`` and post it where enabled.

        Returns ``(message, destination, status)`` per post; destination is
        ``dry-run`` when nothing is enabled or ``send`` is False.
        """
        summary = self.config.summaries[name]
        # Its own thread, not the shared worker: pricing up to two months of
        # minute buckets takes seconds (about 5 s a month for 10 meters), and a
        # state save or a /metrics scrape queued behind it would wait as long.
        messages = await asyncio.to_thread(self._compose, name, fired)
        enabled = summary.destinations.enabled
        if not enabled or not send:
            for m in messages:
                log.info("summary %s (dry run): %s", m.key, m.text)
            return [(m, "dry-run", "dry-run") for m in messages]
        pubs = self._make_publishers(name)
        results = []
        try:
            for message in messages:
                for dest in enabled:
                    status = await self._post(summary, message, dest, pubs[dest])
                    results.append((message, dest, status))
        finally:
            for pub in pubs.values():
                with contextlib.suppress(Exception):
                    await pub.aclose()
        return results

    def _compose(self, name: str, fired: datetime) -> list[SummaryMessage]:
        if self._intervals is not None:
            return compose(self.config, name, fired, self._intervals)
        from wattd.storage.intervals import intervals_from_store
        from wattd.storage.store import Store

        store = Store.open(self.config.store_path, readonly=True)
        try:
            return compose(
                self.config, name, fired, lambda a, b: intervals_from_store(store, a, b)
            )
        finally:
            store.close()

    def _make_publishers(self, name: str) -> Mapping[str, Publisher]:
        if self._publishers is not None:
            return self._publishers(self.config, name)
        from wattd.sinks.summaries.publishers import build_publishers

        return build_publishers(self.config, name)

    async def _post(
        self, summary: SummaryConfig, message: SummaryMessage, dest: str, pub: Publisher
    ) -> str:
        key = message.key
        state = await self._io(self.ledger.status, key, dest)
        if state == "sent":
            log.debug("summary %s already posted to %s", key, dest)
            return "already-sent"
        if state == "posting":
            log.warning(
                "summary %s to %s was being posted when wattd stopped; it may have"
                " gone out, so it is not posted again",
                key,
                dest,
            )
            return "uncertain"
        now = self._clock()
        recent = await self._io(self.ledger.sent_since, dest, now - timedelta(days=1))
        if len(recent) >= summary.max_posts_per_day:
            log.warning(
                "summary %s not posted to %s: %d posts in the last 24 h reach"
                " max_posts_per_day",
                key,
                dest,
                len(recent),
            )
            await self._io(
                self.ledger.mark, key, dest, "skipped", at=now, detail="rate limit"
            )
            return "rate-limited"
        if recent:
            wait = summary.min_interval_s - (now - recent[-1]).total_seconds()
            if wait > 0:
                await self._sleep(wait)
        claimed = await self._io(self.ledger.claim, key, dest, at=self._clock())
        if claimed is not None:
            # Another process (``wattd summary --send``) got there first.
            log.info("summary %s to %s is %s elsewhere; skipped", key, dest, claimed)
            return "already-sent" if claimed == "sent" else "uncertain"
        for attempt in range(1, summary.max_attempts + 1):
            try:
                remote = await pub.post(message)
            except PublishRejected as exc:
                log.error("summary %s refused by %s: %s", key, dest, exc)
                return await self._settle(key, dest, "failed", str(exc))
            except (PublishError, WattdError) as exc:
                if attempt == summary.max_attempts:
                    log.error(
                        "summary %s to %s failed after %d attempts: %s",
                        key,
                        dest,
                        attempt,
                        exc,
                    )
                    return await self._settle(key, dest, "failed", str(exc))
                delay = backoff_delay(
                    attempt,
                    initial_s=summary.retry_base_s,
                    max_s=_RETRY_MAX_S,
                    jitter=_RETRY_JITTER,
                    jitter_up=_RETRY_JITTER,
                )
                log.warning(
                    "summary %s to %s failed (attempt %d of %d): %s; retry in %.0f s",
                    key,
                    dest,
                    attempt,
                    summary.max_attempts,
                    exc,
                    delay,
                )
                await self._sleep(delay)
            else:
                log.info(
                    "summary %s posted to %s%s",
                    key,
                    dest,
                    f" ({remote})" if remote else "",
                )
                return await self._settle(key, dest, "sent", remote or "")
        return "failed"  # pragma: no cover - the loop always returns

    async def _settle(self, key: str, dest: str, status: str, detail: str) -> str:
        """Record how a claimed post ended; returns ``status``."""
        await self._io(
            self.ledger.mark, key, dest, status, at=self._clock(), detail=detail
        )
        return status

    async def _io(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        # The ledger fsyncs; keep that off the loop the serial reader runs on.
        # One small local file, locked only for its read-modify-write: short
        # enough for the shared worker.
        return await run_blocking(fn, *args, **kwargs)

    def _seconds_to_next(self) -> float:
        now = self._clock()
        best = _MAX_SLEEP_S
        for summary in self.config.summaries.values():
            tz = ZoneInfo(summary.timezone or self.config.tariffs.timezone)
            try:
                nxt = schedule_of(summary).next_after(now, tz)
            except ScheduleError:
                continue
            best = min(best, max(0.0, (nxt - now).total_seconds()) + 0.5)
        return best


async def run(config: Config) -> None:
    """Run the configured summaries forever; return at once if there are none."""
    if not config.summaries:
        return
    await SummaryService(config).run()
