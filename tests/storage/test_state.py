from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.readings import reading_with_total
from wattd.config import Config, pipeline_settings
from wattd.core.pipeline import PipelineState, ReadingPipeline
from wattd.errors import StateError
from wattd.storage.files import atomic_write
from wattd.storage.spool import Spool
from wattd.storage.state import (
    StateFile,
    recorded_energy_totals,
    restore_pipeline,
    store_energy_totals,
)
from wattd.storage.store import Store


def pipeline_state(totals: dict[int, float]) -> PipelineState:
    """A real pipeline state holding the given totals."""
    config = Config.model_validate({"sensors": [{"address": a} for a in totals]})
    pipeline = ReadingPipeline(pipeline_settings(config))
    restore_pipeline(pipeline, totals)
    return pipeline.state()


def totals_of(state: PipelineState) -> dict[int, float]:
    return {addr: s.energy.wh_total for addr, s in state.sensors.items()}


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state" / "state.json")
    state = pipeline_state({1: 12.5, 7: 3000.25})
    sf.save(state)
    assert sf.saved_at is not None
    loaded = StateFile(sf.path).load()
    assert loaded is not None
    assert totals_of(loaded) == {1: 12.5, 7: 3000.25}
    doc = json.loads(sf.path.read_text())
    assert doc["format"] == "wattd-state"
    assert doc["version"] == 1
    assert oct(sf.path.stat().st_mode & 0o777) == "0o600"


def test_missing_file_means_fresh_start(tmp_path: Path) -> None:
    assert StateFile(tmp_path / "none.json").load() is None


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b'{"format": "something-else", "version": 1}',
        b'{"format": "wattd-state", "version": 99, "pipeline": {}}',
        b'{"format": "wattd-state", "version": 1, "pipeline": {"version": 1}}',
        b"\x00\xff\xfe garbage",
    ],
)
def test_corrupt_file_is_moved_aside_and_logged(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="wattd.storage.state"):
        assert StateFile(path).load() is None
    assert not path.exists()
    aside = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == content  # kept, never deleted
    assert "corrupt" in caplog.text
    assert str(aside[0]) in caplog.text


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state.json")
    for total in (1.0, 2.0, 3.0):
        sf.save(pipeline_state({1: total}))
    loaded = sf.load()
    assert loaded is not None
    assert totals_of(loaded) == {1: 3.0}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "state.json")
    sf.save(pipeline_state({1: 5.0}))
    # The state path's directory replaced by a file: nothing can be created
    # in it (unlike a chmod, this also stops root).
    blocked = StateFile(tmp_path / "state.json" / "inner.json")
    with pytest.raises(StateError, match="cannot save state"):
        blocked.save(pipeline_state({1: 6.0}))
    assert blocked.last_error is not None
    loaded = StateFile(sf.path).load()
    assert loaded is not None
    assert totals_of(loaded) == {1: 5.0}


def test_atomic_write_creates_parent_dirs(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f.bin"
    atomic_write(target, b"hello")
    assert target.read_bytes() == b"hello"


def test_store_totals_read_from_sqlite(tmp_path: Path) -> None:
    config = Config.model_validate({"state_dir": str(tmp_path)})
    assert store_energy_totals(config) == {}  # no store yet
    with Store.open(config.store_path) as store:
        store.insert_readings([reading_with_total(3, 42.5)])
    assert store_energy_totals(config) == {3: 42.5}
    disabled = Config.model_validate(
        {"state_dir": str(tmp_path), "store": {"enabled": False}}
    )
    assert store_energy_totals(disabled) == {}


def test_unreadable_store_is_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config.model_validate({"state_dir": str(tmp_path)})
    config.store_path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="wattd.storage.state"):
        assert store_energy_totals(config) == {}
    assert "cannot read energy totals" in caplog.text


def test_restore_takes_the_larger_total(tmp_path: Path) -> None:
    config = Config.model_validate({"sensors": [{"address": 1}, {"address": 2}]})
    saved = pipeline_state({1: 100.0, 2: 500.0})
    pipeline = ReadingPipeline(pipeline_settings(config), state=saved)
    # The store saw sensor 1 go further than the last save; sensor 2's store
    # total is older than the saved state.
    restore_pipeline(pipeline, {1: 130.0, 2: 450.0})
    totals = totals_of(pipeline.state())
    assert totals == {1: 130.0, 2: 500.0}


def test_start_up_floor_is_the_highest_total_of_store_and_spool(
    tmp_path: Path,
) -> None:
    config = Config.model_validate({"state_dir": str(tmp_path)})
    assert recorded_energy_totals(config) == {}
    with Store.open(config.store_path) as store:
        store.insert_readings(
            [reading_with_total(3, 42.5), reading_with_total(4, 10.0)]
        )
    with Spool(config.spool_path) as spool:
        # The spool took a later reading of sensor 3 than the store holds, and
        # it was delivered (acked) already: the total it recorded remains.
        spool.append("mqtt", [(1, b"doc")], wh_totals={3: 43.0, 5: 7.0})
        spool.ack("mqtt", [item.id for item in spool.peek("mqtt", 10)])
    assert recorded_energy_totals(config) == {3: 43.0, 4: 10.0, 5: 7.0}
    pipeline = ReadingPipeline(
        pipeline_settings(config), state=pipeline_state({3: 40.0, 4: 11.0})
    )
    restore_pipeline(pipeline, recorded_energy_totals(config))
    assert totals_of(pipeline.state()) == {3: 43.0, 4: 11.0, 5: 7.0}


def test_unreadable_spool_totals_are_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config.model_validate({"state_dir": str(tmp_path)})
    config.spool_path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, logger="wattd.storage.state"):
        assert recorded_energy_totals(config) == {}
    assert "cannot read the energy totals of spool" in caplog.text


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_state_directory_and_its_files_are_private_whatever_the_umask(
    tmp_path: Path,
) -> None:
    config = Config.model_validate({"state_dir": str(tmp_path / "new" / "state")})
    with umask(0o022):
        StateFile(config.state_path).save(pipeline_state({1: 1.0}))
        with Store.open(config.store_path) as store:
            store.insert_readings([reading_with_total(1, 1.0)])
            with Spool(config.spool_path) as spool:
                spool.append("influx", [(1, b"point")])
                files = sorted(p.name for p in config.state_dir.iterdir())
                modes = {name: mode(config.state_dir / name) for name in files}
    assert mode(config.state_dir) == "0o700"
    assert files == [
        "spool.sqlite",
        "spool.sqlite-shm",
        "spool.sqlite-wal",
        "state.json",
        "wattd.sqlite",
        "wattd.sqlite-shm",
        "wattd.sqlite-wal",
    ]
    assert set(modes.values()) == {"0o600"}, modes
