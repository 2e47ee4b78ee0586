"""How the user ran wattd, so that the commands wattd suggests work as printed.

After the README's setup wattd lives in ``.venv/bin`` and is not on ``PATH``,
so a hint that says ``wattd query ...`` would fail; one that says
``.venv/bin/wattd query ...`` (what the user typed) works.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

__all__ = ["wattd_command"]


def wattd_command() -> str:
    """The shell words that start wattd the way this process was started.

    ``wattd`` when that name on ``PATH`` is this very program, else the path
    the user typed (``.venv/bin/wattd``); for ``python -m wattd`` (or any
    other launcher) the interpreter with ``-m wattd``.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    name = os.path.basename(argv0)
    if name.startswith("wattd") and not name.endswith(".py"):
        on_path = shutil.which(name)
        if on_path is not None and ("/" not in argv0 or _same_file(on_path, argv0)):
            return shlex.quote(name)
        if os.path.exists(argv0):
            return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable or 'python3')} -m wattd"


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
