from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.sinks.summaries.publishers.recorder import Answer, RecordingServer
from wattd.config import Config, parse_config
from wattd.config.templates import TEMPLATE_FIELDS, check_template
from wattd.costing.cost import EnergyInterval
from wattd.errors import ConfigError, StoreError, TemplateError
from wattd.sinks.summaries.service import (
    DEFAULT_TEMPLATE,
    SummaryService,
    compose,
    run,
)

# Last week (Mon 2025-03-03 .. Sun 03-09) rack-a used 100 + 116 + 196 = 412 kWh;
# the week before, 443 kWh. At a flat $0.15 that is $61.80, and 412/443 is -7%.
THIS_WEEK = {1: 100.0, 2: 116.0, 3: 196.0, 4: 50.0}
WEEK_BEFORE = {1: 110.0, 2: 133.0, 3: 200.0, 4: 50.0}
MONDAY = datetime(2025, 3, 10, tzinfo=UTC)


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def config_text(state_dir: Path, destinations: str = "", extra: str = "") -> str:
    return f"""\
state_dir: {state_dir}
sensors:
  - {{address: 1, name: web-1, rack: rack-a}}
  - {{address: 2, name: web-2, rack: rack-a}}
  - {{address: 3, name: web-3, rack: rack-a}}
  - {{address: 4, name: nas, rack: rack-b}}
tariffs:
  default: flat
  plans:
    flat: {{currency: USD, price_per_kwh: 0.15}}
summaries:
  weekly:
    period: week
    schedule: "0 8 * * mon"
    by: rack
{extra}{destinations}"""


def webhook(url: str) -> str:
    return f"    destinations:\n      webhook: {{enabled: true, url: '{url}/hook'}}\n"


def hourly(sensor: int, kwh: float, start: datetime) -> list[EnergyInterval]:
    watts = kwh * 1000 / 168
    return [
        EnergyInterval(
            sensor=sensor,
            start=start + timedelta(hours=h),
            end=start + timedelta(hours=h + 1),
            wh=watts,
            mean_watts=watts,
            max_watts=watts,
            readings=3600 / 2.08,
        )
        for h in range(168)
    ]


def source(start: datetime, end: datetime) -> list[EnergyInterval]:
    out: list[EnergyInterval] = []
    for week_start, table in (
        (MONDAY - timedelta(days=7), THIS_WEEK),
        (MONDAY - timedelta(days=14), WEEK_BEFORE),
    ):
        if start <= week_start < end:
            for sensor, kwh in table.items():
                out += hourly(sensor, kwh, week_start)
    return out


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def service(
    config: Config, clock: Clock, sleeps: Sleeps | None = None, **kw: Any
) -> SummaryService:
    return SummaryService(
        config, intervals=source, clock=clock, sleep=sleeps or Sleeps(), **kw
    )


# -- composing ------------------------------------------------------------------


def test_compose_renders_the_default_template_with_hand_computed_figures(
    tmp_path: Path,
) -> None:
    config = parse_config(config_text(tmp_path))
    messages = compose(config, "weekly", MONDAY + timedelta(hours=8), source)
    by_group = {m.group: m for m in messages}
    assert set(by_group) == {"rack-a", "rack-b"}
    rack_a = by_group["rack-a"]
    # A flat tariff has no peak hours: the default template leaves them out.
    assert rack_a.text == (
        "rack-a used 412 kWh last week, $61.80,"
        " \N{MINUS SIGN}7% vs the week before; biggest: web-3 (196 kWh)"
    )
    assert rack_a.fields["peak_pct"] is None
    assert rack_a.fields["premium"] == "\N{EM DASH}"
    assert rack_a.key == "weekly/rack-a/2025-03-03"
    assert rack_a.fields["start"] == "2025-03-03"
    assert rack_a.fields["end"] == "2025-03-09"
    assert rack_a.fields["cost"] == pytest.approx(61.80)
    assert rack_a.fields["change_pct"] == pytest.approx((412 - 443) / 443 * 100)
    assert rack_a.fields["completeness_pct"] == pytest.approx(100.0)
    assert by_group["rack-b"].fields["change"] == "+0% vs the week before"


