"""The summary ledger: what was posted where, kept across restarts.

A JSON file in the state directory records every post by key (summary,
group, period) and destination, and how far each schedule has been handled.
Every change is written at once and atomically (temp file, fsync, rename),
so a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from wattd.errors import SummaryError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["LEDGER_KEEP", "Ledger"]

log = logging.getLogger(__name__)

LEDGER_KEEP: Final = timedelta(days=400)
"""Posts older than this are forgotten; no schedule looks back that far."""


class Ledger:
    """Persistent record of posts and of how far each schedule was checked.

    The daemon and ``wattd summary --send`` may share the file: every read
    looks at the file again, and every change is a read-modify-write under an
    exclusive lock on ``<file>.lock``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(f"{path.name}.lock")
        self._posts: dict[str, dict[str, Any]] = {}
        self._checked: dict[str, str] = {}
        self._refresh()

    def status(self, key: str, destination: str) -> str | None:
        """``posting``, ``sent``, ``failed``, ``skipped`` or None."""
        self._refresh()
        entry = self._posts.get(f"{key}@{destination}")
        return str(entry["status"]) if entry else None

    def claim(self, key: str, destination: str, *, at: datetime) -> str | None:
        """Mark a post as in flight unless it is already sent or in flight.

        Returns None when the caller may post, else the status that forbids it.
        """
        with self._locked():
            entry = self._posts.get(f"{key}@{destination}")
            if entry is not None and entry["status"] in {"sent", "posting"}:
                return str(entry["status"])
            self._set(key, destination, "posting", at, "")
            self._save(now=at)
        return None

    def mark(
        self, key: str, destination: str, status: str, *, at: datetime, detail: str = ""
    ) -> None:
        """Record a post's state and save at once."""
        with self._locked():
            self._set(key, destination, status, at, detail)
            self._save(now=at)

    def sent_since(self, destination: str, since: datetime) -> list[datetime]:
        """Times of posts to ``destination`` (sent or in flight) after ``since``."""
        self._refresh()
        out = []
        for k, entry in self._posts.items():
            if k.endswith(f"@{destination}") and entry["status"] in {"sent", "posting"}:
                t = datetime.fromisoformat(entry["time"])
                if t > since:
                    out.append(t)
        return sorted(out)

    def checked(self, summary: str) -> datetime | None:
        """Up to when the schedule of ``summary`` has been handled."""
        self._refresh()
        text = self._checked.get(summary)
        return datetime.fromisoformat(text) if text else None

    def set_checked(self, summary: str, at: datetime) -> None:
        """Record that every firing up to ``at`` is handled, and save."""
        with self._locked():
            self._checked[summary] = at.astimezone(UTC).isoformat()
            self._save(now=at)

    # -- internals ----------------------------------------------------------------

    def _set(self, key: str, dest: str, status: str, at: datetime, detail: str) -> None:
        self._posts[f"{key}@{dest}"] = {
            "status": status,
            "time": at.astimezone(UTC).isoformat(),
            "detail": detail[:300],
        }

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = self._lock_path.open("a")
        except OSError as exc:
            raise self._write_error(exc) from None
        with fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                self._refresh()
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _save(self, *, now: datetime) -> None:
        """Write atomically (temp file, fsync, rename); prune old entries."""
        cutoff = now - LEDGER_KEEP
        self._posts = {
            k: v
            for k, v in self._posts.items()
            if datetime.fromisoformat(v["time"]) > cutoff
        }
        data = {"version": 1, "posts": self._posts, "checked": self._checked}
        try:
            fd, tmp = tempfile.mkstemp(prefix=".summaries-", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            Path(tmp).replace(self.path)
        except OSError as exc:
            raise self._write_error(exc) from None

    def _write_error(self, exc: OSError) -> SummaryError:
        return SummaryError(
            f"cannot write the summary ledger {self.path}: {exc.strerror}; the"
            " state directory must be writable, or summaries could repeat"
        )

    def _refresh(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            posts = data["posts"]
            checked = data["checked"]
            if not isinstance(posts, dict) or not isinstance(checked, dict):
                raise TypeError("posts/checked are not objects")
            for entry in posts.values():
                datetime.fromisoformat(entry["time"])
                str(entry["status"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt")
            with contextlib.suppress(OSError):
                self.path.replace(aside)
            log.warning(
                "summary ledger %s is unreadable (%s); moved to %s. Schedules restart"
                " from now, so no past period is posted again",
                self.path,
                exc,
                aside,
            )
            self._posts, self._checked = {}, {}
            return
        self._posts = posts
        self._checked = {str(k): str(v) for k, v in checked.items()}
