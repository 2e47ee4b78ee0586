"""The store keeps each reading's frame hash, and upgrades a store from before."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import TYPE_CHECKING

import pytest

from tests.storage.test_store import T0, reading, series
from wattd.errors import StoreError
from wattd.storage.store import SCHEMA_VERSION, Store, to_ns
from wattd.storage.store.schema import _MIGRATIONS

if TYPE_CHECKING:
    from pathlib import Path

    from wattd.core.readings import Reading

END_NS = to_ns(T0) + 10**13
# The largest hash the pipeline makes (below 2**53), and zero.
HASHES = (2**53 - 1, 0, 123_456_789)


def hashed_series(sensor: int, count: int) -> list[Reading]:
    return [
        dataclasses.replace(r, frame_hash=HASHES[i % len(HASHES)])
        for i, r in enumerate(series(sensor, T0, count))
    ]


def test_frame_hash_and_its_absence_round_trip(tmp_path: Path) -> None:
    hashed = hashed_series(1, 6)
    plain = series(2, T0, 3)
    path = tmp_path / "wattd.sqlite"
    with Store.open(path) as store:
        store.add([*hashed, *plain])
    with Store.open(path, readonly=True) as store:
        back = store.readings(0, END_NS)
        latest = store.latest_reading(1)
    assert [(r.sensor, r.frame_hash) for r in back] == [
        *((1, r.frame_hash) for r in hashed),
        *((2, None) for _ in plain),
    ]
    assert latest is not None
    assert latest.frame_hash == hashed[-1].frame_hash
    conn = sqlite3.connect(path)
    kinds = {row[0] for row in conn.execute("SELECT typeof(frame_hash) FROM readings")}
    conn.close()
    assert kinds == {"integer", "null"}


def _version_1_store(path: Path) -> None:
    """A store as the previous wattd wrote it, with one reading in it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO readings (sensor, time_ns, name, watts, wh_total, wh_delta)"
        " VALUES (5, ?, 'old', 42.5, 10.0, 0.5)",
        (to_ns(T0),),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.close()


def test_a_version_1_store_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "wattd.sqlite"
    _version_1_store(path)
    # A reader does not upgrade; it says what will.
    with pytest.raises(StoreError, match="start the daemon once"):
        Store.open(path, readonly=True)
    new = dataclasses.replace(reading(5, T0.replace(minute=1)), frame_hash=77)
    with Store.open(path) as store:
        store.add([new])
        old, again = store.readings(0, END_NS)
    assert (old.name, old.watts, old.wh_total, old.frame_hash) == (
        "old",
        42.5,
        10.0,
        None,
    )
    assert again.frame_hash == 77
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    conn.close()
    with Store.open(path, readonly=True) as store:
        assert [r.frame_hash for r in store.readings(0, END_NS)] == [None, 77]
