"""Missing test dependencies skip locally but fail in CI (CI=true), so a green CI means they ran."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """Whether the tests run under CI."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip the test (fail under CI) unless ``condition`` holds."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"missing test dependency in CI: {reason}")
    pytest.skip(reason)


def require_executable(name: str) -> str:
    """The path of executable ``name``; skip (fail under CI) when it is not installed."""
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed")
    assert path is not None
    return path
