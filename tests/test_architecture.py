"""The layer rules hold: the import contracts in pyproject.toml, and no cycles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.fixtures.paths import REPO_ROOT

ROOT = REPO_ROOT
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_are_kept() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(
    ("module", "bad_import", "complaint"),
    [
        (
            "core/frames.py",
            "import wattd.daemon.supervisor",
            "wattd.core is not allowed to import wattd.daemon",
        ),
        (
            "core/power.py",
            "import sqlite3",
            "wattd.core is not allowed to import sqlite3",
        ),
        (
            "config/model.py",
            "import wattd.sinks.registry",
            "wattd.config is not allowed to import wattd.sinks",
        ),
        (
            "sinks/influx/sink.py",
            "import wattd.sinks.mqtt.sink",
            "wattd.sinks.influx is not allowed to import wattd.sinks.mqtt",
        ),
    ],
)
def test_an_import_that_breaks_a_layer_fails_the_check(
    tmp_path: Path, module: str, bad_import: str, complaint: str
) -> None:
    shutil.copytree(ROOT / "wattd", tmp_path / "wattd")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "wattd" / module
    target.write_text(target.read_text() + f"\n{bad_import}  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert complaint in result.stdout


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("wattd", cache_dir=None)
    cycles = [
        [module, *(graph.find_shortest_chain(importer=imported, imported=module) or ())]
        for module in sorted(graph.modules)
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=imported, imported=module)
    ]
    assert cycles == []
