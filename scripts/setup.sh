#!/usr/bin/env bash
# Idempotent setup: virtual environment, the project with its pinned dependencies (constraints.txt), and the
# system Chromium that the web environments drive. Fast when everything is already there.
set -euo pipefail
PY=${PY:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# Every package at the exact version in constraints.txt (pyproject.toml declares the ranges).
# torch first: its pin, 2.13.0, resolves to a local CPU wheel; anything looser pulls CUDA.
$PIP install -q -c constraints.txt torch
$PIP install -q -c constraints.txt -e ".[test]"
# MiniWoB++ task pages. --no-deps: we drive them with Playwright and need none of selenium.
$PIP install -q -c constraints.txt --no-deps miniwob

if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing the system Chromium (apt-get install chromium)"
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
echo "setup: ok ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
