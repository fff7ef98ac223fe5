"""``catp-agent bench``: prefill latency, KV cache and analytic FLOPs per pruning method and R.

A multi-image in-context sequence (``--images`` random screenshots, the last one the query)
goes through a mid-size random-weight model on the CPU. Every method is measured at every
ratio in ONE process on the SAME inputs: one warm-up round over the whole grid, then
``--repeats`` rounds (round-robin over the grid, so slow drift of the machine hits every
method alike); each figure is the median over the rounds.

Usage:

    catp-agent bench                                  # defaults: qwen2_vl, hidden 1024, 8 layers
    catp-agent bench --json --out runs/bench.json     # JSON on stdout and in a file
    catp-agent bench --dtype bf16 --threads 2 --methods none,catp,fastv --ratios 0.778
    python -m catp_agent.harness.cli bench --hidden 256 --layers 4 --images 2 --image-size 224 --repeats 1

What is reported per (method, R):
    prefill_s         wall time of ``model(**inputs, use_cache=True)`` (vision tower included)
    decoder_s         the part after the vision tower: stage 1, the decoder layers, stage 2
    kv_cache_bytes    keys + values held by the cache after the prefill
    flops             analytic decoder FLOPs, from the tokens each decoder layer really ran on
    speedup           prefill_s(none) / prefill_s; ``speedup_decoder`` the same for decoder_s;
                      ``speedup_min`` from the fastest run of each (least disturbed by other load)
    speedup_analytic  flops(none) / flops; ``measured_over_analytic`` = speedup / speedup_analytic
    overhead          (stage1_s + stage2_s) / prefill_s: selection time as a share of the prefill

FLOPs of one decoder layer running on n tokens (multiply-add = 2 FLOPs; norms, rotary,
softmax and activations are ignored; causal attention counts the n(n+1)/2 query-key pairs):

    linear    = 2 n (d * H hd  +  2 d * KV hd  +  H hd * d  +  3 d I)      # q, k, v, o; MLP
    attention = 2 * 2 (H hd) n (n + 1) / 2 = 2 H hd n (n + 1)             # QK^T and AV

with d the hidden size, H / KV the query / key-value heads, hd the head dim, I the MLP width.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from catp_agent.methods import METHODS, MethodConfig, PruningConfig, ReplayConfig, config_fields, default_k_layer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_RATIOS = (0.667, 0.778, 0.889)
TARGET_RATIOS = (0.667, 0.778, 0.889)
TARGET_LIMIT_SHARE = 0.95  # every method's speed-up >= 0.95 x its physical limit
TARGET_SPEEDUP_SHARE = 0.9  # CATP's measured speed-up >= 0.9 x analytic
TARGET_OVERHEAD = 0.02  # selection < 2 % of the pruned prefill
MAX_TRUSTED_SPREAD = 0.15  # (max - min) / median of a configuration's runs above this: too noisy


def spread(times: list[float]) -> float:
    """(max - min) / median of repeated timings: 0 on a quiet machine."""
    return (max(times) - min(times)) / statistics.median(times) if times else 0.0
FLOPS_FORMULA = (
    "per decoder layer on n tokens: 2n(d*H*hd + 2*d*KV*hd + H*hd*d + 3*d*I) + 2*H*hd*n(n+1) "
    "(linear layers + causal QK^T and AV; norms, rotary, softmax ignored)"
)


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs. Frozen; validated on construction."""

    family: str = "qwen2_vl"
    hidden: int = 1024
    layers: int = 8
    heads: int = 16
    kv_heads: int = 4
    intermediate: int = 2816
    vision_hidden: int = 64
    vision_depth: int = 1
    images: int = 4
    image_size: tuple[int, int] = (476, 476)
    k_layer: int | None = None
    methods: tuple[str, ...] = METHODS
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    repeats: int = 3
    dtype: str = "fp32"
    threads: int | None = None
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        from catp_agent.models.tiny import FAMILIES

        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} asked for, but torch {torch.__version__} sees no CUDA device here")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {list(FAMILIES)}, got {self.family!r}")
        for name in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vision_hidden", "vision_depth", "images", "repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(
                f"hidden ({self.hidden}) must be divisible by heads ({self.heads}) and heads by kv_heads ({self.kv_heads})"
            )
        if self.layers < 4:
            raise ValueError(f"layers must be >= 4 (CATP decides after layers K and K+1, and a layer must follow), got {self.layers}")
        if self.images < 2:
            raise ValueError(f"images must be >= 2 (demonstrations plus a query screenshot), got {self.images}")
        if len(self.image_size) != 2 or min(self.image_size) < 28:
            raise ValueError(f"image_size must be (height, width) with both >= 28 pixels, got {self.image_size}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}, got {list(self.methods)}")
        for r in self.ratios:
            if not 0.0 < r < 1.0:
                raise ValueError(f"ratios must each be in (0, 1), got {r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None (torch's default), got {self.threads}")
        if self.k_layer is not None and not 1 <= self.k_layer <= self.layers - 3:
            raise ValueError(f"k_layer must be in [1, {self.layers - 3}] for {self.layers} layers "
                             f"(CATP decides after K and K+1, and a layer must follow), got {self.k_layer}")

    @property
    def resolved_k_layer(self) -> int:
        return self.k_layer if self.k_layer is not None else default_k_layer(self.layers)

    def grid(self) -> list[MethodConfig]:
        """``none`` once (the baseline), then every other method at every ratio."""
        k = self.resolved_k_layer
        cfgs = [PruningConfig(method="none", ratio=0.0, seed=self.seed)]
        for method in self.methods:
            if method != "none":
                with_k = {"k_layer": k} if "k_layer" in config_fields(method) else {}
                cfgs += [PruningConfig(method=method, ratio=r, seed=self.seed, **with_k) for r in self.ratios]
        return cfgs


