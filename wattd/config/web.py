"""Customer access to the web dashboard: one secret per customer.

A customer logs in with its own bearer token or basic-auth user and password
and then sees only the meters whose ``customer`` is its name. The secrets
follow the usual rules (value, ``${ENV}``, ``*_file`` or ``*_credential``;
never blank). Which names exist and whether two secrets collide can only be
told with the sensors and the operator's credentials in view, so those checks
run over the whole file (:func:`customer_access_errors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import Field, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from wattd.config.base import CredentialName, Secret, _known, _load_secret_pairs, _Model

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from pydantic import SecretStr

__all__ = ["CustomerAccess", "customer_access_errors"]


class CustomerAccess(_Model):
    """One customer's credentials: a bearer token, basic auth, or both."""

    token: Secret | None = None
    token_file: Path | None = None
    token_credential: CredentialName | None = None
    username: str | None = Field(default=None, min_length=1)
    password: Secret | None = None
    password_file: Path | None = None
    password_credential: CredentialName | None = None

    @model_validator(mode="after")
    def _load_secrets(self) -> Self:
        _load_secret_pairs(self, ("token", "password"))
        if (self.username is None) != (self.password is None):
            msg = "username and password go together; set both or neither"
            raise ValueError(msg)
        if self.username is not None and not self.username.strip():
            msg = "username is blank; give the name the customer logs in with"
            raise ValueError(msg)
        if self.token is None and self.username is None:
            msg = (
                "a customer needs a secret: token (or token_file, token_credential),"
                " or username and password (or password_file, password_credential)"
            )
            raise ValueError(msg)
        return self


def _given_key(model: _Model, field: str) -> str:
    """Which of ``field``, ``field_file`` or ``field_credential`` the file set."""
    for key in (f"{field}_file", f"{field}_credential"):
        if key in model.model_fields_set:
            return key
    return field


def _secrets(
    operator: _Model, customers: Mapping[str, CustomerAccess]
) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """Every configured secret as (location, who, value)."""
    owners: list[tuple[tuple[str | int, ...], str, _Model]] = [
        (("web",), "the operator", operator)
    ]
    owners += [
        (("web", "customers", name), f"customer {name!r}", access)
        for name, access in customers.items()
    ]
    for loc, who, model in owners:
        for field in ("token", "password"):
            secret: SecretStr | None = getattr(model, field, None)
            if secret is not None:
                key = _given_key(model, field)
                yield (*loc, key), who, secret.get_secret_value().strip()


def customer_access_errors(
    web: Any, sensor_customers: Mapping[str, int]
) -> list[InitErrorDetails]:
    """Unknown customer names, repeated user names and secrets shared by two.

    ``web`` is the :class:`~wattd.config.sinks.WebConfig`; ``sensor_customers``
    maps each sensor ``customer`` to the index of its first sensor. A shared
    secret would make the server guess who is asking, so none may repeat,
    neither between customers nor with the operator's. Messages name the keys,
    never the secrets.
    """
    out: list[InitErrorDetails] = []

    def bad(loc: tuple[str | int, ...], msg: str) -> None:
        error = PydanticCustomError("value_error", msg)
        out.append(InitErrorDetails(type=error, loc=loc, input=str(loc[-1])))

    customers: Mapping[str, CustomerAccess] = web.customers
    for name in customers:
        if name not in sensor_customers:
            bad(
                ("web", "customers", name),
                f"customer {name!r} is not the customer of any sensor"
                f" (sensors[].customer {_known(sensor_customers)}); fix the name"
                " or set it on the customer's sensors",
            )
    seen_values: dict[str, tuple[tuple[str | int, ...], str]] = {}
    for loc, who, value in _secrets(web, customers):
        first = seen_values.get(value)
        if first is not None:
            where = ".".join(str(p) for p in first[0])
            bad(
                loc,
                f"this secret is already used by {first[1]} ({where}); every"
                " customer needs a secret of its own",
            )
        else:
            seen_values[value] = (loc, who)
    users: dict[str, str] = {}
    if web.username:
        users[web.username] = "the operator"
    for name, access in customers.items():
        if access.username is None:
            continue
        first_user = users.get(access.username)
        if first_user is not None:
            bad(
                ("web", "customers", name, "username"),
                f"user name {access.username!r} is already used by {first_user};"
                " each login needs a name of its own",
            )
        else:
            users[access.username] = f"customer {name!r}"
    return out
