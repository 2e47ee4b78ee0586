"""Energy totals in the spool: written once per value, again on a fresh file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wattd.storage.spool import Spool

if TYPE_CHECKING:
    from pathlib import Path


def energy_writes(spool: Spool, stream: str, totals: dict[int, float]) -> int:
    """How many energy rows one append writes (the trace shows each row)."""
    statements: list[str] = []
    spool._conn.set_trace_callback(statements.append)
    try:
        spool.append(stream, [(1, b"x")], wh_totals=totals)
    finally:
        spool._conn.set_trace_callback(None)
    return sum(1 for s in statements if s.startswith("INSERT INTO energy"))


def test_a_total_already_committed_is_not_written_again(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.sqlite") as spool:
        assert energy_writes(spool, "mqtt", {1: 5.0, 2: 7.0}) == 2
        # The other sink's append of the same readings writes none.
        assert energy_writes(spool, "influx", {1: 5.0, 2: 7.0}) == 0
        assert energy_writes(spool, "influx", {1: 4.0}) == 0
        assert energy_writes(spool, "mqtt", {1: 6.0, 2: 7.0}) == 1
        assert spool.wh_totals() == {1: 6.0, 2: 7.0}
    with Spool(tmp_path / "spool.sqlite") as reopened:
        assert reopened.wh_totals() == {1: 6.0, 2: 7.0}


def test_a_fresh_file_after_damage_gets_every_total_again(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool.sqlite") as spool:
        spool.append("mqtt", [(1, b"x")], wh_totals={1: 5.0})
        spool._recover("a test damaged it")
        assert spool.wh_totals() == {}
        spool.append("influx", [(1, b"x")], wh_totals={1: 5.0})
        assert spool.wh_totals() == {1: 5.0}
