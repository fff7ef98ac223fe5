"""The layering of the packages, checked on the source and on real imports.

Lowest first; a module may import its own layer and the layers above it in this list, never
one below it:

    pruning    catp_agent.pruning, catp_agent.records     torch only
    methods    catp_agent.methods                         torch only
    models     catp_agent.models                          + transformers
    engine     catp_agent.engine, catp_agent.prune        the hooks
    agent      catp_agent.agent                           history, prompt, signals, step report
    catp_agent the package itself                         lazy re-exports of the layers above
    envs       envs                                       gymnasium + playwright only
    policies   policies                                   -> catp_agent (not harness), envs' types
    harness    catp_agent.harness                         -> everything; nothing imports it

Every module of catp_agent/, envs/ and policies/ is read with ``ast`` (imports inside functions
included, and module paths named in strings such as entry points, marked "by name"), so a
lazy import cannot hide a dependency. A failure lists one line per offence:
``path:line  module -> imported module  (why)``.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("catp_agent", "envs", "policies")

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pruning", ("catp_agent.pruning", "catp_agent.records")),
    ("methods", ("catp_agent.methods",)),
    ("models", ("catp_agent.models",)),
    ("engine", ("catp_agent.engine", "catp_agent.prune")),
    ("agent", ("catp_agent.agent",)),
    ("catp_agent", ()),  # the package __init__ alone (see layer_of)
    ("envs", ("envs",)),
    ("policies", ("policies",)),
    ("harness", ("catp_agent.harness",)),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}

THIRD_PARTY_BANNED: dict[str, tuple[str, ...]] = {
    "pruning": ("transformers", "gymnasium", "playwright"),
    "methods": ("transformers", "gymnasium", "playwright"),
    "models": ("gymnasium", "playwright"),
    "engine": ("gymnasium", "playwright"),
    "agent": ("gymnasium", "playwright"),
    "catp_agent": ("gymnasium", "playwright"),
    "envs": ("torch", "transformers"),
}
"""Per layer, the third-party packages it may not import (envs: gymnasium and playwright only)."""

_MODULE_NAME = re.compile(r"(?:catp_agent|envs|policies)(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_][\w.]*)?")


@dataclass(frozen=True)
class Import:
    """One import in the source: ``module`` (at ``path:line``) imports ``target``."""

    module: str
    path: str
    line: int
    target: str
    by_name: bool = False  # a module path in a string (entry point, lazy export), not an import statement

    def describe(self, why: str) -> str:
        how = " (by name)" if self.by_name else ""
        return f"{self.path}:{self.line}  {self.module} -> {self.target}{how}  ({why})"


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _module_files()


def layer_of(module: str) -> str | None:
    """The layer of one of our modules (None: not ours, or not assigned to a layer)."""
    if module == "catp_agent":
        return "catp_agent"
    best: tuple[int, str] | None = None
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), name)
    return best[1] if best else None


def _is_ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _resolve_from(module: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    """The modules a ``from X import a, b`` brings in: X.a where that is a module, else X."""
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    targets = []
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        targets.append(sub if sub in MODULES else source)
    return targets


def _imports_of(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = str(path.relative_to(ROOT))
    is_package = path.name == "__init__.py"
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, rel, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [Import(module, rel, node.lineno, t) for t in _resolve_from(module, node, is_package)]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and _MODULE_NAME.fullmatch(node.value)):
            target = node.value.split(":")[0]
            while target not in MODULES and "." in target:  # "pkg.module.attr" -> "pkg.module"
                target = target.rsplit(".", 1)[0]
            if target in MODULES:
                found.append(Import(module, rel, node.lineno, target, by_name=True))
    return found


IMPORTS: list[Import] = [imp for module, path in MODULES.items() for imp in _imports_of(module, path)]


def _fail(lines: list[str], rule: str) -> None:
    if lines:
        pytest.fail(f"{rule}: {len(lines)} offending import(s)\n" + "\n".join(sorted(set(lines))), pytrace=False)


# ----------------------------------------------------------------------------------- source rules
def test_every_module_has_a_layer() -> None:
    lines = [f"{MODULES[m].relative_to(ROOT)}  {m} is in no layer: add its package to LAYERS in {Path(__file__).name}"
             for m in MODULES if layer_of(m) is None]
    _fail(lines, "modules without a layer")


def test_no_layer_imports_a_layer_above_it() -> None:
    lines = []
    for imp in IMPORTS:
        source, target = layer_of(imp.module), layer_of(imp.target) if _is_ours(imp.target) else None
        if source and target and RANK[target] > RANK[source]:
            lines.append(imp.describe(f"layer {source} may not import layer {target}"))
    _fail(lines, "a lower layer imports a higher one")


def test_layers_import_only_their_third_party_packages() -> None:
    lines = []
    for imp in IMPORTS:
        layer, top = layer_of(imp.module), imp.target.split(".")[0]
        if top in THIRD_PARTY_BANNED.get(layer or "", ()):
            lines.append(imp.describe(f"layer {layer} may not import {top}"))
    _fail(lines, "a layer imports a third-party package it must not")


def test_envs_imports_no_torch_and_none_of_our_other_packages() -> None:
    banned = ("torch", "transformers", "catp_agent", "policies")
    lines = [imp.describe("envs is gymnasium + playwright only") for imp in IMPORTS
             if layer_of(imp.module) == "envs" and imp.target.split(".")[0] in banned]
    _fail(lines, "envs imports torch, transformers, catp_agent or policies")


def test_nothing_but_tests_and_scripts_imports_the_harness() -> None:
    lines = [imp.describe("only tests/ and scripts/ may import catp_agent.harness") for imp in IMPORTS
             if layer_of(imp.module) != "harness" and (imp.target == "catp_agent.harness" or imp.target.startswith("catp_agent.harness."))]
    _fail(lines, "the harness is imported from below")


TOP_LEVEL = ("catp_agent core", "envs", "policies", "harness")
"""The top-level parts, lowest first (the harness counts on its own)."""


def _package_of(module: str) -> str:
    layer = layer_of(module)
    return layer if layer in TOP_LEVEL else "catp_agent core"


def test_no_two_top_level_packages_import_each_other() -> None:
    """For each pair that imports both ways, the imports from the lower part to the higher one
    are listed: those are the ones to remove."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in IMPORTS:
        if _is_ours(imp.target) and layer_of(imp.target):
            a, b = _package_of(imp.module), _package_of(imp.target)
            if a != b:
                edges.setdefault((a, b), []).append(imp)
    lines = []
    for (low, high), imports in edges.items():
        if TOP_LEVEL.index(low) < TOP_LEVEL.index(high) and (high, low) in edges:
            back = edges[(high, low)][0]
            lines += [imp.describe(f"{low} <-> {high}: {high} imports {low}, e.g. {back.path}:{back.line}")
                      for imp in imports]
    _fail(lines, "two top-level packages import each other")


