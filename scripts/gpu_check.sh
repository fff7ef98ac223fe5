#!/usr/bin/env bash
# The GPU checks of catp-agent in one run: the `gpu` tests and the Qwen2.5-VL-7B preset bench.
#
# Made for the lent GPU machine (one H200; python3.12, torch 2.11, transformers 5.17, no network,
# the working tree copied in but not installed): everything runs from the tree with
# PYTHONPATH=., plus the pure-Python wheels in .whl/ that the image lacks (gymnasium and its two
# small dependencies, tqdm). Budget: 8 minutes in all; each step has its own time limit, and a
# step that fails or runs out is recorded and the next one still runs.
#
#   bash scripts/gpu_check.sh --fetch-wheels   # here, once: pure-Python wheels into .whl/ (git-ignored)
#   bash scripts/gpu_check.sh                  # on the GPU machine (device tool: carry [".whl"]); JSON in $OUT
#   bash scripts/gpu_check.sh --dry            # on a CPU: the same steps at tiny scale, to test the script
#
# Writes to $OUT (default runs/gpu_check): environment.json, gpu_tests.xml (JUnit), selection.json,
# agent_R0.667.json / agent_R0.778.json / agent_R0.889.json (catp-agent bench --agent --json), and
# gpu_check.json: every step's command, exit code and seconds. Exit code: 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(gymnasium==1.4.0 tqdm==4.70.1 cloudpickle==3.1.3 farama-notifications==0.0.6)
MODE=gpu
case "${1:-}" in
  --fetch-wheels)
    mkdir -p .whl
    exec "${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: -d .whl "${WHEELS[@]}" ;;
  --dry) MODE=dry ;;
  "") ;;
  *) echo "gpu_check.sh: unknown option ${1}; use --fetch-wheels, --dry or nothing" >&2; exit 2 ;;
esac

PY=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
WHEEL_PATH=$(ls .whl/*.whl 2>/dev/null | tr '\n' ':')
export PYTHONPATH=".:${WHEEL_PATH}${PYTHONPATH:-}"
export TOKENIZERS_PARALLELISM=false

if [ "$MODE" = gpu ]; then
  BENCH=(--preset qwen2.5-vl-7b --device cuda --dtype bf16 --history 3 --steps 5)
  SEL=(--device cuda --tokens 1280 --images 2 --dim 3584 --repeats 5)
  T_TESTS=150; T_SEL=45; T_BENCH=90
else
  BENCH=(--preset qwen2.5-vl-7b --preset-scale tiny --device cpu --image-size 112x140 --history 1 --steps 2
         --new-tokens 2 --threads 1)
  SEL=(--device cpu --tokens 120 --images 2 --dim 32 --repeats 1)
  T_TESTS=120; T_SEL=60; T_BENCH=120
fi

STEPS_JSON="$OUT/.steps.jsonl"
: > "$STEPS_JSON"
step() {  # step NAME LIMIT_S CMD...: run with a time limit, record exit code and seconds
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*" >&2
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  "$PY" -c 'import json,sys; print(json.dumps({"step": sys.argv[1], "rc": int(sys.argv[2]), "seconds": int(sys.argv[3]), "command": sys.argv[4:]}))' \
    "$name" "$rc" "$((SECONDS - t0))" "$@" >> "$STEPS_JSON"
  return "$rc"
}

step environment 60 "$PY" -c '
import json, platform, sys, torch, transformers
cuda = torch.cuda.is_available()
json.dump({"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "cuda": cuda, "device": torch.cuda.get_device_name() if cuda else "cpu",
           "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None},
          open(sys.argv[1], "w"), indent=1)' "$OUT/environment.json"

# gymnasium (the action types the policy parses into) and tqdm (the benches' progress) come from
# .whl/ where the image lacks them: without them the agent-step test and the bench fail
step imports 60 "$PY" -c 'import gymnasium, tqdm, policies.vlm, catp_agent.harness.bench_agent' ||
  echo "gpu_check.sh: imports failed; run 'bash scripts/gpu_check.sh --fetch-wheels' here and carry .whl" >&2

if [ "$MODE" = gpu ]; then
  step gpu_tests "$T_TESTS" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/catp_agent/test_prune_cuda.py \
    tests/agent/test_checkpoints.py --junitxml "$OUT/gpu_tests.xml"
else  # on a CPU the gpu tests skip; run them to check they collect and skip cleanly
  step gpu_tests "$T_TESTS" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/catp_agent/test_prune_cuda.py \
    --junitxml "$OUT/gpu_tests.xml"
fi

step selection "$T_SEL" "$PY" scripts/bench_selection.py "${SEL[@]}" --json "$OUT/selection.json"

for R in 0.667 0.778 0.889; do
  step "agent_R$R" "$T_BENCH" "$PY" -m catp_agent.harness.cli bench --agent "${BENCH[@]}" --ratios "$R" \
    --no-progress --out "$OUT/agent_R$R.json"
done

"$PY" - "$OUT" "$MODE" <<'EOF'
import json, sys
from pathlib import Path
out, mode = Path(sys.argv[1]), sys.argv[2]
steps = [json.loads(line) for line in (out / ".steps.jsonl").read_text().splitlines()]
summary = {"mode": mode, "passed": all(s["rc"] == 0 for s in steps), "seconds": sum(s["seconds"] for s in steps),
           "steps": steps}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1) + "\n")
(out / ".steps.jsonl").unlink()
for s in steps:
    print(f"{s['step']:<14} rc {s['rc']:>3}  {s['seconds']:>4} s")
print(f"gpu_check ({mode}): {'all passed' if summary['passed'] else 'FAILURES'}, {summary['seconds']} s; JSON in {out}")
sys.exit(0 if summary["passed"] else 1)
EOF
