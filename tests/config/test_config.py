from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.fixtures.configs import load_error
from tests.fixtures.paths import REPO_ROOT
from wattd.config import Config, dump_effective, load_config, parse_config
from wattd.errors import ConfigError, ConfigErrors

EXAMPLE = REPO_ROOT / "config" / "wattd.example.yaml"


def write(tmp_path: Path, text: str, name: str = "wattd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_example_config_validates() -> None:
    config = load_config(EXAMPLE)
    assert config.ports[0].device.startswith("/dev/serial/by-id/")
    assert {s.display_name for s in config.sensors} == {"web-1", "fridge"}
    assert config.sensor_map()[2].counts_per_volt == pytest.approx(2.05)
    assert config.sensor_map()[1].metadata() == {
        "rack": "A",
        "customer": "acme",
        "location": "dc-north",
        "pdu": "pdu-a1",
        "outlet": "3",
    }


def test_example_documents_every_top_level_section() -> None:
    text = EXAMPLE.read_text()
    for key in Config.model_fields:
        # Set, or shown commented out with its explanation.
        assert f"\n{key}:" in text or f"\n# {key}:" in text, key


def test_a_config_of_just_a_port_is_enough(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "ports: [{device: /dev/ttyUSB0}]\n"))
    assert [p.device for p in config.ports] == ["/dev/ttyUSB0"]
    assert config.ports[0].baud == 9600
    assert config.ports[0].api_mode == 1
    assert config.store.enabled
    assert config.sensors == []


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        ports:
          - device: /dev/ttyUSB0
        sensors:
          - address: 1
            name: "fridge
        """,
    )
    err = load_error(path)
    text = str(err)
    assert text.startswith(f"{path}:")
    assert "not valid YAML" in text
    assert "line 5" in text  # where the unclosed quote starts
    assert err.line is not None


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        ports:
          - device: /dev/ttyUSB0
            baudrate: 9600
        """,
    )
    err = load_error(path)
    assert str(err) == (
        f"{path}:3: ports[0].baudrate: unknown key 'baudrate'; did you mean 'baud'?"
    )


def test_unknown_key_without_close_match_lists_allowed_keys(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "energy:\n  zzz: 1\n"))
    assert err.line == 2
    assert "allowed keys: max_gap_s" in str(err)


def test_wrong_type_says_what_is_expected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        ports:
          - device: /dev/ttyUSB0
        sensors:
          - address: 1
            current_zero: lots
        """,
    )
    err = load_error(path)
    assert err.line == 5
    assert err.key == "sensors[0].current_zero"
    assert "valid number" in str(err)
    assert "'lots'" in str(err)


def test_bad_value_names_the_allowed_values(tmp_path: Path) -> None:
    err = load_error(
        write(tmp_path, "ports:\n  - device: /dev/ttyUSB0\n    api_mode: 3\n")
    )
    assert err.line == 3
    assert err.key == "ports[0].api_mode"
    assert "1 or 2" in str(err)
    assert "got 3" in str(err)


def test_out_of_range_value(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "save_interval_s: 0.1\n"))
    assert err.line == 1
    assert "greater than or equal to 1" in str(err)


def test_aggregation_defaults_to_every_reading_and_is_bounded(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path, "ports: [{device: /dev/ttyUSB0}]\n"))
    assert config.mqtt.aggregate_s == 0
    assert config.influxdb.aggregate_s == 0
    config = load_config(
        write(tmp_path, "mqtt: {aggregate_s: 60}\ninfluxdb: {aggregate_s: 10}\n")
    )
    assert (config.mqtt.aggregate_s, config.influxdb.aggregate_s) == (60, 10)
    err = load_error(write(tmp_path, "mqtt:\n  aggregate_s: 7200\n"))
    assert (err.line, err.key) == (2, "mqtt.aggregate_s")
    assert "less than or equal to 3600" in str(err)
    err = load_error(write(tmp_path, "influxdb:\n  aggregate_s: -1\n"))
    assert (err.line, err.key) == (2, "influxdb.aggregate_s")
    assert "greater than or equal to 0" in str(err)


def test_missing_required_key_points_at_its_entry(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "ports:\n  - baud: 9600\n"))
    assert err.line == 2
    assert err.key == "ports[0].device"
    assert "required key is missing" in str(err)


def test_duplicate_sensor_points_at_the_duplicate_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        ports:
          - device: /dev/ttyUSB0
        sensors:
          - address: 1
            name: fridge
          - address: 2
            name: lamp
          - address: 0x0001
            name: kettle
        """,
    )
    err = load_error(path)
    assert err.line == 8  # the third entry, the one that repeats
    assert err.key == "sensors[2].address"
    assert "repeats sensors[0]" in str(err)


