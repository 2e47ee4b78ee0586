"""Reprocess on the batch path: the same store as the per-frame path, all or nothing.

The store is the one ``test_reprocess`` builds (readings from a wrong
calibration plus the archived wire bytes); reprocessing it with the right
calibration is done once frame by frame and once in small batches.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import yaml

pytest.importorskip("numpy")

from tests.fixtures.waiting import block_until
from tests.ops.test_reprocess import (
    FAR,
    HOURS,
    T0,
    Archived,
    compute,
    make_config,
    record,
    simulate,
)
from wattd.ops.reprocess import ReprocessStopped, reprocess
from wattd.storage.store import Store, to_ns

if TYPE_CHECKING:
    from pathlib import Path

    from wattd.config import Config

START_NS = to_ns(T0)
END_NS = to_ns(T0 + timedelta(hours=HOURS))


@pytest.fixture(scope="module")
def frames() -> list[Archived]:
    return simulate()


def fill(directory: Path, frames: list[Archived]) -> tuple[Config, Store]:
    """A store as the daemon left it, and the config with the right calibration."""
    wrong = make_config(directory, wrong=True)
    store = Store.open(wrong.store_path)
    readings = compute(wrong, frames, monotonic_base=91_234.5)
    store.add(readings)
    store.add(frames=record(frames))
    return make_config(directory, wrong=False), store


def contents(store: Store) -> tuple[object, ...]:
    return (
        [dataclasses.astuple(r) for r in store.readings(0, FAR)],
        store.rollups("1m", 0, FAR, [1, 2]),
        store.rollups("1h", 0, FAR, [1, 2]),
        store.last_wh_totals(),
    )


@pytest.fixture(scope="module")
def per_frame_result(
    tmp_path_factory: pytest.TempPathFactory, frames: list[Archived]
) -> tuple[object, ...]:
    config, store = fill(tmp_path_factory.mktemp("per-frame"), frames)
    with store:
        reprocess(store, config, START_NS, END_NS, now_ns=START_NS, batch=False)
        return contents(store)


def test_batch_reprocess_stores_what_the_per_frame_one_does(
    tmp_path: Path, frames: list[Archived], per_frame_result: tuple[object, ...]
) -> None:
    config, store = fill(tmp_path, frames)
    with store:
        summary = reprocess(
            store, config, START_NS, END_NS, now_ns=START_NS, batch_frames=97
        )
        assert summary.frames == len(frames)
        assert contents(store) == per_frame_result


def test_a_stopped_reprocess_changes_nothing_and_a_rerun_completes(
    tmp_path: Path, frames: list[Archived], per_frame_result: tuple[object, ...]
) -> None:
    config, store = fill(tmp_path, frames)
    with store:
        before = contents(store)
        asked: list[int] = []

        def stop() -> bool:
            asked.append(1)
            return len(asked) >= 3

        with pytest.raises(ReprocessStopped, match="nothing was changed"):
            reprocess(
                store,
                config,
                START_NS,
                END_NS,
                now_ns=START_NS,
                batch_frames=100,
                stop=stop,
            )
        assert contents(store) == before
        reprocess(store, config, START_NS, END_NS, now_ns=START_NS, batch_frames=100)
        assert contents(store) == per_frame_result


def test_sigterm_leaves_the_old_range_or_the_new_one(
    tmp_path: Path, frames: list[Archived], per_frame_result: tuple[object, ...]
) -> None:
    config, store = fill(tmp_path, frames)
    before = contents(store)
    store.close()
    cfg = tmp_path / "wattd.yaml"
    cfg.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    err = tmp_path / "stderr.txt"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wattd",
                "reprocess",
                "--config",
                str(cfg),
                "--from",
                T0.isoformat(),
                "--to",
                (T0 + timedelta(hours=HOURS)).isoformat(),
                "--progress",
                "--batch-frames",
                "20",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        block_until(
            lambda: "wattd reprocess: [" in err.read_text() or proc.poll() is not None,
            timeout_s=60,
            what="a progress line",
        )
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    with Store.open(config.store_path) as again:
        after = contents(again)
    text = err.read_text()
    if code == 0:
        # It finished before the signal came: the new range, whole.
        assert after == per_frame_result
    else:
        assert code == 130, text
        assert "nothing was changed" in text
        assert after == before
