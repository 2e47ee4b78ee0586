"""Reload when a price or carbon file changes, so a cron job's new prices apply.

Every ``tariffs.reload_check_s`` the supervisor asks :class:`FileWatch` whether
the size or modification time of any file the config reads prices or carbon
from has changed (a file appearing or vanishing counts). Looking costs one
``stat`` per file, so it runs in the main loop. The files come from the
config in force, so a reload that names other files watches those.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypeAlias

from wattd.config.cost import series_files

if TYPE_CHECKING:
    from pathlib import Path

    from wattd.config import Config

__all__ = ["FileWatch"]

log = logging.getLogger(__name__)

Signature: TypeAlias = tuple[int, int] | None
"""``(mtime_ns, size)``; None for a file that cannot be read."""


class FileWatch:
    """Notices changed price and carbon files of a config."""

    def __init__(self, config: Config, now_s: float) -> None:
        self._seen = _look(_files(config))
        self._last_s = now_s

    def changed(self, config: Config, now_s: float) -> list[Path]:
        """The files that changed since the last look (only once per interval)."""
        every = config.tariffs.reload_check_s
        if every <= 0 or now_s - self._last_s < every:
            return []
        self._last_s = now_s
        now = _look(_files(config))
        changed = [p for p, sig in now.items() if self._seen.get(p, sig) != sig]
        self._seen = now
        for path in changed:
            log.info("%s changed; reloading the config to use it", path)
        return changed


def _files(config: Config) -> list[Path]:
    return series_files(config.tariffs, config.locations)


def _look(paths: list[Path]) -> dict[Path, Signature]:
    out: dict[Path, Signature] = {}
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            out[path] = None
        else:
            out[path] = (st.st_mtime_ns, st.st_size)
    return out
