"""How the test helpers pick recorded events: every wanted field is a value to equal or a predicate to pass."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def fields_match(read: Callable[[str], Any], wanted: Mapping[str, Any]) -> bool:
    """True when, for every name in `wanted`, `read(name)` equals the wanted value, or satisfies it when callable."""
    for name, want in wanted.items():
        actual = read(name)
        if callable(want):
            if not want(actual):
                return False
        elif actual != want:
            return False
    return True
