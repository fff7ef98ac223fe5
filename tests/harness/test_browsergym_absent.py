"""Without BrowserGym installed (the main suite's environment), a BrowserGym task id is refused
up front with the command that installs it; the adapter's own tests skip (tests/harness/browsergym_adapter)."""

from __future__ import annotations

import importlib.util

import pytest

from catp_agent.harness.validate import check_tasks

pytestmark = pytest.mark.skipif(importlib.util.find_spec("browsergym") is not None,
                                reason="BrowserGym is installed here")


def test_a_browsergym_task_is_refused_with_the_install_command() -> None:
    with pytest.raises(ValueError, match=r"'browsergym/miniwob.click-button' is a BrowserGym task: BrowserGym is "
                                         r"not installed; install it with `pip install \"catp-agent\[browsergym\]\"`"):
        check_tasks(["browsergym/miniwob.click-button"])


def test_importing_the_adapter_names_the_missing_extra() -> None:
    with pytest.raises(ImportError, match=r"catp-agent\[browsergym\]"):
        import catp_agent.harness.browsergym  # noqa: F401
