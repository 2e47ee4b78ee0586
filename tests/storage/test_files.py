from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import pytest

from wattd.storage.files import atomic_write, private_file

if TYPE_CHECKING:
    from pathlib import Path


def test_atomic_write_replaces_the_file_and_keeps_it_private(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    atomic_write(target, [b"new ", b"content"])
    assert target.read_bytes() == b"new content"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_target_that_cannot_be_replaced_leaves_no_temporary_file(
    tmp_path: Path,
) -> None:
    # A directory in the file's place makes the final rename fail.
    target = tmp_path / "state.json"
    target.mkdir()
    (target / "inside").write_text("x")
    with pytest.raises(OSError):
        atomic_write(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert (target / "inside").read_text() == "x"


def test_private_file_creates_0600_and_leaves_an_existing_file_alone(
    tmp_path: Path,
) -> None:
    fresh = tmp_path / "sub" / "store.sqlite"
    old_umask = os.umask(0o022)
    try:
        private_file(fresh)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    existing = tmp_path / "kept"
    existing.write_text("data")
    existing.chmod(0o644)
    private_file(existing)
    assert existing.read_text() == "data"
    assert stat.S_IMODE(existing.stat().st_mode) == 0o644
