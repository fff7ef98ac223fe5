"""Our envs on every Playwright from BrowserGym's pin (1.44) up: ``launch(artifacts_dir=)`` only
where the installed Playwright has it. CI's compat stage runs this (and its browser episodes) on
playwright 1.44, the main suite on the pinned 1.65."""

from __future__ import annotations

import importlib.metadata
import inspect
from pathlib import Path

import pytest
from packaging.version import Version
from playwright.sync_api import BrowserType

from envs.browser import artifacts_option

pytestmark = pytest.mark.compat


def test_artifacts_dir_is_passed_only_to_a_launch_that_takes_it(tmp_path: Path) -> None:
    def newer(*, executable_path: str = "", artifacts_dir: str | None = None) -> None: ...

    def older(*, executable_path: str = "") -> None: ...

    assert artifacts_option(newer, tmp_path) == {"artifacts_dir": str(tmp_path)}
    assert artifacts_option(older, tmp_path) == {}


def test_the_installed_playwright_gets_the_option_exactly_when_it_has_it(tmp_path: Path) -> None:
    has = "artifacts_dir" in inspect.signature(BrowserType.launch).parameters
    assert artifacts_option(BrowserType.launch, tmp_path) == ({"artifacts_dir": str(tmp_path)} if has else {})
    version = Version(importlib.metadata.version("playwright"))
    if version >= Version("1.59"):
        assert has, f"playwright {version} should take artifacts_dir"
    if version < Version("1.45"):
        assert not has, f"playwright {version}: the fallback is what runs here"
