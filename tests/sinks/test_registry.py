from __future__ import annotations

from pathlib import Path

import pytest

from wattd.config import Config
from wattd.errors import ConfigError
from wattd.sinks import registry
from wattd.sinks.base import Sink
from wattd.sinks.registry import SinkEntry, build_sinks, enabled_entries


def _missing_module(config: Config) -> Sink:
    import wattd.sinks.no_such_module  # type: ignore[import-not-found]  # noqa: F401

    raise AssertionError("unreachable")


def test_default_config_enables_only_the_store(tmp_path: Path) -> None:
    config = Config.model_validate({"state_dir": str(tmp_path)})
    assert [e.section for e in enabled_entries(config)] == ["store"]
    sinks = build_sinks(config)
    assert [s.name for s in sinks] == ["store"]
    assert all(isinstance(s, Sink) for s in sinks)


def test_disabling_the_store_leaves_no_sinks(tmp_path: Path) -> None:
    config = Config.model_validate(
        {"state_dir": str(tmp_path), "store": {"enabled": False}}
    )
    assert build_sinks(config) == []


def test_every_entry_names_a_real_section_and_factory() -> None:
    fields = Config.model_fields
    for entry in registry.SINKS:
        assert entry.section in fields, entry
        assert callable(entry.factory)


def test_a_missing_sink_module_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        registry,
        "SINKS",
        (SinkEntry("web", _missing_module),),
    )
    config = Config.model_validate(
        {"state_dir": str(tmp_path), "web": {"enabled": True}}
    )
    with pytest.raises(ConfigError) as info:
        build_sinks(config)
    assert info.value.key == "web.enabled"
    assert "cannot be loaded" in str(info.value)


def test_a_custom_enabled_test_overrides_the_section_switch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        registry,
        "SINKS",
        (
            SinkEntry(
                "store",
                registry.SINKS[0].factory,
                enabled=lambda c: c.save_interval_s == 7,
            ),
        ),
    )
    on = Config.model_validate({"state_dir": str(tmp_path), "save_interval_s": 7})
    off = Config.model_validate({"state_dir": str(tmp_path)})
    assert len(build_sinks(on)) == 1
    assert build_sinks(off) == []
