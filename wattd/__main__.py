"""``python -m wattd``."""

from __future__ import annotations

import sys

from wattd.cli import main

sys.exit(main())
