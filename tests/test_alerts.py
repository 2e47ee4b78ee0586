"""The alert rules in docs/alerts: valid, unit-tested by promtool, documented.

``promtool check rules`` parses every rule; ``promtool test rules`` runs the
unit tests in docs/alerts/tests, whose input series make each alert fire
when it should and stay silent before. Every alert has a summary and a
runbook line in docs/operations.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.fixtures.paths import REPO_ROOT
from tests.fixtures.services import require_binary

ALERTS = REPO_ROOT / "docs" / "alerts"
RULES = sorted(ALERTS.glob("*.yml"))
TESTS = sorted((ALERTS / "tests").glob("*.yml"))
OPERATIONS = REPO_ROOT / "docs" / "operations.md"


def promtool(*args: str, cwd: Any = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def rules() -> list[dict[str, Any]]:
    out = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            out += group["rules"]
    return out


def test_promtool_accepts_the_rules() -> None:
    assert RULES
    done = promtool("check", "rules", *map(str, RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass_for_every_alert() -> None:
    assert TESTS
    done = promtool("test", "rules", *map(str, TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {
        case["alertname"]
        for path in TESTS
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == {rule["alert"] for rule in rules()}


def test_a_broken_expectation_fails_promtool(tmp_path: Any) -> None:
    """The unit tests can fail: an alert expected too early does."""
    (path,) = TESTS
    text = path.read_text(encoding="utf-8").replace("eval_time: 16m", "eval_time: 13m")
    copy = tmp_path / "tests" / path.name
    copy.parent.mkdir()
    copy.write_text(text, encoding="utf-8")
    for rule_file in RULES:
        shutil.copy(rule_file, tmp_path / rule_file.name)
    done = promtool("test", "rules", str(copy))
    assert done.returncode != 0
    assert "WattdNodeDown" in done.stdout + done.stderr


def test_every_alert_has_a_summary_and_a_runbook_line() -> None:
    anchors = {
        re.sub(r"[^a-z0-9-]", "", line[4:].strip().lower().replace(" ", "-"))
        for line in OPERATIONS.read_text(encoding="utf-8").splitlines()
        if line.startswith("### ")
    }
    for rule in rules():
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        page, _, anchor = annotations["runbook"].partition("#")
        assert page == "docs/operations.md", rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, rule["alert"]


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.name)
def test_rule_files_name_every_group_once(path: Any) -> None:
    groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names))
