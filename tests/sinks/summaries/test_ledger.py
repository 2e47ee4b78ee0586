from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wattd.errors import SummaryError
from wattd.sinks.summaries.ledger import LEDGER_KEEP, Ledger

NOW = datetime(2025, 3, 10, 8, tzinfo=UTC)


def test_marks_survive_a_new_instance(tmp_path: Path) -> None:
    path = tmp_path / "state" / "summaries.json"
    ledger = Ledger(path)
    ledger.mark("weekly/rack-a/2025-03-03", "x", "sent", at=NOW, detail="1790")
    ledger.set_checked("weekly", NOW)
    again = Ledger(path)
    assert again.status("weekly/rack-a/2025-03-03", "x") == "sent"
    assert again.status("weekly/rack-a/2025-03-03", "mastodon") is None
    assert again.checked("weekly") == NOW
    assert again.sent_since("x", NOW - timedelta(days=1)) == [NOW]
    assert again.sent_since("x", NOW) == []
    assert not list(path.parent.glob(".summaries-*"))  # no temp files left


def test_old_entries_are_pruned(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.json")
    ledger.mark("old", "x", "sent", at=NOW - LEDGER_KEEP - timedelta(days=1))
    ledger.mark("new", "x", "sent", at=NOW)
    assert Ledger(tmp_path / "l.json").status("old", "x") is None
    assert Ledger(tmp_path / "l.json").status("new", "x") == "sent"


def test_corrupt_file_is_set_aside_and_schedules_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l.json"
    path.write_text("{not json")
    ledger = Ledger(path)
    assert ledger.checked("weekly") is None
    assert (tmp_path / "l.json.corrupt").read_text() == "{not json"
    assert "unreadable" in caplog.text
    path.write_text(
        json.dumps({"version": 1, "posts": {"k@x": {"time": "nope"}}, "checked": {}})
    )
    assert Ledger(path).status("k", "x") is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SummaryError, match="cannot write the summary ledger"):
            Ledger(locked / "l.json").mark("k", "x", "sent", at=NOW)
    finally:
        locked.chmod(0o700)


def test_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SummaryError, match="cannot write the summary ledger"):
        Ledger(blocker / "sub" / "l.json").mark("k", "x", "sent", at=NOW)


def test_two_processes_sharing_the_file_never_both_claim_a_post(tmp_path: Path) -> None:
    daemon = Ledger(tmp_path / "l.json")
    cli = Ledger(tmp_path / "l.json")  # e.g. `wattd summary --send` meanwhile
    assert daemon.claim("weekly/a/2025-03-03", "x", at=NOW) is None
    assert cli.claim("weekly/a/2025-03-03", "x", at=NOW) == "posting"
    daemon.mark("weekly/a/2025-03-03", "x", "sent", at=NOW)
    assert cli.status("weekly/a/2025-03-03", "x") == "sent"
    cli.set_checked("weekly", NOW)
    assert daemon.checked("weekly") == NOW
    daemon.mark("weekly/b/2025-03-03", "x", "failed", at=NOW)
    assert cli.claim("weekly/b/2025-03-03", "x", at=NOW) is None  # failed may retry