def test_the_scan_sees_lazy_and_relative_imports() -> None:
    """The rules above are only as good as the scan: it must see imports inside functions,
    relative imports and module paths named in strings."""
    policies_base = {imp.target for imp in IMPORTS if imp.module == "policies.base"}
    assert "policies.vlm" in policies_base  # imported inside _load_builtin()
    pruning = {imp.target for imp in IMPORTS if imp.module == "catp_agent.pruning"}
    assert "catp_agent.pruning.stage1" in pruning  # from .stage1 import ...
    envs_init = {(imp.target, imp.by_name) for imp in IMPORTS if imp.module == "envs"}
    assert ("envs.web_env", True) in envs_init  # ENTRY_POINT = "envs.web_env:WebEnv"
    assert layer_of("catp_agent.pruning.stage1") == "pruning" and layer_of("catp_agent.harness.cli") == "harness"
    assert layer_of("catp_agent") == "catp_agent" and layer_of("catp_agent.nowhere") is None


# ---------------------------------------------------------------------------------- real imports
_PROBE = r"""
import json, sys, traceback
BANNED = set(json.loads(sys.argv[1]))
ROOT = sys.argv[2]
first = {}

class Watch:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in BANNED and top not in first:
            chain = [f"{f.filename[len(ROOT) + 1:]}:{f.lineno}  {(f.line or '').strip()}"
                     for f in traceback.extract_stack()[:-1]
                     if f.filename.startswith(tuple(f"{ROOT}/{p}/" for p in ("catp_agent", "envs", "policies")))]
            first[top] = chain or ["<command>"]
        return None

sys.meta_path.insert(0, Watch())
exec(sys.argv[3])
print(json.dumps({m: first.get(m, ["(already imported)"]) for m in sorted(BANNED) if m in sys.modules}))
"""

IMPORT_CHECKS = [
    pytest.param("import catp_agent.pruning", ("transformers", "gymnasium", "playwright"), id="pruning-no-transformers"),
    pytest.param("import catp_agent.records", ("transformers", "gymnasium", "playwright"), id="records-no-transformers"),
    pytest.param("import catp_agent.methods", ("transformers", "gymnasium", "playwright"), id="methods-no-transformers"),
    pytest.param("import envs", ("torch", "transformers", "catp_agent", "policies", "playwright"), id="envs-no-torch"),
    pytest.param("import catp_agent", ("torch", "transformers", "gymnasium", "playwright", "envs", "browsergym", "agentlab"),
                 id="catp_agent-lazy"),
    pytest.param("import catp_agent.harness.evaluation, catp_agent.harness.cli, policies.vlm",
                 ("playwright", "browsergym", "agentlab"), id="harness-no-browsergym"),
    pytest.param("from catp_agent.harness.cli import main; main(['tasks'])", ("torch", "transformers"),
                 id="tasks-command-no-torch"),
]


@pytest.mark.parametrize(("code", "banned"), IMPORT_CHECKS)
def test_real_imports_stay_light(code: str, banned: tuple[str, ...]) -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(banned), str(ROOT), code],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"`{code}` failed:\n{done.stderr[-3000:]}", pytrace=False)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    if loaded:
        report = [f"{name}, first imported via:\n    " + "\n    ".join(chain) for name, chain in loaded.items()]
        pytest.fail(f"`{code}` imported " + "\n".join(report), pytrace=False)
