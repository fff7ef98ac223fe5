#!/usr/bin/env bash
# Trains the shipped default model from random weights, on the CPU, in two stages:
#   1. behaviour cloning with copy practice (`catp-agent train` defaults; about 75 min on 2 threads),
#   2. from stage 1's weights: grounding practice, then behaviour cloning with grounding and copy
#      practice beside it (about 70 min on 2 threads).
# Demos are collected into DEMOS on first use (about 15 min with 2 browser processes) and reused.
# Usage: bash scripts/train_default_model.sh [OUT] [extra catp-agent train flags for both stages]
#   OUT defaults to runs/default_model; stage 1 goes to OUT-stage1.
#   To replace the bundled model: bash scripts/train_default_model.sh catp_agent/assets/default_model
set -euo pipefail
OUT=${1:-runs/default_model}
shift || true
BIN=${BIN:-.venv/bin}
DEMOS=${DEMOS:-.cache/demos}
"$BIN/catp-agent" train --out "$OUT-stage1" --demo-dir "$DEMOS" --threads 2 "$@"
"$BIN/catp-agent" train --out "$OUT" --demo-dir "$DEMOS" --threads 2 --init "$OUT-stage1" \
  --copy-warmup-steps 0 --ground-warmup-steps 800 --ground-batch 32 --epochs 1.3334 --lr 5e-4 "$@"
