"""web.customers: a secret per customer, names that exist, no secret shared."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import pytest

from tests.fixtures.configs import load_error
from wattd.config import dump_effective, load_config

if TYPE_CHECKING:
    from pathlib import Path

HEAD = """\
sensors:
  - {address: 1, customer: acme}
  - {address: 2, customer: globex}
web:
  enabled: true
  token: operator-secret
"""


def write(tmp_path: Path, customers: str, head: str = HEAD) -> Path:
    path = tmp_path / "wattd.yaml"
    path.write_text(head + "  customers:\n" + textwrap.indent(customers, "    "))
    return path


def test_each_form_of_secret_is_read_and_check_config_masks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme.token").write_text("acme-from-file\n")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "globex-pw").write_text("globex-from-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    path = write(
        tmp_path,
        f"acme: {{token_file: {tmp_path / 'acme.token'}}}\n"
        "globex: {username: globex, password_credential: globex-pw}\n",
    )
    config = load_config(path)
    acme, globex = config.web.customers["acme"], config.web.customers["globex"]
    assert acme.token is not None
    assert acme.token.get_secret_value() == "acme-from-file"
    assert globex.password is not None
    assert globex.password.get_secret_value() == "globex-from-credential"
    shown = dump_effective(config)
    for secret in ("acme-from-file", "globex-from-credential", "operator-secret"):
        assert secret not in shown
    assert "username: globex" in shown


@pytest.mark.parametrize(
    "entry",
    ["acme: {token: ''}", 'acme: {token: "  "}', "acme: {username: a, password: ''}"],
    ids=["empty token", "blank token", "empty password"],
)
def test_an_empty_secret_is_an_error(tmp_path: Path, entry: str) -> None:
    error = load_error(write(tmp_path, entry + "\n"))
    text = str(error)
    assert "wattd.yaml:8: web.customers.acme." in text, text
    assert "is empty" in text


def test_a_customer_needs_a_secret_and_both_halves_of_a_login(tmp_path: Path) -> None:
    text = str(load_error(write(tmp_path, "acme: {}\n")))
    assert "web.customers.acme" in text
    assert "a customer needs a secret" in text
    text = str(load_error(write(tmp_path, "acme: {username: acme}\n")))
    assert "username and password go together" in text


def test_an_unknown_customer_is_an_error_naming_the_key(tmp_path: Path) -> None:
    text = str(load_error(write(tmp_path, "acme: {token: t1}\ninitech: {token: t2}\n")))
    assert "wattd.yaml:9: web.customers.initech:" in text, text
    assert "'initech' is not the customer of any sensor" in text
    assert "acme, globex" in text


@pytest.mark.parametrize(
    ("customers", "key", "first"),
    [
        (
            "acme: {token: same}\nglobex: {token: same}\n",
            "web.customers.globex.token",
            "customer 'acme'",
        ),
        (
            "acme: {token: operator-secret}\n",
            "web.customers.acme.token",
            "the operator",
        ),
        (
            "acme: {token: t1}\nglobex: {username: g, password: t1}\n",
            "web.customers.globex.password",
            "customer 'acme'",
        ),
    ],
    ids=["two customers", "customer and operator", "a token as a password"],
)
def test_a_shared_secret_is_an_error_that_does_not_show_it(
    tmp_path: Path, customers: str, key: str, first: str
) -> None:
    text = str(load_error(write(tmp_path, customers)))
    assert f"{key}: this secret is already used by {first}" in text, text
    for secret in ("same", "operator-secret", "t1"):
        assert f"'{secret}'" not in text
        assert f" {secret} " not in text


def test_a_shared_user_name_is_an_error(tmp_path: Path) -> None:
    text = str(
        load_error(
            write(
                tmp_path,
                "acme: {username: billing, password: p1}\n"
                "globex: {username: billing, password: p2}\n",
            )
        )
    )
    assert "web.customers.globex.username" in text
    assert "user name 'billing' is already used by customer 'acme'" in text


def test_customers_need_the_operators_credentials(tmp_path: Path) -> None:
    head = HEAD.replace("  token: operator-secret\n", "")
    text = str(load_error(write(tmp_path, "acme: {token: t1}\n", head)))
    assert "customers need the operator's own credentials" in text


def test_a_disabled_web_section_needs_no_operator_secret_file(
    tmp_path: Path,
) -> None:
    head = HEAD.replace("  enabled: true\n", "  enabled: false\n").replace(
        "  token: operator-secret\n", "  token_file: /nonexistent/web.token\n"
    )
    config = load_config(write(tmp_path, "acme: {token: t1}\n", head))
    assert not config.web.enabled
    assert set(config.web.customers) == {"acme"}
