"""The stage-1 and DivPrune selections alone, every loop on the same inputs in one run.

What ``catp-agent bench`` calls "selection", without the model around it: the facility-location
greedy (CATP's stage 1) and DivPrune's max-min greedy on images of ``--tokens`` tokens of
``--dim``-dimensional features, at the keep counts the bench uses (stage 1 keeps
``floor(n (1 - R/2))`` per image, DivPrune ``floor(n (1 - R))``). For each loop: the picks are
checked equal to the reference loop's, then timed (wall and process CPU time, median of
``--repeats`` after a warm-up), interleaved round-robin so drift hits all loops alike.

    ``before`` is the loop the project used before issue 23 on that device (torch
    ``incremental`` from 256 tokens on, ``recompute`` below; torch DivPrune loop); ``auto`` is
    what runs now (``greedy_impl_for``).

    PYTHONPATH=. python scripts/bench_selection.py                          # CPU: 2 x 1280 tokens, dim 1024
    PYTHONPATH=. python scripts/bench_selection.py --tokens 289 --images 4  # the prefill bench's images
    PYTHONPATH=. python scripts/bench_selection.py --device cuda --json $OUT/selection.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from catp_agent.pruning import divprune_select, facility_location_greedy_many, keep_count
from catp_agent.pruning.stage1 import greedy_impl_for


def _features(images: int, tokens: int, dim: int, device: str, seed: int) -> list[torch.Tensor]:
    """Clustered features (screens repeat their patches): 64 centres plus noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(64, dim, generator=g)
    return [(centres[torch.randint(0, 64, (tokens,), generator=g)] + 0.5 * torch.randn(tokens, dim, generator=g)).to(device)
            for _ in range(images)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    feats = _features(args.images, args.tokens, args.dim, args.device, args.seed)
    vectors = [torch.randn(args.dim, generator=torch.Generator().manual_seed(args.seed + 1)).to(args.device)] * args.images
    keep1 = keep_count(args.tokens, args.ratio / 2)
    keep_d = keep_count(args.tokens, args.ratio)
    on_cpu = torch.device(args.device).type == "cpu"
    auto = greedy_impl_for(torch.device(args.device))
    loops = {  # name: (loop, function)
        "stage1 auto": (auto, lambda: facility_location_greedy_many(feats, vectors, [keep1] * args.images)),
        "divprune auto": ("numpy" if on_cpu else "torch", lambda: [divprune_select(f, keep_d) for f in feats]),
        "divprune before": ("torch", lambda: [divprune_select(f, keep_d, impl="torch") for f in feats]),
    }
    if on_cpu:
        before = "incremental" if args.tokens >= 256 else "recompute"
        loops["stage1 before"] = (before, lambda: facility_location_greedy_many(feats, vectors, [keep1] * args.images,
                                                                                 impl=before))
    else:  # the alternatives on a GPU: the loop as one CUDA graph; the features to the host, the CPU loop there
        loops["stage1 graphed"] = ("recompute_graph", lambda: facility_location_greedy_many(
            feats, vectors, [keep1] * args.images, impl="recompute_graph"))
        loops["stage1 on host"] = ("numpy", lambda: facility_location_greedy_many(
            [f.cpu() for f in feats], [v.cpu() for v in vectors], [keep1] * args.images))
    picks = {name: [t.cpu() for t in fn()] for name, (_, fn) in loops.items()}  # also the warm-up
    ref = facility_location_greedy_many([f.cpu() for f in feats], [v.cpu() for v in vectors], [keep1] * args.images,
                                        impl="incremental")
    ref_d = [divprune_select(f.cpu(), keep_d, impl="torch") for f in feats]
    equal = {name: all(torch.equal(a, b) for a, b in zip(p, ref if name.startswith("stage1") else ref_d))
             for name, p in picks.items()}
    wall: dict[str, list[float]] = {name: [] for name in loops}
    cpu: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.repeats):
        for name, (_, fn) in loops.items():
            _sync(args.device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync(args.device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    rows = [{"loop": name, "impl": impl, "wall_ms": 1e3 * statistics.median(wall[name]),
             "cpu_ms": 1e3 * statistics.median(cpu[name]), "wall_runs_ms": [1e3 * w for w in wall[name]],
             "picks_equal_reference": equal[name]} for name, (impl, _) in loops.items()]
    return {"config": vars(args), "keep_stage1": keep1, "keep_divprune": keep_d,
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "threads": torch.get_num_threads(),
                            "device_name": torch.cuda.get_device_name() if not on_cpu else (platform.processor() or platform.machine())},
            "results": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=1280)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--ratio", type=float, default=0.778)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the engine selects on 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the result to this file")
    args = p.parse_args(argv)
    if args.tokens < 2 or args.images < 1 or args.repeats < 1 or not 0 < args.ratio < 1:
        p.error(f"need tokens >= 2, images >= 1, repeats >= 1 and ratio in (0, 1), got {args.tokens}, "
                f"{args.images}, {args.repeats}, {args.ratio}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA device here (torch {torch.__version__})")
    result = run(args)
    for r in result["results"]:
        print(f"{r['loop']:<16} {r['impl']:<12} wall {r['wall_ms']:9.1f} ms  cpu {r['cpu_ms']:9.1f} ms  "
              f"picks equal: {r['picks_equal_reference']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if all(r["picks_equal_reference"] for r in result["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
