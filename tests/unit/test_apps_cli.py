"""`hub apps` argument handling: field=value pairs."""

from __future__ import annotations

import pytest

from hub.apps import ConfigError
from hub.apps_cli import parse_fields


def test_values_are_json_when_they_parse_and_text_otherwise() -> None:
    assert parse_fields(["enabled=false", "max_connections=5", "webhooks=[]", "name=plain text"]) == {
        "enabled": False,
        "max_connections": 5,
        "webhooks": [],
        "name": "plain text",
    }


def test_ids_keys_and_secrets_stay_text_even_when_numeric() -> None:
    assert parse_fields(["id=7", "key=123", "secret=true"]) == {"id": "7", "key": "123", "secret": "true"}


def test_a_value_may_contain_equals_signs() -> None:
    assert parse_fields(["secret=a=b"]) == {"secret": "a=b"}


@pytest.mark.parametrize("pair", ["enabled", "=5"])
def test_a_pair_without_a_field_name_or_equals_sign_is_refused(pair: str) -> None:
    with pytest.raises(ConfigError, match="expected field=value"):
        parse_fields([pair])
