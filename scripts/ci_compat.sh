#!/usr/bin/env bash
# CI's compatibility and wheel stage (.ci/run runs it after the main suite; run it on its own with
# `bash scripts/ci_compat.sh` after `make setup`). What a user with an environment of their own does:
#
#   1. a fresh virtual environment (.venv-compat) that already holds the oldest versions
#      pyproject.toml admits, as far as they install here (constraints-lowest.txt: transformers
#      5.17, torch 2.13.0 as the oldest CPU wheel this machine has, ...);
#   2. `python -m build` makes the wheel and the sdist (dist/);
#   3. the wheel is installed into that environment with its [browsergym] extra (BrowserGym
#      0.14.x, which pins playwright 1.44, the lowest here) with plain pip, no constraints: pip
#      must keep every package that was there (checked: the same versions before and after), and
#      `pip check` must be clean before the MiniWoB++ pages go in with --no-deps;
#   4. from an empty folder (no source tree on sys.path) the installed console script lists the
#      tasks and plays one short episode with the bundled model and pages (package data);
#   5. the compatibility subset (`pytest -m compat`: the pruning core on every family, the agent
#      step, the checkpoint tests, one browser episode, and the BrowserGym adapter's tests, which
#      skip where BrowserGym is absent) runs against the installed package on playwright 1.44
#      (our envs' whole test set on 1.44: not yet, see the end).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PY:-python3}
VENV="$ROOT/.venv-compat"
BUILDER="$ROOT/.venv/bin/python"   # `make setup`'s environment has `build` (the test extra)

echo "compat: 1/5 an environment with the oldest supported versions ($VENV)"
rm -rf "$VENV" "$ROOT/dist"
"$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q -r constraints-lowest.txt
$PIP freeze > "$VENV/before.txt"

echo "compat: 2/5 python -m build (wheel and sdist)"
"$BUILDER" -m build --outdir "$ROOT/dist" "$ROOT" > "$VENV/build.log" 2>&1 || { tail -30 "$VENV/build.log"; exit 1; }
WHEEL=$(ls "$ROOT"/dist/catp_agent-*.whl)
ls "$ROOT"/dist/catp_agent-*.tar.gz > /dev/null

echo "compat: 3/5 pip install $(basename "$WHEEL")[test,browsergym] into it: pip must keep what is there"
$PIP install -q "$WHEEL[test,browsergym]"
$PIP check
$PIP install -q --no-deps -c constraints.txt miniwob   # the MiniWoB++ pages, as `make setup` installs them
$PIP freeze > "$VENV/after.txt"
"$VENV/bin/python" - "$VENV/before.txt" "$VENV/after.txt" <<'EOF'
import sys
before, after = ({line.split("==")[0].lower(): line.strip() for line in open(p) if "==" in line} for p in sys.argv[1:])
changed = [f"{before[k]} -> {after.get(k, 'removed')}" for k in before if after.get(k) != before[k]]
if changed:
    sys.exit("compat: pip replaced packages the environment already had: " + "; ".join(changed))
print("compat: kept", ", ".join(before[k] for k in ("torch", "transformers", "tokenizers", "numpy", "playwright")),
      "; added", after["browsergym-core"])
EOF

echo "compat: 4/5 the installed console script, from an empty folder"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
"$VENV/bin/python" - <<'EOF'
import catp_agent, envs, policies, sys
for module in (catp_agent, envs, policies):
    assert "site-packages" in module.__file__, f"{module.__name__} imported from {module.__file__}, not the wheel"
print("compat: imports from", catp_agent.__file__.rsplit("/catp_agent/", 1)[0])
EOF
"$VENV/bin/catp-agent" tasks > tasks.txt
grep -q "catp/login-v0" tasks.txt && grep -q "catp/miniwob.click-button-v0" tasks.txt \
  || { cat tasks.txt; echo "compat: catp-agent tasks misses bundled or MiniWoB++ tasks"; exit 1; }
"$VENV/bin/catp-agent" run --task catp/login-v0 --seed 0 --max-steps 2 --no-speedup --json > run.json
"$VENV/bin/python" - <<'EOF'
import json
result = json.load(open("run.json"))
assert result["error"] is None and result["steps"] >= 1, result
assert all(s["image_tokens_in"] > 0 for s in result["step_records"]), "the bundled model saw no image tokens"
print(f"compat: catp-agent run: {result['steps']} steps with the bundled model, no error")
EOF

echo "compat: 5/5 pytest -m compat against the installed package (playwright 1.44)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -c "$ROOT/pyproject.toml" --rootdir "$ROOT" -m compat "$ROOT/tests"
# Our envs' own tests on playwright 1.44 are not run here yet: on the issue-29 branch 8 cases of
# test_containment.py failed there (a refused WebSocket reported as the proxy's CONNECT line, not its
# ws:// URL), and the issue-30 envs (a context per episode, CDP screenshots) were merged without a
# complete run on 1.44. The compat subset above (one episode of our envs, BrowserGym's tasks through
# our harness) does run on 1.44.
