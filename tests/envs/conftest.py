"""Shared helpers for the envs tests: skip browser tests when Chromium is missing."""

from __future__ import annotations

import os

import pytest

CHROMIUM = "/usr/bin/chromium"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.path.exists(CHROMIUM):
        return
    skip = pytest.mark.skip(reason=f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)")
    for item in items:
        if "browser" in item.keywords and str(item.fspath).startswith(os.path.dirname(__file__)):
            item.add_marker(skip)


def center(bbox: tuple[int, int, int, int]) -> tuple[int, int]:
    """Centre of an (x, y, w, h) box in screenshot pixels."""
    x, y, w, h = bbox
    return x + w // 2, y + h // 2
