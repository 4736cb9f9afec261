"""The README's configuration table is OPTIONS: every option has its row, and every row an option."""

from __future__ import annotations

import re
from pathlib import Path

from hub.config import OPTIONS

README = Path(__file__).resolve().parents[2] / "README.md"


def _rows() -> dict[str, tuple[str, str]]:
    rows = re.findall(r"^\| `(--[a-z-]+)` \| `(HUB_[A-Z_]+)` \| ([^|]+) \|", README.read_text(), re.M)
    return {flag: (env, default.strip()) for flag, env, default in rows}


def test_every_option_has_a_row_with_its_variable_and_default() -> None:
    rows = _rows()
    for option in OPTIONS:
        assert option.flag in rows, f"README configuration table lacks {option.flag}"
        env, default = rows[option.flag]
        assert env == option.env
        if option.default is not None:
            shown = default.strip("`")
            expected = option.default
            assert type(expected)(shown) == expected, f"{option.flag}: README says {shown}, OPTIONS {expected}"


def test_every_row_is_an_option() -> None:
    assert set(_rows()) == {option.flag for option in OPTIONS}