def layer_flops(n: int, hidden: int, heads: int, kv_heads: int, head_dim: int, intermediate: int) -> int:
    """Analytic FLOPs of one decoder layer on ``n`` tokens (formula in the module docstring)."""
    d, q = hidden, heads * head_dim
    linear = 2 * n * (d * q + 2 * d * kv_heads * head_dim + q * d + 3 * d * intermediate)
    attention = 2 * q * n * (n + 1)
    return linear + attention


def decoder_flops(tokens_per_layer: list[int], text_config: object) -> int:
    """Sum of :func:`layer_flops` over the decoder, layer l running on ``tokens_per_layer[l]``."""
    heads = int(text_config.num_attention_heads)
    head_dim = int(getattr(text_config, "head_dim", None) or text_config.hidden_size // heads)
    return sum(
        layer_flops(n, int(text_config.hidden_size), heads, int(text_config.num_key_value_heads), head_dim,
                    int(text_config.intermediate_size))
        for n in tokens_per_layer
    )


def build_bench_model(cfg: BenchConfig) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """(model, inputs): the random-weight model and the multi-image prompt of ``cfg``."""
    from catp_agent.models.tiny import build_processor, build_tiny_model, demo_inputs

    sizes = dict(hidden_size=cfg.hidden, num_layers=cfg.layers, num_heads=cfg.heads, num_kv_heads=cfg.kv_heads,
                 intermediate_size=cfg.intermediate, vision_hidden=cfg.vision_hidden, vision_depth=cfg.vision_depth)
    # Each family takes the settings that apply to it: CLIP towers see square images of
    # image_size[0], Qwen's processor resizes to exactly height x width pixels.
    sizes["image_size"] = cfg.image_size[0]
    model, tokenizer = build_tiny_model(cfg.family, seed=cfg.seed, dtype=DTYPES[cfg.dtype], **sizes)
    pixels = cfg.image_size[0] * cfg.image_size[1]
    processor = build_processor(cfg.family, tokenizer, image_size=cfg.image_size[0], min_pixels=pixels, max_pixels=pixels)
    inputs = demo_inputs(processor, n_images=cfg.images, size=cfg.image_size, seed=cfg.seed)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(DTYPES[cfg.dtype])
    inputs = {k: v.to(cfg.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    return model.to(cfg.device), inputs


def _prefill(model: torch.nn.Module, inputs: dict, pcfg: MethodConfig) -> dict[str, object]:
    """One timed prefill under ``pcfg``: wall time and what the pruning record says."""
    from catp_agent.engine import prune, synced_clock

    device = inputs["input_ids"].device
    with prune(model, pcfg) as handle, torch.inference_mode():
        t0 = synced_clock(device)
        model(**inputs, use_cache=True)
        wall = synced_clock(device) - t0
    rec = handle.last
    if rec is None:
        raise RuntimeError(f"the prefill under {pcfg.method!r} left no record: were the image tokens found?")
    return {"wall_s": wall, "record": rec}


def run_benchmark(cfg: BenchConfig, progress: bool = True) -> dict[str, object]:
    """Run the whole grid; returns the JSON-ready result (config, environment, rows, targets)."""
    import transformers
    from tqdm import tqdm

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    model, inputs = build_bench_model(cfg)
    text_config = model.config.get_text_config()
    grid = cfg.grid()
    # Every entry: (config, index of the grid row it measures, is it the row's replay?). The
    # replays (the same kept tokens, chosen in no time) join after the warm-up, which records
    # what each method keeps on these inputs.
    plan: list[tuple[MethodConfig, int, bool]] = [(pcfg, i, False) for i, pcfg in enumerate(grid)]
    runs: list[list[dict]] = [[] for _ in grid]
    limits: list[list[dict]] = [[] for _ in grid]
    n_limits = sum(1 for pcfg in grid if not pcfg.is_identity)
    bar = tqdm(total=(len(grid) + n_limits) * (cfg.repeats + 1), desc="bench", disable=not progress, file=sys.stderr)
    for round_idx in range(cfg.repeats + 1):  # round 0 is the warm-up of everything, not recorded
        order = plan if round_idx % 2 else plan[::-1]  # alternate, so no config always runs first
        for pcfg, i, is_limit in order:
            bar.set_postfix_str(f"{'warm-up' if round_idx == 0 else f'round {round_idx}'} "
                                f"{'limit of ' if is_limit else ''}{grid[i].method} R={grid[i].ratio}")
            out = _prefill(model, inputs, pcfg)
            if round_idx > 0:
                (limits if is_limit else runs)[i].append(out)
            elif not pcfg.is_identity:  # each method's replay runs right after it from now on
                replay = ReplayConfig.from_record(out["record"])
                _prefill(model, inputs, replay)  # its warm-up
                bar.update()
                plan.insert(plan.index((pcfg, i, False)) + 1, (replay, i, True))
            bar.update()
    bar.close()

    rows = []
    for i, (pcfg, measured) in enumerate(zip(grid, runs)):
        rec = measured[-1]["record"]
        med = lambda key: statistics.median(m["record"].timings.get(key, 0.0) for m in measured)  # noqa: E731
        hook_prefill = med("prefill_s")
        selection = med("stage1_s") + med("stage2_s")
        walls = [m["wall_s"] for m in measured]
        limit_walls = [m["wall_s"] for m in limits[i]] or walls  # none: its own limit
        rows.append({
            "method": pcfg.method,
            "ratio": pcfg.ratio,
            "k_layer": rec.k_layer,
            "n_tokens": rec.n_tokens,
            "n_image_tokens": rec.n_image_tokens,
            "image_tokens_final": rec.n_kept_final,
            "tokens_per_layer": list(rec.tokens_per_layer),
            "kv_cache_bytes": rec.kv_cache_bytes,
            "flops": decoder_flops(rec.tokens_per_layer, text_config),
            "prefill_s": statistics.median(walls),
            "prefill_min_s": min(walls),
            "prefill_runs_s": walls,
            "spread": spread(walls),
            "limit_s": statistics.median(limit_walls),
            "limit_runs_s": limit_walls,
            "limit_spread": spread(limit_walls),
            "decoder_s": statistics.median(m["record"].timings["prefill_s"] - m["record"].timings["vision_s"] for m in measured),
            "vision_s": med("vision_s"),
            "stage1_s": med("stage1_s"),
            "stage2_s": med("stage2_s"),
            "overhead": selection / hook_prefill if hook_prefill > 0 else 0.0,
        })
    base = rows[0]
    for row in rows:
        row["speedup"] = base["prefill_s"] / row["prefill_s"]
        row["speedup_decoder"] = base["decoder_s"] / row["decoder_s"]
        row["speedup_analytic"] = base["flops"] / row["flops"]
        row["measured_over_analytic"] = row["speedup"] / row["speedup_analytic"]
        row["speedup_min"] = base["prefill_min_s"] / row["prefill_min_s"]  # fastest runs: least disturbed
        row["min_over_analytic"] = row["speedup_min"] / row["speedup_analytic"]
        row["decoder_over_analytic"] = row["speedup_decoder"] / row["speedup_analytic"]
        row["speedup_limit"] = base["prefill_s"] / row["limit_s"]
        row["share_of_limit"] = row["limit_s"] / row["prefill_s"]  # = speedup / speedup_limit
        row["trusted"] = max(row["spread"], row["limit_spread"], base["spread"]) <= MAX_TRUSTED_SPREAD
    targets = {}
    for row in rows:
        if row["method"] != "none" and any(abs(row["ratio"] - r) < 1e-9 for r in TARGET_RATIOS):
            target = {
                "share_of_limit": row["share_of_limit"],
                "limit_met": row["share_of_limit"] >= TARGET_LIMIT_SHARE,
                "overhead": row["overhead"],
                "overhead_met": row["overhead"] < TARGET_OVERHEAD,
                "trusted": row["trusted"],
            }
            if row["method"] == "catp":
                target["measured_over_analytic"] = row["measured_over_analytic"]
                target["speedup_met"] = row["measured_over_analytic"] >= TARGET_SPEEDUP_SHARE
            targets[f"{row['method']} R={row['ratio']:g}"] = target
    config = asdict(cfg)
    config["k_layer"] = cfg.resolved_k_layer
    return {
        "config": config,
        "environment": {
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(), "processor": platform.processor(),
        },
        "sequence": {"n_tokens": base["n_tokens"], "n_image_tokens": base["n_image_tokens"],
                     "image_tokens_per_image": [e - s for s, e in runs[0][-1]["record"].image_spans]},
        "flops_formula": FLOPS_FORMULA,
        "targets": {"ratios": list(TARGET_RATIOS), "limit_share": TARGET_LIMIT_SHARE,
                    "catp_speedup_share": TARGET_SPEEDUP_SHARE, "overhead": TARGET_OVERHEAD,
                    "max_trusted_spread": MAX_TRUSTED_SPREAD, "per_method": targets},
        "results": rows,
    }


def format_table(result: dict) -> str:
    """The rows as a fixed-width text table, with the targets below it."""
    head = (f"{'method':<9}{'R':>6}{'tok in->L-1':>13}{'KV MiB':>8}{'GFLOP':>8}{'prefill ms':>11}{'limit ms':>9}"
            f"{'x meas':>8}{'x limit':>8}{'x FLOP':>8}{'/limit':>7}{'meas/an':>8}{'sel %':>7}{'spread':>7}")
    lines = [head, "-" * len(head)]
    for r in result["results"]:
        tokens = f"{r['n_tokens']}->{r['tokens_per_layer'][-1]}"
        noisy = "" if r["trusted"] else "  noisy"
        lines.append(
            f"{r['method']:<9}{r['ratio']:>6.3f}{tokens:>13}{r['kv_cache_bytes'] / 2**20:>8.1f}{r['flops'] / 1e9:>8.1f}"
            f"{r['prefill_s'] * 1e3:>11.0f}{r['limit_s'] * 1e3:>9.0f}{r['speedup']:>8.2f}{r['speedup_limit']:>8.2f}"
            f"{r['speedup_analytic']:>8.2f}{r['share_of_limit']:>7.2f}{r['measured_over_analytic']:>8.2f}"
            f"{100 * r['overhead']:>7.1f}{100 * max(r['spread'], r['limit_spread']):>6.0f}%{noisy}"
        )
    t = result["targets"]
    lines.append("")
    lines.append(f"limit: the same model on exactly the kept tokens, chosen in no time (replayed); /limit = limit / prefill. "
                 f"spread = (max - min) / median of the runs; above {100 * t['max_trusted_spread']:.0f} % a row is marked noisy.")
    lines.append(f"targets at R in {t['ratios']}: /limit >= {t['limit_share']} for every method, selection < "
                 f"{100 * t['overhead']:.0f} % of the pruned prefill, CATP's meas/analytic >= {t['catp_speedup_share']}")
    for label, v in t["per_method"].items():
        parts = [f"/limit {v['share_of_limit']:.2f} ({'met' if v['limit_met'] else 'MISSED'})",
                 f"selection {100 * v['overhead']:.1f} % ({'met' if v['overhead_met'] else 'MISSED'})"]
        if "speedup_met" in v:
            parts.append(f"meas/analytic {v['measured_over_analytic']:.2f} ({'met' if v['speedup_met'] else 'MISSED'})")
        lines.append(f"  {label:<16} " + ", ".join(parts) + ("" if v["trusted"] else "  [too noisy to trust]"))
    return "\n".join(lines)


def _csv(kind: type, text: str, what: str) -> tuple:
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a comma-separated list, got {text!r}") from None


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be N or HxW in pixels, got {text!r}") from None
    if len(sizes) not in (1, 2):
        raise argparse.ArgumentTypeError(f"image size must be N or HxW in pixels, got {text!r}")
    return (sizes[0], sizes[-1])


def register(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to ``parser`` and set its ``func``."""
    d = BenchConfig()
    parser.add_argument("--family", default=d.family, help=f"model family (default {d.family})")
    parser.add_argument("--hidden", type=int, default=d.hidden, help=f"decoder hidden size (default {d.hidden}; heads = hidden/64, MLP = 2.75 x hidden)")
    parser.add_argument("--layers", type=int, default=d.layers, help=f"decoder layers (default {d.layers})")
    parser.add_argument("--kv-heads", type=int, default=d.kv_heads, help=f"key-value heads (default {d.kv_heads})")
    parser.add_argument("--images", type=int, default=d.images, help=f"screenshots in the sequence, the last is the query (default {d.images})")
    parser.add_argument("--image-size", type=_image_size, default=None, metavar="HxW",
                        help="screenshot size in pixels, N or HxW (default 476x476: 289 tokens per image on Qwen2-VL; "
                             "with --agent 896x1120: 1280 tokens, Qwen2-VL's default maximum)")
    parser.add_argument("--k-layer", type=int, default=None, help="K of CATP / FastV (default about 20 %% of the depth: 2 for 8 layers)")
    parser.add_argument("--methods", type=lambda s: _csv(str, s, "methods"), default=d.methods,
                        help=f"comma-separated, from {','.join(METHODS)} (default all; none is always run as the baseline)")
    parser.add_argument("--ratios", type=lambda s: _csv(float, s, "ratios"), default=d.ratios,
                        help="comma-separated R, the fraction of image tokens removed (default 0.667,0.778,0.889)")
    parser.add_argument("--repeats", type=int, default=d.repeats, help=f"timed rounds after the warm-up; the median is reported (default {d.repeats})")
    parser.add_argument("--dtype", choices=list(DTYPES), default=d.dtype, help="model dtype (default fp32)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--seed", type=int, default=d.seed, help="weights, images and random selections (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON result to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    agent = parser.add_argument_group("agent step (--agent)", "a whole agent step (vision with reuse, selection, "
                                      "prefill, decode) through VLMPolicy, pruned against unpruned, at one R "
                                      "(--ratios with one value; default 0.778)")
    agent.add_argument("--agent", action="store_true", help="time whole agent steps instead of prefills")
    agent.add_argument("--history", type=int, default=3, help="past screenshots in the window (default 3)")
    agent.add_argument("--steps", type=int, default=6, help="timed steps; medians over those with a full window (default 6)")
    agent.add_argument("--new-tokens", type=int, default=8, help="tokens every method decodes per step (default 8)")
    agent.add_argument("--preset", default=None, help="a real model's shape with random weights (qwen2.5-vl-7b); "
                       "replaces --hidden/--layers/--kv-heads")
    agent.add_argument("--preset-scale", choices=["full", "tiny"], default="full",
                       help="full: the published shape (CUDA only); tiny: its structure at small widths (default full)")
    parser.set_defaults(func=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    """Entry point of ``catp-agent bench``; returns the exit code."""
    if args.agent:
        from catp_agent.harness.bench_agent import run_agent_bench_command

        return run_agent_bench_command(args)
    if args.preset is not None:
        print("catp-agent bench: --preset applies to --agent (whole agent steps); add --agent", file=sys.stderr)
        return 2
    heads = max(1, args.hidden // 64)
    kv_heads = min(args.kv_heads, heads)
    cfg = BenchConfig(
        family=args.family, hidden=args.hidden, layers=args.layers, heads=heads, kv_heads=kv_heads,
        intermediate=int(round(2.75 * args.hidden)), images=args.images,
        image_size=tuple(args.image_size) if args.image_size is not None else BenchConfig().image_size,
        k_layer=args.k_layer, methods=tuple(args.methods), ratios=tuple(args.ratios), repeats=args.repeats,
        dtype=args.dtype, threads=args.threads, seed=args.seed, device=args.device,
    )
    return emit_result(run_benchmark(cfg, progress=not args.no_progress), args, format_table)


def emit_result(result: dict, args: argparse.Namespace, formatter) -> int:
    """Record the command line, write the JSON to ``--out`` if given, print JSON or the table."""
    result["argv"] = list(sys.argv)
    text = json.dumps(result, indent=2, default=float)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text if args.json else formatter(result))
    return 0