def test_duplicate_sensor_name_and_port(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        ports:
          - device: /dev/ttyUSB0
          - device: /dev/ttyUSB0
        sensors:
          - address: 1
            name: fridge
          - address: 2
            name: fridge
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    found = {(e.key, e.line) for e in info.value.errors}
    assert found == {("ports[1].device", 3), ("sensors[1].name", 8)}


def test_missing_env_var_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATTD_TEST_UNSET", raising=False)
    path = write(
        tmp_path,
        """
        mqtt:
          enabled: true
          username: wattd
          password: ${WATTD_TEST_UNSET}
        """,
    )
    err = load_error(path)
    assert err.line == 4
    assert err.key == "mqtt.password"
    assert "WATTD_TEST_UNSET is not set" in str(err)


def test_env_var_is_expanded_and_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTD_TEST_PW", "s3cret-pass")
    monkeypatch.setenv("WATTD_TEST_HOST", "broker.example")
    path = write(
        tmp_path,
        """
        mqtt:
          enabled: true
          host: ${WATTD_TEST_HOST}
          username: wattd
          password: ${WATTD_TEST_PW}
        """,
    )
    config = load_config(path)
    assert config.mqtt.host == "broker.example"
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "s3cret-pass"
    dumped = dump_effective(config)
    assert "s3cret-pass" not in dumped
    assert "host: broker.example" in dumped
    assert "s3cret-pass" not in repr(config)


def test_unreadable_secret_file_points_at_its_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        mqtt:
          enabled: true
          username: wattd
          password_file: /nonexistent/wattd-secret
        """,
    )
    err = load_error(path)
    assert err.line == 4
    assert err.key == "mqtt.password_file"
    assert "cannot read /nonexistent/wattd-secret" in str(err)


def test_secret_file_is_read_and_never_printed(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("file-secret-123\n")
    config = load_config(
        write(
            tmp_path,
            f"mqtt:\n  enabled: true\n  username: u\n  password_file: {secret}\n",
        )
    )
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == "file-secret-123"
    assert "file-secret-123" not in dump_effective(config)


def test_secret_values_are_never_echoed_in_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTD_TEST_TOKEN", "tok-XYZ-987")
    # Wrong types for secret keys: the message must not quote the value.
    path = write(
        tmp_path,
        """
        mqtt:
          username: u
          password: [tok-XYZ-987]
        influxdb:
          token: {value: "${WATTD_TEST_TOKEN}"}
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert {e.key for e in info.value.errors} == {"mqtt.password", "influxdb.token"}
    assert "tok-XYZ-987" not in str(info.value)


def test_empty_file_is_a_valid_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert isinstance(config, Config)
    assert config.ports == []


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "- just\n- a list\n"))
    assert "top level must be a mapping" in str(err)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    err = load_error(tmp_path / "nope.yaml")
    assert "not found" in str(err)
    assert "wattd.example.yaml" in str(err)


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(
            "ports:\n  - device: /dev/x\n    baud: 7\nsave_interval_s: -1\n", "c.yaml"
        )
    lines = sorted(e.line or 0 for e in info.value.errors)
    assert lines == [3, 4]


def test_bad_indentation_is_a_yaml_error_with_line(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "ports:\n  - device: /dev/x\n   baud: 9600\n"))
    assert err.line == 3
    assert "not valid YAML" in str(err)


