"""What BrowserGym needs from this machine: a recent enough browsergym-core, the system
Chromium, and the MiniWoB++ pages of the installed ``miniwob`` package (offline).

BrowserGym launches two Chromiums per episode: the task's (its ``pw_chromium_kwargs`` would take
an ``executable_path``, but AgentLab's ``EnvArgs`` cannot pass one) and a chat window
(``browsergym.core.chat.Chat``), which launches without any option. Both use the browser that
Playwright finds in its browsers folder, so :func:`use_system_chromium` points Playwright's own
setting for that folder, ``PLAYWRIGHT_BROWSERS_PATH``, at a folder holding a link to the system
Chromium where Playwright expects its build. Nothing of BrowserGym or Playwright is patched.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
from functools import cache
from pathlib import Path
from typing import Any

from packaging.version import Version

__all__ = ["DEFAULT_CHROMIUM", "MIN_BROWSERGYM", "browsergym_env_kwargs", "browsergym_task_ids", "miniwob_url",
           "require_browsergym", "use_system_chromium"]

MIN_BROWSERGYM = (0, 14, 2)
"""The oldest browsergym-core this adapter is tested with (its observation and ``coord`` actions)."""
DEFAULT_CHROMIUM = "/usr/bin/chromium"
BROWSERS_FOLDER = Path.home() / ".cache" / "catp-agent" / "playwright-browsers"
INSTALL = 'pip install "catp-agent[browsergym]"'


def require_browsergym(version: str | None = None) -> str:
    """The installed browsergym-core version; raises when it is missing or older than supported.

    ``version``: check this version string instead of the installed one (for tests).

    Raises:
        ImportError: browsergym-core is not installed, or is older than :data:`MIN_BROWSERGYM`.
    """
    if version is None:
        try:
            version = importlib.metadata.version("browsergym-core")
        except importlib.metadata.PackageNotFoundError:
            raise ImportError(f"BrowserGym is not installed; install it with `{INSTALL}`") from None
    if Version(version).release < MIN_BROWSERGYM:
        need = ".".join(map(str, MIN_BROWSERGYM))
        raise ImportError(f"browsergym-core {version} is older than {need}, the oldest this adapter supports; "
                          f"upgrade with `{INSTALL}` (or pip install 'browsergym-core>={need}')")
    return version


def miniwob_url() -> str:
    """BrowserGym's MiniWoB++ base URL (``MINIWOB_URL``): the installed ``miniwob`` package's pages."""
    from envs.tasks.miniwob import miniwob_html_dir

    root = miniwob_html_dir()
    if root is None:
        raise ModuleNotFoundError("the MiniWoB++ pages are missing; install them with "
                                  "`pip install --no-deps miniwob==1.1.0`")
    return (root / "miniwob").resolve().as_uri() + "/"


@cache
def _expected_executable(browsers_path: str | None) -> str:
    """Where Playwright, with ``PLAYWRIGHT_BROWSERS_PATH`` as given, looks for its Chromium
    (asked of Playwright itself: the layout differs between its versions)."""
    from playwright.sync_api import sync_playwright

    saved = os.environ.get("PLAYWRIGHT_BROWSERS_PATH")
    try:
        if browsers_path is None:
            os.environ.pop("PLAYWRIGHT_BROWSERS_PATH", None)
        else:
            os.environ["PLAYWRIGHT_BROWSERS_PATH"] = browsers_path
        pw = sync_playwright().start()
        try:
            return str(pw.chromium.executable_path)
        finally:
            pw.stop()
    finally:
        if saved is None:
            os.environ.pop("PLAYWRIGHT_BROWSERS_PATH", None)
        else:
            os.environ["PLAYWRIGHT_BROWSERS_PATH"] = saved


def use_system_chromium(executable_path: str = DEFAULT_CHROMIUM, folder: Path = BROWSERS_FOLDER) -> Path:
    """Make every Chromium that BrowserGym launches in this process (and in processes it starts
    later) the system one; return the Chromium Playwright will launch.

    If Playwright already finds a browser of its own, nothing changes. Otherwise
    ``PLAYWRIGHT_BROWSERS_PATH`` is set to ``folder/<playwright version>``, holding a link to
    ``executable_path`` where Playwright looks. Call it before BrowserGym starts its Playwright
    (its first ``reset()``): a driver already running keeps the folder it started with.

    Raises:
        FileNotFoundError: ``executable_path`` does not exist (install Chromium with apt-get).
    """
    found = shutil.which(executable_path) or (executable_path if os.path.isfile(executable_path) else None)
    if found is None:
        raise FileNotFoundError(f"Chromium was not found at {executable_path!r}; install it with "
                                "`apt-get install -y chromium` or pass the path of yours")
    current = _expected_executable(os.environ.get("PLAYWRIGHT_BROWSERS_PATH"))
    if os.path.isfile(current):
        return Path(current)
    ours = folder / importlib.metadata.version("playwright")
    expected = Path(_expected_executable(str(ours)))
    if expected.resolve() != Path(found).resolve():
        expected.parent.mkdir(parents=True, exist_ok=True)
        if expected.is_symlink() or expected.exists():
            expected.unlink()
        expected.symlink_to(Path(found).resolve())
    os.environ["PLAYWRIGHT_BROWSERS_PATH"] = str(ours)
    return expected


def _benchmark(task_id: str) -> str:
    """``browsergym/miniwob.click-button`` -> ``miniwob``."""
    if not task_id.startswith("browsergym/") or "." not in task_id:
        raise ValueError(f"a BrowserGym task id looks like 'browsergym/miniwob.click-button', got {task_id!r}")
    return task_id.removeprefix("browsergym/").split(".", 1)[0]


def _register(benchmark: str) -> None:
    require_browsergym()
    try:
        importlib.import_module(f"browsergym.{benchmark}")
    except ModuleNotFoundError as exc:
        raise ValueError(f"BrowserGym benchmark {benchmark!r} is not installed ({exc.name} is missing); "
                         f"install browsergym-{benchmark}") from None


def browsergym_task_ids(benchmark: str = "miniwob") -> list[str]:
    """The registered gymnasium ids of one installed BrowserGym benchmark, sorted."""
    import gymnasium

    _register(benchmark)
    return sorted(t for t in gymnasium.registry if t.startswith(f"browsergym/{benchmark}."))


def browsergym_env_kwargs(task_id: str, *, viewport: tuple[int, int] | None = None,
                          executable_path: str = DEFAULT_CHROMIUM, headless: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``gymnasium.make(task_id, ...)`` on this machine: the system
    Chromium, MiniWoB++ pages from the ``miniwob`` package, a viewport override if given.
    Registers the task's benchmark (imports ``browsergym.<benchmark>``)."""
    benchmark = _benchmark(task_id)
    _register(benchmark)
    kwargs: dict[str, Any] = {"headless": headless, "pw_chromium_kwargs": {"executable_path": executable_path}}
    if benchmark == "miniwob":
        kwargs["task_kwargs"] = {"base_url": miniwob_url()}
    if viewport is not None:
        kwargs["viewport"] = {"width": int(viewport[0]), "height": int(viewport[1])}
    return kwargs