def test_peak_hours_show_with_a_time_of_use_tariff_and_a_dash_without(
    tmp_path: Path,
) -> None:
    # web-3 draws evenly all week; 15 of its 168 hours (17:00-20:00 on
    # weekdays, UTC) are peak hours.
    tou = config_text(tmp_path).replace(
        "    flat: {currency: USD, price_per_kwh: 0.15}\n",
        "    flat:\n      currency: USD\n      price_per_kwh: 0.15\n"
        "      bands: [{name: peak, price_per_kwh: 0.40, hours: '17:00-20:00',"
        " days: weekdays}]\n",
    )
    fired = MONDAY + timedelta(hours=8)
    [rack_a, _] = compose(parse_config(tou), "weekly", fired, source)
    assert ", 9% in peak hours, " in rack_a.text  # 15 / 168
    assert rack_a.fields["peak_pct"] == pytest.approx(15 / 168 * 100)
    custom = config_text(
        tmp_path, extra="    template: '{name}: {peak_pct:.0f}% peak, {premium}'\n"
    )
    [flat_a, _] = compose(parse_config(custom), "weekly", fired, source)
    assert flat_a.text == "rack-a: \N{EM DASH}% peak, \N{EM DASH}"
    assert flat_a.to_json_dict()["fields"]["peak_pct"] is None


def test_custom_template_and_only_and_all(tmp_path: Path) -> None:
    extra = (
        "    template: '{name}: {kwh:.1f} kWh for {money} ({start} to {end})'\n"
        "    only: [rack-b]\n"
    )
    config = parse_config(config_text(tmp_path, extra=extra))
    [message] = compose(config, "weekly", MONDAY + timedelta(hours=8), source)
    assert message.text == "rack-b: 50.0 kWh for $7.50 (2025-03-03 to 2025-03-09)"
    everything = parse_config(config_text(tmp_path).replace("by: rack", "by: all"))
    [total] = compose(everything, "weekly", MONDAY + timedelta(hours=8), source)
    assert total.group == "total"
    assert total.fields["name"] == "All meters"
    assert total.fields["kwh"] == pytest.approx(462.0)


