"""``catp-agent bench --agent``: a whole agent step, pruned against unpruned, in one run.

What a user of a GUI agent pays per step: encoding the new screenshot (history screenshots'
features are reused), choosing the tokens (stage-1 picks of history screenshots reused), the
prefill and the decoding. A random-weight Qwen2-VL (decoder ``--hidden`` / ``--layers``, a small
vision tower) acts through the real :class:`policies.vlm.VLMPolicy` on an episode of random
screenshots of ``--image-size`` (896x1120 gives 1280 image tokens, Qwen2-VL's default maximum)
with ``--history`` past screenshots in its window.

Fair timing: every method plays a warm-up episode first (the unpruned one too); the timed
episodes run in lockstep (step t of every method before step t+1 of any), so slow drift of the
machine hits all alike; every method decodes the same number of tokens (``--new-tokens``); the
figures are medians over the steps whose window is full (step >= history).

    catp-agent bench --agent                                  # defaults: history 3, 6 steps, R = 0.778
    catp-agent bench --agent --methods none,catp,fastv --steps 5 --json --out runs/bench_agent.json
    catp-agent bench --agent --preset qwen2.5-vl-7b --device cuda --dtype bf16   # the real 7B shape, on a GPU
    catp-agent bench --agent --preset qwen2.5-vl-7b --preset-scale tiny          # its structure, small, on the CPU

With ``--preset`` the model is the preset's (``catp_agent.harness.presets``: published decoder and
vision-tower shapes, random weights) and ``--hidden`` / ``--layers`` / ``--kv-heads`` are ignored.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from catp_agent.methods import METHODS, PruningConfig, config_fields

TARGET_STEP_SHARE = 0.5  # CATP's step at most half the unpruned one
TARGET_KV_SHARE = 0.35  # and its KV cache at most 0.35 of it (the paper: 1.12 -> 0.35 GB)
AGENT_IMAGE_SIZE = (896, 1120)  # 32 x 40 = 1280 tokens per screenshot on Qwen2-VL


@dataclass(frozen=True)
class AgentBenchConfig:
    """What the agent benchmark runs. Frozen; validated on construction."""

    hidden: int = 1024
    layers: int = 8
    kv_heads: int = 4
    vision_hidden: int = 64
    image_size: tuple[int, int] = AGENT_IMAGE_SIZE
    history: int = 3
    steps: int = 6
    warmup_steps: int = 2
    new_tokens: int = 8
    methods: tuple[str, ...] = METHODS
    ratio: float = 0.778
    threads: int | None = None
    seed: int = 0
    preset: str | None = None
    preset_scale: str = "full"
    device: str = "cpu"
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        from catp_agent.harness.bench import DTYPES

        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.preset is not None:
            from catp_agent.harness.presets import check_preset_device

            check_preset_device(self.preset, self.preset_scale, self.device)
        elif torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but torch {torch.__version__} sees no CUDA device here")
        for name in ("hidden", "layers", "kv_heads", "vision_hidden", "history", "new_tokens", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.hidden % 64 or (self.hidden // 64) % self.kv_heads:
            raise ValueError(f"hidden must be a multiple of 64 with hidden/64 heads divisible by kv_heads, "
                             f"got hidden={self.hidden}, kv_heads={self.kv_heads}")
        if self.layers < 4:
            raise ValueError(f"layers must be >= 4 (CATP decides after layers K and K+1, and a layer must follow), got {self.layers}")
        if not isinstance(self.steps, int) or self.steps <= self.history:
            raise ValueError(f"steps must be > history ({self.history}) so some steps have a full window, got {self.steps!r}")
        if len(self.image_size) != 2 or min(self.image_size) < 56 or max(self.image_size) > 4096:
            raise ValueError(f"image_size must be (height, width) with sides in [56, 4096] pixels, got {self.image_size}")
        if "none" not in self.methods or any(m not in METHODS for m in self.methods):
            raise ValueError(f"methods must include none (the reference) and come from {list(METHODS)}, got {list(self.methods)}")
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {self.ratio}")


def _policy(cfg: AgentBenchConfig, agent: object, method: str):
    from policies import make_policy

    options = {"ratio": 0.0 if method == "none" else cfg.ratio, "seed": cfg.seed}
    if "score_normalization" in config_fields(method):
        options["score_normalization"] = "minmax"
    return make_policy("vlm", model=agent, pruning=PruningConfig(method=method, **options), history=cfg.history,
                       max_new_tokens=cfg.new_tokens, min_new_tokens=cfg.new_tokens, seed=cfg.seed)


def _episode(cfg: AgentBenchConfig, n_steps: int, seed: int) -> list[dict]:
    rng = np.random.RandomState(seed)
    h, w = cfg.image_size
    return [{"screenshot": (rng.rand(h, w, 3) * 255).astype(np.uint8), "instruction": "Open the settings page.",
             "last_action_error": "", "step": t} for t in range(n_steps)]


def run_agent_benchmark(cfg: AgentBenchConfig, progress: bool = True) -> dict:
    """Warm-up episodes, then the timed episodes in lockstep; JSON-ready rows per method."""
    import transformers
    from tqdm import tqdm
    from transformers import Qwen2VLImageProcessorPil

    from catp_agent.agent.model_io import load_agent_model
    from catp_agent.harness.bench import DTYPES
    from catp_agent.harness.presets import build_preset_model, preset_summary
    from catp_agent.models.tiny import build_tiny_model

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    dtype = DTYPES[cfg.dtype]
    if cfg.preset is not None:
        model, tok = build_preset_model(cfg.preset, cfg.preset_scale, device=cfg.device, dtype=dtype, seed=cfg.seed)
    else:
        model, tok = build_tiny_model("qwen2_vl", seed=cfg.seed, hidden_size=cfg.hidden, num_layers=cfg.layers,
                                      num_heads=cfg.hidden // 64, num_kv_heads=cfg.kv_heads,
                                      intermediate_size=int(round(2.75 * cfg.hidden)), vision_hidden=cfg.vision_hidden)
    pixels = cfg.image_size[0] * cfg.image_size[1]
    processor = Qwen2VLImageProcessorPil(size={"shortest_edge": min(pixels, 56 * 56), "longest_edge": pixels})
    agent = load_agent_model(model, tokenizer=tok, image_processor=processor, device=cfg.device, dtype=dtype)
    policies = {m: _policy(cfg, agent, m) for m in cfg.methods}
    total = len(cfg.methods) * (cfg.warmup_steps + cfg.steps)
    bar = tqdm(total=total, desc="bench --agent", disable=not progress, file=sys.stderr)
    timed: dict[str, list[dict]] = {m: [] for m in cfg.methods}
    for phase, episode in (("warm-up", _episode(cfg, cfg.warmup_steps, cfg.seed + 1)),
                           ("timed", _episode(cfg, cfg.steps, cfg.seed))):
        for policy in policies.values():
            policy.reset()
        for t, obs in enumerate(episode):
            for method, policy in policies.items():
                bar.set_postfix_str(f"{phase} step {t} {method}")
                t0 = time.perf_counter()
                policy.act(obs, {})
                wall = time.perf_counter() - t0
                if phase == "timed":
                    timed[method].append({"step": t, "step_s": wall, **policy.last_report.to_dict()})
                bar.update()
    bar.close()
    rows = []
    for method, steps in timed.items():
        full = [s for s in steps if s["step"] >= cfg.history]  # window full: history + current
        med = lambda key: statistics.median(s[key] for s in full)  # noqa: E731
        walls = [s["step_s"] for s in full]
        rows.append({
            "method": method, "ratio": 0.0 if method == "none" else cfg.ratio, "k_layer": full[-1]["k_layer"],
            "image_tokens_in": full[-1]["image_tokens_in"], "kept_stage1": full[-1]["kept_stage1"],
            "kept_final": full[-1]["kept_final"], "kv_cache_bytes": med("kv_cache_bytes"),
            "step_s": statistics.median(walls), "step_runs_s": walls,
            "spread": (max(walls) - min(walls)) / statistics.median(walls),
            "vision_s": med("vision_s"), "selection_s": med("selection_s"), "prefill_s": med("prefill_s"),
            "decode_s": med("decode_s"), "steps": steps,
        })
    base = rows[0] if rows[0]["method"] == "none" else next(r for r in rows if r["method"] == "none")
    for row in rows:
        row["step_share"] = row["step_s"] / base["step_s"]
        row["prefill_share"] = row["prefill_s"] / base["prefill_s"]
        row["kv_share"] = row["kv_cache_bytes"] / base["kv_cache_bytes"]
        row["selection_share_of_prefill"] = row["selection_s"] / row["prefill_s"] if row["prefill_s"] else 0.0
    catp = next((r for r in rows if r["method"] == "catp"), None)
    targets = None if catp is None else {
        "step_share": catp["step_share"], "step_met": catp["step_share"] <= TARGET_STEP_SHARE,
        "kv_share": catp["kv_share"], "kv_met": catp["kv_share"] <= TARGET_KV_SHARE,
    }
    return {
        "config": asdict(cfg),
        "model": preset_summary(model),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                        "device": torch.cuda.get_device_name(cfg.device) if cfg.device.startswith("cuda") else "cpu"},
        "targets": {"ratio": cfg.ratio, "step_share": TARGET_STEP_SHARE, "kv_share": TARGET_KV_SHARE, "catp": targets},
        "results": rows,
    }


def format_agent_table(result: dict) -> str:
    """Per method: median step and its parts over the full-window steps, shares of the unpruned."""
    head = (f"{'method':<9}{'R':>6}{'img tok':>9}{'->final':>8}{'step ms':>9}{'x none':>8}{'vision':>8}{'select':>8}"
            f"{'prefill':>9}{'decode':>8}{'KV MiB':>8}{'KV x':>6}{'spread':>8}")
    lines = [head, "-" * len(head)]
    for r in result["results"]:
        lines.append(
            f"{r['method']:<9}{r['ratio']:>6.3f}{r['image_tokens_in']:>9}{r['kept_final']:>8}{r['step_s'] * 1e3:>9.0f}"
            f"{r['step_share']:>8.2f}{r['vision_s'] * 1e3:>8.0f}{r['selection_s'] * 1e3:>8.0f}{r['prefill_s'] * 1e3:>9.0f}"
            f"{r['decode_s'] * 1e3:>8.0f}{r['kv_cache_bytes'] / 2**20:>8.1f}{r['kv_share']:>6.2f}{100 * r['spread']:>7.0f}%")
    t = result["targets"]
    lines.append("")
    lines.append(f"times in ms, medians over the steps with a full window; x none = step / unpruned step. "
                 f"Targets at R = {t['ratio']}: CATP's step <= {t['step_share']} x, KV cache <= {t['kv_share']} x")
    if t["catp"]:
        c = t["catp"]
        lines.append(f"  catp: step {c['step_share']:.2f} x ({'met' if c['step_met'] else 'MISSED'}), "
                     f"KV {c['kv_share']:.2f} x ({'met' if c['kv_met'] else 'MISSED'})")
    return "\n".join(lines)


def run_agent_bench_command(args: argparse.Namespace) -> int:
    """``catp-agent bench --agent``: build the config from the bench options, run, print."""
    try:
        cfg = AgentBenchConfig(
            hidden=args.hidden, layers=args.layers, kv_heads=min(args.kv_heads, max(1, args.hidden // 64)),
            image_size=tuple(args.image_size) if args.image_size is not None else AGENT_IMAGE_SIZE,
            history=args.history, steps=args.steps, new_tokens=args.new_tokens,
            methods=tuple(args.methods), ratio=args.ratios[0] if len(args.ratios) == 1 else 0.778,
            threads=args.threads, seed=args.seed, preset=args.preset, preset_scale=args.preset_scale,
            device=args.device, dtype=args.dtype,
        )
    except ValueError as exc:  # refused in one line, e.g. a full-scale preset on the CPU
        print(f"catp-agent bench --agent: {exc}", file=sys.stderr)
        return 2
    from catp_agent.harness.bench import emit_result

    return emit_result(run_agent_benchmark(cfg, progress=not args.no_progress), args, format_agent_table)
