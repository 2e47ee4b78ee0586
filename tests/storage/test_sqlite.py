"""What SQLite failures mean, integrity checks and setting a damaged file aside."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

import pytest

from wattd.storage.sqlite import (
    Failure,
    classify,
    is_corruption,
    quick_check,
    set_aside_database,
)

if TYPE_CHECKING:
    from pathlib import Path

NOW_NS = 1_700_000_000_000_000_000  # 2023-11-14 22:13:20 UTC


def error_from(path: Path, sql: str = "SELECT * FROM sqlite_master") -> sqlite3.Error:
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=0)) as conn:
            conn.execute(sql)
    except sqlite3.Error as exc:
        return exc
    raise AssertionError("no error")


def test_garbage_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    exc = error_from(path)
    assert classify(exc) is Failure.CORRUPT
    assert is_corruption(exc)


def test_a_held_write_lock_is_locked(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN IMMEDIATE")
        exc = error_from(path, "INSERT INTO t VALUES (1)")
    assert classify(exc) is Failure.LOCKED
    assert not is_corruption(exc)


def test_a_missing_directory_cannot_open(tmp_path: Path) -> None:
    exc = error_from(tmp_path / "absent" / "x.sqlite")
    assert classify(exc) is Failure.CANNOT_OPEN


@pytest.mark.parametrize(
    ("message", "failure"),
    [
        ("database is locked", Failure.LOCKED),
        ("database disk image is malformed", Failure.CORRUPT),
        ("file is not a database", Failure.CORRUPT),
        ("no such table: t", Failure.OTHER),
    ],
)
def test_an_error_without_a_code_is_judged_by_its_message(
    message: str, failure: Failure
) -> None:
    assert classify(sqlite3.OperationalError(message)) is failure


def test_quick_check_passes_an_intact_file(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "x.sqlite")) as conn:
        conn.execute("CREATE TABLE t (x)")
        assert quick_check(conn) is None


def test_set_aside_takes_the_wal_files_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"x.sqlite{suffix}").write_bytes(b"first" + suffix.encode())
    first = set_aside_database(path, NOW_NS)
    assert first.name == "x.sqlite.corrupt-20231114T221320Z"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "x.sqlite.corrupt-20231114T221320Z",
        "x.sqlite.corrupt-20231114T221320Z-shm",
        "x.sqlite.corrupt-20231114T221320Z-wal",
    ]
    path.write_bytes(b"second")
    second = set_aside_database(path, NOW_NS)
    assert second.name == "x.sqlite.corrupt-20231114T221320Z-2"
    assert first.read_bytes() == b"first"
    assert second.read_bytes() == b"second"
    assert not path.exists()
