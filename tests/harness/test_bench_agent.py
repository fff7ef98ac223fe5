"""``catp-agent bench --agent`` on a tiny model: structure and accounting (timings unchecked)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from catp_agent.harness.bench_agent import AgentBenchConfig
from catp_agent.harness.cli import main

TINY = ["bench", "--agent", "--hidden", "64", "--layers", "4", "--kv-heads", "1", "--image-size", "112x140",
        "--history", "1", "--steps", "3", "--new-tokens", "2", "--methods", "none,catp,random",
        "--ratios", "0.5", "--threads", "1", "--no-progress", "--json"]


@pytest.fixture(scope="module")
def result() -> dict:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(TINY) == 0
    return json.loads(buffer.getvalue())


def test_every_method_plays_the_same_steps_and_the_unpruned_one_is_the_reference(result: dict) -> None:
    rows = {r["method"]: r for r in result["results"]}
    assert list(rows) == ["none", "catp", "random"]
    none, catp = rows["none"], rows["catp"]
    assert none["step_share"] == 1.0 and none["kv_share"] == 1.0
    for row in rows.values():
        assert [s["step"] for s in row["steps"]] == [0, 1, 2]
        assert len(row["step_runs_s"]) == 2  # steps 1 and 2 have a full window (history 1)
        assert row["image_tokens_in"] == none["image_tokens_in"] == 2 * 20  # 2 screenshots of 4 x 5 tokens
    assert catp["kept_final"] == 20 and rows["random"]["kept_final"] == 20  # R = 0.5
    assert catp["kv_cache_bytes"] < none["kv_cache_bytes"]
    assert catp["k_layer"] == 1 and none["k_layer"] is None
    assert result["targets"]["catp"]["kv_share"] == pytest.approx(catp["kv_share"])


def test_history_screenshots_are_encoded_once(result: dict) -> None:
    steps = {r["method"]: r["steps"] for r in result["results"]}["none"]
    # every step encodes only its new screenshot: vision time is spent, reuse saves the rest
    assert all(s["vision_s"] > 0 for s in steps) and all(s["vision_reuse_saved_s"] > 0 for s in steps[1:])


def test_bad_agent_options_are_named() -> None:
    with pytest.raises(ValueError, match="steps must be > history"):
        AgentBenchConfig(history=3, steps=3)
    with pytest.raises(ValueError, match="methods must include none"):
        AgentBenchConfig(methods=("catp",))


PRESET_TINY = ["bench", "--agent", "--preset", "qwen2.5-vl-7b", "--preset-scale", "tiny", "--image-size", "112x140",
               "--history", "1", "--steps", "2", "--new-tokens", "2", "--methods", "none,catp,divprune",
               "--ratios", "0.778", "--threads", "1", "--no-progress", "--json"]


def test_preset_at_tiny_scale_runs_the_qwen25_vl_structure_through_the_agent_step() -> None:
    """The 7B preset's path (Qwen2.5-VL with windowed vision blocks, GQA 7:1, M-RoPE) at small
    widths: every method plays, budgets are met, and the JSON says which shape ran."""
    from catp_agent.pruning import keep_count

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(PRESET_TINY) == 0
    result = json.loads(buffer.getvalue())
    shape = result["model"]
    assert shape["text"]["num_attention_heads"] == 7 and shape["text"]["num_key_value_heads"] == 1
    assert shape["vision"]["fullatt_block_indexes"] == [1, 3] and shape["vision"]["window_size"] == 112
    rows = {r["method"]: r for r in result["results"]}
    assert rows["none"]["image_tokens_in"] == 2 * 20
    for method in ("catp", "divprune"):
        assert rows[method]["kept_final"] == keep_count(40, 0.778)
        assert rows[method]["kv_cache_bytes"] < rows["none"]["kv_cache_bytes"]
    assert result["config"]["preset"] == "qwen2.5-vl-7b" and result["environment"]["device"] == "cpu"


def test_full_scale_preset_is_refused_on_the_cpu_in_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--agent", "--preset", "qwen2.5-vl-7b", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a CUDA device" in err and "--preset-scale tiny" in err
    assert main(["bench", "--preset", "qwen2.5-vl-7b"]) == 2  # the prefill bench has no preset
    assert "add --agent" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown preset 'qwen9'"):
        AgentBenchConfig(preset="qwen9")


def test_gpu_check_script_parses_and_names_a_bad_option() -> None:
    """scripts/gpu_check.sh (run in full with --dry on a CPU, see docs/benchmarks.md): valid bash,
    and an unknown option is refused by name before anything runs."""
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    bad = subprocess.run(["bash", str(script), "--fast"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --fast" in bad.stderr