def test_a_disabled_section_reads_no_secret_files(tmp_path: Path) -> None:
    text = (
        "mqtt:\n  enabled: false\n  username: u\n"
        f"  password_file: {tmp_path / 'absent'}\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.mqtt.password is None
    with pytest.raises(ConfigError, match="absent"):
        load_config(write(tmp_path, text.replace("false", "true")))


def test_sensor_meta_is_shared_per_config_and_read_only() -> None:
    config = load_config(EXAMPLE)
    meta = config.sensor_meta()
    assert meta is config.sensor_meta()
    name, labels = meta[1]
    assert (name, dict(labels)) == ("web-1", config.sensor_map()[1].metadata())
    with pytest.raises(TypeError):
        labels["rack"] = "B"  # type: ignore[index]
    renamed = config.model_copy(
        update={"sensors": [config.sensors[0].model_copy(update={"name": "oven"})]}
    )
    assert renamed.sensor_meta()[1][0] == "oven"
    assert 2 not in renamed.sensor_meta()
    # Back to the first config: its names again, not the other one's.
    assert config.sensor_meta()[1][0] == "web-1"


def test_syntax_errors_keep_their_line_after_the_fast_parse(tmp_path: Path) -> None:
    path = write(tmp_path, "ports:\n  - device: /dev/ttyUSB0\n   baud: 9600\n")
    error = load_error(path)
    assert error.line == 3
    assert "not valid YAML" in str(error)


def test_a_key_given_twice_names_both_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        mqtt:
          enabled: false
        ports:
          - device: /dev/ttyUSB0
        sensors:
          - address: 1
            counts_per_amp: 15.5
            counts_per_amp: 16
        mqtt:
          host: broker
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    assert [str(e) for e in info.value.errors] == [
        f"{path}:8: sensors[0].counts_per_amp: key 'counts_per_amp' is given twice,"
        " on lines 7 and 8; YAML would keep only the last, so remove one",
        f"{path}:9: mqtt: key 'mqtt' is given twice, on lines 1 and 9; YAML would"
        " keep only the last, so remove one",
    ]


def test_a_key_given_twice_on_one_line(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "sensors: [{address: 1, name: a, name: b}]\n"))
    assert (err.line, err.key) == (1, "sensors[0].name")
    assert "given twice, on line 1" in str(err)


def test_a_merge_may_be_overridden_without_a_repeat_error(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            sensors:
              - &one {address: 1, name: one, rack: A}
              - {<<: *one, address: 2, name: two}
            """,
        )
    )
    assert [(s.name, s.rack) for s in config.sensors] == [("one", "A"), ("two", "A")]


def test_a_key_at_the_wrong_level_says_where_it_belongs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        summaries:
          destinations:
            webhook: {enabled: true, url: "https://hooks.example/x"}
        """,
    )
    assert str(load_error(path)) == (
        f"{path}:3: summaries.destinations.webhook: unknown key 'webhook';"
        " 'webhook' belongs under summaries.<name>.destinations"
    )
    err = load_error(write(tmp_path, "baud: 9600\nsensors: [{address: 1, baud: 1}]\n"))
    assert isinstance(err, ConfigErrors)
    assert [e.message for e in err.errors] == [
        "unknown key 'baud'; 'baud' belongs under ports[n]",
        "unknown key 'baud'; 'baud' belongs under ports[n]",
    ]


def test_unknown_keys_under_named_entries_get_suggestions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        tariffs:
          plans:
            home:
              price_per_kwhh: 0.30
        locations:
          dc-1: {tarif: home}
        """,
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    found = {(e.line, e.key, e.message) for e in info.value.errors}
    assert (
        4,
        "tariffs.plans.home.price_per_kwhh",
        "unknown key 'price_per_kwhh'; did you mean 'price_per_kwh'?",
    ) in found
    assert (
        6,
        "locations.dc-1.tarif",
        "unknown key 'tarif'; did you mean 'tariff'?",
    ) in found


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("store:\n  readings_retention_days: .inf\n", "store.readings_retention_days"),
        ("mains: {nominal_vrms: .nan}\n", "mains.nominal_vrms"),
        ("sensors: [{address: 1, current_zero: -.inf}]\n", "sensors[0].current_zero"),
        ("save_interval_s: .inf\n", "save_interval_s"),
        (
            "tariffs: {plans: {home: {price_per_kwh: .nan}}}\n",
            "tariffs.plans.home.price_per_kwh",
        ),
    ],
)
def test_numbers_must_be_finite(tmp_path: Path, text: str, key: str) -> None:
    err = load_error(write(tmp_path, text))
    assert err.key == key
    assert "Input should be a finite number" in err.message


def test_a_long_value_is_cut_in_the_message(tmp_path: Path) -> None:
    name = "x" * 1_000_000
    path = write(
        tmp_path,
        f"sensors:\n  - address: 1\n    name: {name}\n  - address: {'y' * 500}\n"
        f"tariffs: {{timezone: {'z' * 5000}}}\n",
    )
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    messages = {e.key: e.message for e in info.value.errors}
    assert messages["sensors[0].name"] == (
        "String should have at most 64 characters (got"
        f" {'x' * 80!r}… (1,000,000 characters))"
    )
    assert messages["sensors[1].address"].startswith(
        f"address {'y' * 80!r}… (500 characters) is not a number"
    )
    assert messages["tariffs.timezone"].startswith(
        f"unknown timezone {'z' * 80!r}… (5,000 characters); use an IANA name"
    )
    assert max(len(str(e)) for e in info.value.errors) < 400