def test_template_errors_are_caught_early(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"\{kwhh\} is unknown"):
        check_template("{kwhh} used")
    with pytest.raises(TemplateError, match="cannot be rendered"):
        check_template("{kwh:.0q}")
    check_template(DEFAULT_TEMPLATE)
    assert DEFAULT_TEMPLATE.format(**TEMPLATE_FIELDS).startswith("Rack A used 412 kWh")
    text = config_text(tmp_path, extra="    template: '{nmae} used {kwh}'\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "s.yaml")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "template:" in t)
    assert f"s.yaml:{line}" in str(info.value)
    assert "{nmae} is unknown" in str(info.value)


# -- scheduling and idempotency ------------------------------------------------------


async def test_first_start_waits_for_the_schedule_then_posts_once(
    tmp_path: Path,
) -> None:
    with RecordingServer() as server:
        config = parse_config(config_text(tmp_path, webhook(server.url)))
        clock = Clock(MONDAY + timedelta(hours=7))
        svc = service(config, clock)
        assert await svc.run_due() == []  # first start: nothing old is posted
        clock.now = MONDAY + timedelta(hours=8, seconds=30)
        results = await svc.run_due()
        assert sorted((m.group, dest, status) for m, dest, status in results) == [
            ("rack-a", "webhook", "sent"),
            ("rack-b", "webhook", "sent"),
        ]
        assert len(server.requests) == 2
        assert {r.json()["key"] for r in server.requests} == {
            "weekly/rack-a/2025-03-03",
            "weekly/rack-b/2025-03-03",
        }
        assert await svc.run_due() == []  # same firing, already handled


async def test_restart_does_not_post_the_same_period_again(tmp_path: Path) -> None:
    with RecordingServer() as server:
        config = parse_config(config_text(tmp_path, webhook(server.url)))
        clock = Clock(MONDAY)
        await service(config, clock).run_due()
        clock.now = MONDAY + timedelta(hours=9)
        await service(config, clock).run_due()
        assert len(server.requests) == 2
        # A fresh process, even asked directly for the same firing, skips it.
        again = service(config, clock)
        results = await again.handle("weekly", MONDAY + timedelta(hours=8))
        assert {status for _, _, status in results} == {"already-sent"}
        assert len(server.requests) == 2
        # The next week is a new period and goes out.
        clock.now = MONDAY + timedelta(days=7, hours=8, minutes=1)
        await service(config, clock).run_due()
        assert len(server.requests) == 4


async def test_a_firing_missed_while_down_is_caught_up_once(tmp_path: Path) -> None:
    with RecordingServer() as server:
        config = parse_config(config_text(tmp_path, webhook(server.url)))
        clock = Clock(MONDAY - timedelta(days=1))
        await service(config, clock).run_due()  # running on Sunday, then down
        clock.now = MONDAY + timedelta(days=1, hours=3)  # back on Tuesday
        results = await service(config, clock).run_due()
        assert len(results) == 2
        assert len(server.requests) == 2
        assert server.requests[0].json()["start"] == "2025-03-03T00:00:00Z"


async def test_failed_post_is_retried_with_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extra = "    only: [rack-a]\n    retry_base_s: 10\n"
    with RecordingServer() as server:
        server.queue(
            Answer(503, {"error": "busy"}), Answer(502, {}), Answer(200, {"id": "ok-1"})
        )
        config = parse_config(config_text(tmp_path, webhook(server.url), extra))
        sleeps = Sleeps()
        svc = service(config, Clock(MONDAY + timedelta(hours=8)), sleeps)
        caplog.set_level(logging.WARNING, logger="wattd.sinks.summaries.service")
        [(_, _, status)] = await svc.handle("weekly", MONDAY + timedelta(hours=8))
        assert status == "sent"
        assert len(server.requests) == 3
        assert len(sleeps.delays) == 2
        assert 8 <= sleeps.delays[0] <= 12
        assert 16 <= sleeps.delays[1] <= 24
        assert "attempt 1 of 5" in caplog.text
        assert svc.ledger.status("weekly/rack-a/2025-03-03", "webhook") == "sent"


async def test_refused_post_is_not_retried_and_gives_up_after_max_attempts(
    tmp_path: Path,
) -> None:
    extra = "    only: [rack-a]\n    max_attempts: 2\n"
    with RecordingServer(default=Answer(400, {"error": "bad"})) as server:
        config = parse_config(config_text(tmp_path, webhook(server.url), extra))
        svc = service(config, Clock(MONDAY + timedelta(hours=8)))
        [(_, _, status)] = await svc.handle("weekly", MONDAY + timedelta(hours=8))
        assert status == "failed"
        assert len(server.requests) == 1
        server.default = Answer(500, {})
        svc.ledger._posts.clear()
        [(_, _, status)] = await svc.handle("weekly", MONDAY + timedelta(hours=8))
        assert status == "failed"
        assert len(server.requests) == 3  # 1 + max_attempts


async def test_post_interrupted_by_a_crash_is_not_repeated(tmp_path: Path) -> None:
    with RecordingServer() as server:
        config = parse_config(
            config_text(tmp_path, webhook(server.url), "    only: [rack-a]\n")
        )
        svc = service(config, Clock(MONDAY + timedelta(hours=8)))
        svc.ledger.mark("weekly/rack-a/2025-03-03", "webhook", "posting", at=MONDAY)
        again = service(config, Clock(MONDAY + timedelta(hours=8)))
        [(_, _, status)] = await again.handle("weekly", MONDAY + timedelta(hours=8))
        assert status == "uncertain"
        assert server.requests == []


async def test_rate_limits_per_destination(tmp_path: Path) -> None:
    extra = "    max_posts_per_day: 1\n    min_interval_s: 30\n"
    with RecordingServer() as server:
        config = parse_config(config_text(tmp_path, webhook(server.url), extra))
        sleeps = Sleeps()
        svc = service(config, Clock(MONDAY + timedelta(hours=8)), sleeps)
        results = await svc.handle("weekly", MONDAY + timedelta(hours=8))
        assert sorted(s for _, _, s in results) == ["rate-limited", "sent"]
        assert len(server.requests) == 1
    extra = "    max_posts_per_day: 5\n    min_interval_s: 30\n"
    with RecordingServer() as server:
        config = parse_config(config_text(tmp_path / "b", webhook(server.url), extra))
        sleeps = Sleeps()
        svc = service(config, Clock(MONDAY + timedelta(hours=8)), sleeps)
        await svc.handle("weekly", MONDAY + timedelta(hours=8))
        assert len(server.requests) == 2
        assert sleeps.delays == [pytest.approx(30.0)]  # the clock stood still


async def test_dry_run_when_no_destination_is_enabled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wattd.sinks.summaries.service")
    config = parse_config(config_text(tmp_path))
    svc = service(config, Clock(MONDAY + timedelta(hours=8)))
    results = await svc.handle("weekly", MONDAY + timedelta(hours=8))
    assert {(d, s) for _, d, s in results} == {("dry-run", "dry-run")}
    assert "dry run" in caplog.text
    assert "rack-a used 412 kWh" in caplog.text


async def test_compose_failure_is_retried_for_an_hour_then_given_up(
    tmp_path: Path,
) -> None:
    config = parse_config(config_text(tmp_path))
    calls = []

    def broken(start: datetime, end: datetime) -> list[EnergyInterval]:
        calls.append(start)
        raise StoreError("store is locked")

    clock = Clock(MONDAY)
    svc = SummaryService(config, intervals=broken, clock=clock, sleep=Sleeps())
    await svc.run_due()
    clock.now = MONDAY + timedelta(hours=8, minutes=5)
    assert await svc.run_due() == []
    assert svc.ledger.checked("weekly") == MONDAY  # still due
    clock.now = MONDAY + timedelta(hours=9, minutes=30)
    assert await svc.run_due() == []
    assert svc.ledger.checked("weekly") == MONDAY + timedelta(hours=8)  # given up
    assert len(calls) == 2


async def test_run_loop_sleeps_until_the_next_firing_and_survives_errors(
    tmp_path: Path,
) -> None:
    config = parse_config(config_text(tmp_path))
    clock = Clock(MONDAY + timedelta(hours=7, minutes=59, seconds=50))
    sleeps = Sleeps()

    async def stop_after_two(seconds: float) -> None:
        sleeps.delays.append(seconds)
        if len(sleeps.delays) == 2:
            raise asyncio.CancelledError

    svc = SummaryService(config, intervals=source, clock=clock, sleep=stop_after_two)
    with pytest.raises(asyncio.CancelledError):
        await svc.run()
    assert sleeps.delays[0] == pytest.approx(10.5)  # until 08:00 (+0.5 s margin)
    await run(parse_config(f"state_dir: {tmp_path}\n"))  # no summaries: returns


def test_destination_secrets_from_files_or_env_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wattd.config import dump_effective

    key_file = tmp_path / "ck"
    key_file.write_text("consumer-key-in-file\n")
    monkeypatch.setenv("WATTD_X_SECRET", "secret-from-env")
    text = config_text(
        tmp_path,
        "    destinations:\n      x:\n        enabled: true\n"
        f"        consumer_key_file: {key_file}\n"
        "        consumer_secret: ${WATTD_X_SECRET}\n"
        "        access_token: at-plain\n        access_token_secret: ats-plain\n",
    )
    config = parse_config(text)
    x = config.summaries["weekly"].destinations.x
    assert x.consumer_key is not None
    assert x.consumer_key.get_secret_value() == "consumer-key-in-file"
    assert x.consumer_secret is not None
    assert x.consumer_secret.get_secret_value() == "secret-from-env"
    shown = dump_effective(config) + repr(config)
    for secret in ("consumer-key-in-file", "secret-from-env", "at-plain", "ats-plain"):
        assert secret not in shown
    missing = text.replace("        access_token_secret: ats-plain\n", "")
    with pytest.raises(ConfigError, match="access_token_secret is not set"):
        parse_config(missing)
    both = text.replace(
        "access_token: at-plain",
        f"access_token: a\n        access_token_file: {key_file}",
    )
    with pytest.raises(ConfigError, match="either access_token or access_token_file"):
        parse_config(both)
