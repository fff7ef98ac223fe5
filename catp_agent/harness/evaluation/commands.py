"""The ``run``, ``eval`` and ``ablate`` subcommands of ``catp-agent``.

    catp-agent run --task catp/login-v0 --policy oracle
    catp-agent run --model path/to/Qwen2-VL-2B-Instruct --method catp --ratio 0.778 --trace runs/trace
    catp-agent eval --tasks catp/login-v0,catp/menu-v0 --seeds 0-4 --methods none,catp,fastv \\
        --ratios 0.667,0.778 --model path/to/ckpt --out runs/eval --workers 2
    catp-agent ablate --tasks catp/login-v0 --seeds 0-2 --model path/to/ckpt --out runs/ablate
    catp-agent ablate --tasks bundled --seeds 0-9 --model path/to/ckpt --workers 8 \\
        --backend ray --ray-address HEAD:6379          # on a Ray cluster (README: "Running on a cluster")

Every eval writes ``episodes.jsonl`` (one line per episode), ``config.json``, ``summary.md``,
``summary.csv``, ``summary.json``, ``plots/``, ``steps/`` (the screenshots, ``--save-screens``)
and ``report.html`` (``catp-agent report``) into ``--out``; rerunning the same command resumes
where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from catp_agent.methods import MODES, method_names

__all__ = ["register_ablate", "register_eval", "register_run"]

_RAW = argparse.RawDescriptionHelpFormatter
SAVE_SCREENS_AUTO_MAX_EPISODES = 1000
"""``--save-screens`` is on by default for grids of at most this many episodes."""


def _viewport(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"viewport must look like 640x480, got {text!r}") from None
    return (w, h)


def _err(command: str, message: str) -> int:
    print(f"catp-agent {command}: error: {message}", file=sys.stderr)
    return 2


def _setup(parser: argparse.ArgumentParser, epilog: str) -> None:
    parser.formatter_class = _RAW
    parser.epilog = epilog


def _add_loading(parser: Any) -> None:
    """--device, --dtype, --attn, --dialect: how the vlm policy's model is loaded, prompted and read."""
    from catp_agent.agent.dialects import dialect_names

    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), bf16, fp16, fp32")
    parser.add_argument("--attn", default="sdpa", help="sdpa or flash_attention_2 (needs flash_attn)")
    parser.add_argument("--dialect", default=None,
                        help=f"action dialect: {', '.join(dialect_names())} (default: by model type)")
    parser.add_argument("--no-pointer", action="store_true",
                        help="run a model folder without the pointer head saved beside it (clicks: the model's own "
                             "coordinates)")


def _loading(args: argparse.Namespace) -> Any:
    from catp_agent.harness.validate import ModelLoading

    return ModelLoading(args.device, args.dtype, args.attn, args.dialect, not args.no_pointer)


def _load(args: argparse.Namespace, model: str | None) -> Any:
    return _loading(args).load(model)


# ------------------------------------------------------------------------------------ eval / ablate
def _add_common(parser: argparse.ArgumentParser, out_default: str) -> None:
    g = parser.add_argument_group("what to run")
    g.add_argument("--tasks", default="catp/login-v0",
                   help="comma-separated env ids, or 'bundled' for every bundled task (default: %(default)s)")
    g.add_argument("--seeds", default="0-2", help="episode seeds: '0-4', '0,3,7' (default: %(default)s)")
    g.add_argument("--policy", default="vlm", help="registered policy: vlm, oracle, random (default: %(default)s)")
    g.add_argument("--model", default=None, help="VLM checkpoint path or hub id (vlm policy)")
    g.add_argument("--max-steps", type=int, default=None, help="steps per episode (default: the task's)")
    g.add_argument("--viewport", type=_viewport, default=None, help="page size WxH (default: the task's)")
    g.add_argument("--history", type=int, default=3, help="screenshots in the VLM's window (default: 3)")
    _add_loading(g)
    g.add_argument("--no-fidelity", action="store_true",
                   help="skip the unpruned reference action per step (faster; no fidelity column)")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a pruning option for every run whose method has it, e.g. --set k_layer=4 --set gamma=0.8")
    g = parser.add_argument_group("how to run")
    g.add_argument("--out", default=out_default, help="results folder; rerun to resume (default: %(default)s)")
    g.add_argument("--workers", type=int, default=1, help="parallel episode processes, each with its own browser")
    g.add_argument("--backend", default="local", choices=("local", "ray"),
                   help="where workers run: local processes, or Ray actors (pip install 'catp-agent[ray]') "
                        "(default: %(default)s)")
    g.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="Ray cluster head to use with --backend ray (default: a local cluster for this run)")
    g.add_argument("--episode-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="--backend ray: kill a worker whose episode runs longer and record an error (default: 600)")
    g.add_argument("--ray-gpus-per-worker", type=float, default=0.0, metavar="N",
                   help="--backend ray: GPUs each worker asks Ray for, fractions share one (default: 0)")
    g.add_argument("--sample-step", type=int, default=1,
                   help="step saved for kept-token heatmaps, first seed only; -1: none (default: 1)")
    g.add_argument("--retry-errors", action="store_true", help="rerun finished episodes that ended in an error")
    g.add_argument("--no-plots", action="store_true", help="write the summary but no PNG plots")
    g.add_argument("--save-screens", action=argparse.BooleanOptionalAction, default=None,
                   help="store every step's screenshot (lossless WebP, each distinct screen once) under "
                        f"OUT/steps/ for the HTML report (default: on for grids of at most "
                        f"{SAVE_SCREENS_AUTO_MAX_EPISODES} episodes, off above)")
    g.add_argument("--no-report", action="store_true", help="do not write OUT/report.html (catp-agent report)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--json", action="store_true", help="print the run report and summary as JSON")


def _tasks(text: str) -> tuple[str, ...]:
    if text.strip() == "bundled":
        import envs
        from envs.tasks import BUNDLED_TASKS

        return tuple(t for t in envs.list_tasks() if t.removeprefix("catp/").removesuffix("-v0") in BUNDLED_TASKS)
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _eval_config(args: argparse.Namespace, variants: tuple, ratios: tuple[float, ...]) -> Any:
    from catp_agent.harness.evaluation.grid import EvalConfig, parse_overrides, parse_seeds

    return EvalConfig(tasks=_tasks(args.tasks), seeds=parse_seeds(args.seeds), variants=variants, ratios=ratios,
                      policy=args.policy, model=args.model, max_steps=args.max_steps, viewport=args.viewport,
                      history=args.history, fidelity=not args.no_fidelity,
                      pruning_overrides=parse_overrides(args.overrides), sample_step=args.sample_step,
                      retry_errors=args.retry_errors, workers=args.workers, loading=_loading(args))


def _checked_grid(args: argparse.Namespace, variants: tuple, ratios: tuple[float, ...]) -> tuple[Any, Any]:
    """(EvalConfig, the loaded model for one in-process vlm worker, else None), or a ValueError
    naming the bad value: tasks, policy, --out, then the model is loaded once and the grid's
    pruning checked against it. Nothing here starts a browser."""
    from catp_agent.harness import validate

    try:
        config = _eval_config(args, variants, ratios)
    except TypeError as exc:  # a config field of the wrong type: same one-line refusal
        raise ValueError(str(exc)) from None
    validate.check_tasks(config.tasks)
    validate.check_policy(config.policy)
    validate.check_out_dir(args.out)
    if config.policy != "vlm":
        if config.model is not None:
            raise ValueError(f"--model is for the vlm policy; --policy {config.policy!r} takes no model")
        return config, None
    validate.check_model_folder(config.model)
    here = config.workers == 1 and args.backend == "local"
    # Workers load their own model with config.loading (on a cluster, on the GPUs Ray gave them);
    # the driver, which may have no GPU nor flash_attn, loads it once on its CPU to check that it
    # loads and fits the grid's pruning.
    loading = config.loading if here else dataclasses.replace(config.loading, device="cpu", attn="sdpa")
    agent = loading.load(config.model)
    first = {run.variant: run for run in config.runs()}.values()
    validate.check_pruning_on_model([run.pruning(config.pruning_overrides) for run in first], agent)
    return config, agent if here else None


def _run_grid(command: str, args: argparse.Namespace, variants: tuple, ratios: tuple[float, ...]) -> int:
    from catp_agent.harness.evaluation.plots import write_plots
    from catp_agent.harness.evaluation.results import ResultsLocked
    from catp_agent.harness.evaluation.runner import run_eval
    from catp_agent.harness.evaluation.summary import write_summary

    try:
        if args.backend == "ray":  # Ray missing or a bad Ray option: exit 2 before the model loads
            from catp_agent.harness.evaluation.ray_backend import RayOptions, require_ray

            RayOptions(args.ray_address, args.episode_timeout, args.ray_gpus_per_worker)
            require_ray()
        config, model = _checked_grid(args, variants, ratios)  # bad input: exit 2 before any browser starts
        save_screens = (len(config.runs()) <= SAVE_SCREENS_AUTO_MAX_EPISODES if args.save_screens is None
                        else args.save_screens)
        report = run_eval(config, args.out, model=model, progress=not args.no_progress, save_screens=save_screens,
                          backend=args.backend, ray_address=args.ray_address, episode_timeout=args.episode_timeout,
                          ray_gpus_per_worker=args.ray_gpus_per_worker)
    except (ValueError, ResultsLocked) as exc:
        return _err(command, str(exc))
    except RuntimeError as exc:  # the Ray backend could not start a worker: nothing more was recorded
        if args.backend != "ray":
            raise
        return _err(command, str(exc))
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished episodes are in {args.out}/episodes.jsonl. "
              "Run the same command again to resume.", file=sys.stderr)
        return 130
    summary = write_summary(args.out)
    plots = [] if args.no_plots else write_plots(args.out, summary)
    html = None
    if not args.no_report:
        from catp_agent.harness.report import write_report

        html = write_report(args.out)
    if args.json:
        print(json.dumps({"report": report.to_dict(), "summary": summary.to_json(),
                          "plots": [str(p) for p in plots], "html_report": None if html is None else str(html)},
                         indent=2))
    else:
        print(f"{report.ran} episodes run, {report.skipped} already done, {report.errors} with errors "
              f"-> {args.out}/episodes.jsonl")
        print(summary.overall_table())
        print(f"\nfull summary: {args.out}/summary.md" + (f"; plots: {args.out}/plots/" if plots else "")
              + (f"; open {html} in a browser to walk through the episodes" if html else ""))
    return 0 if report.errors == 0 else 1


def _eval(args: argparse.Namespace) -> int:
    from catp_agent.harness.evaluation.grid import parse_ratios, parse_variants

    try:
        variants = parse_variants(args.methods, args.modes, args.persistence)
        ratios = parse_ratios(args.ratios)
    except ValueError as exc:
        return _err("eval", str(exc))
    return _run_grid("eval", args, variants, ratios)


def register_eval(parser: argparse.ArgumentParser) -> None:
    """``catp-agent eval``: tasks x seeds x methods x ratios."""
    _setup(parser, """examples:
  catp-agent eval --policy oracle --tasks catp/login-v0 --seeds 0-1 --methods none --out runs/oracle
  catp-agent eval --model path/to/ckpt --tasks bundled --seeds 0-4 --methods none,catp,fastv \\
      --ratios 0.667,0.778,0.889 --out runs/eval --workers 2
  catp-agent eval --model path/to/ckpt --methods catp --modes layer,temporal --persistence both --set k_layer=4

Method none runs once at R = 0. Exit status 1 when some episode ended in an error (see its record);
2 when the input is refused before anything runs (unknown task, policy or method, an unreadable
model, absurd sizes, a results folder another run is writing).""")
    g = parser.add_argument_group("pruning grid")
    g.add_argument("--methods", default="none,catp", help=f"comma list of {', '.join(method_names())} (default: %(default)s)")
    g.add_argument("--ratios", default="0.778", help="comma list of R in (0, 1) (default: %(default)s)")
    g.add_argument("--modes", default="layer", help=f"catp stage-2 modes, comma list of {', '.join(MODES)}")
    g.add_argument("--persistence", default="off", choices=("off", "on", "both"),
                   help="catp persistence weighting (default: %(default)s)")
    _add_common(parser, "runs/eval")
    parser.set_defaults(func=_eval)


def _ablate(args: argparse.Namespace) -> int:
    from catp_agent.harness.evaluation.presets import PRESETS

    preset = PRESETS[args.preset]
    user_fields = {item.split("=", 1)[0].strip() for item in args.overrides}
    args.overrides = [f"{k}={v}" for k, v in preset.overrides if k not in user_fields] + list(args.overrides)
    return _run_grid("ablate", args, preset.variants, preset.ratios)


def register_ablate(parser: argparse.ArgumentParser) -> None:
    """``catp-agent ablate``: eval with the ablation preset."""
    _setup(parser, """the grid (catp_agent/harness/evaluation/presets.py):
  none (R = 0); catp in modes layer / temporal / both, each without and with persistence;
  fastv, divprune, random, recency; at R = 0.667, 0.778, 0.889  (3 x 6 + 3 x 4 + 1 = 31 runs per task and seed)

examples:
  catp-agent ablate --model path/to/ckpt --tasks catp/login-v0 --seeds 0-2 --out runs/ablate
  catp-agent ablate --model path/to/ckpt --tasks bundled --seeds 0-4 --workers 4 --no-fidelity""")
    from catp_agent.harness.evaluation.presets import PRESETS

    parser.add_argument("--preset", default="ablation", choices=sorted(PRESETS), help="the grid (default: %(default)s)")
    _add_common(parser, "runs/ablate")
    parser.set_defaults(func=_ablate)


# --------------------------------------------------------------------------------------------- run
def _checked_run(args: argparse.Namespace) -> tuple[str, Any, Any]:
    """(task, pruning config, model: loaded for the vlm policy) for ``run``, or a ValueError
    naming the bad value. Nothing here starts a browser."""
    import math

    from catp_agent.harness import validate
    from catp_agent.harness.evaluation.grid import (MAX_HISTORY, MAX_SEED, MAX_SEEDS, MAX_STEPS, Variant,
                                                    parse_overrides, variant_config)
    from catp_agent.harness.evaluation.single import default_task
    from catp_agent.methods import config_fields

    if not 1 <= args.episodes <= MAX_SEEDS:
        raise ValueError(f"--episodes must be in [1, {MAX_SEEDS}], got {args.episodes}")
    highest = MAX_SEED - args.episodes + 1  # the last episode's seed must be a seed too
    if not 0 <= args.seed <= highest:
        last = "" if args.episodes == 1 else f" (with --episodes {args.episodes}: at most {highest})"
        raise ValueError(f"--seed must be in [0, {MAX_SEED}]{last}, got {args.seed}")
    if not (math.isfinite(args.ratio) and 0.0 <= args.ratio < 1.0):
        raise ValueError(f"--ratio must be a finite number in [0, 1) (R = 0: no pruning), got {args.ratio}")
    if args.max_steps is not None and not 1 <= args.max_steps <= MAX_STEPS:
        raise ValueError(f"--max-steps must be in [1, {MAX_STEPS}], got {args.max_steps}")
    if not 1 <= args.history <= MAX_HISTORY:
        raise ValueError(f"--history must be in [1, {MAX_HISTORY}] (the current screenshot counts), "
                         f"got {args.history}")
    if args.trace is not None:
        validate.check_out_dir(args.trace, "--trace")
    variant = Variant(args.method, args.mode, args.persistence)
    overrides = parse_overrides(args.overrides)
    own = config_fields(args.method)
    for name, _ in overrides:
        if name in ("method", "ratio", "seed", "mode", "persistence"):
            raise ValueError(f"--set {name}=... is not allowed; use --{name}")
        if name not in own:
            raise ValueError(f"method {args.method!r} has no option {name!r}; its options: {', '.join(own)}")
    try:
        pruning = variant_config(variant, 0.0 if args.method == "none" else args.ratio, args.seed, overrides)
    except TypeError as exc:  # a config field of the wrong type: same one-line refusal
        raise ValueError(str(exc)) from None
    task = args.task or default_task()
    validate.check_tasks([task])
    validate.check_policy(args.policy)
    if args.policy != "vlm":
        if args.model is not None:
            raise ValueError(f"--model is for the vlm policy; --policy {args.policy!r} takes no model")
        return task, pruning, None
    validate.check_model_folder(args.model)
    agent = _load(args, args.model)
    validate.check_pruning_on_model([pruning], agent)
    return task, pruning, agent


def _run(args: argparse.Namespace) -> int:
    from catp_agent.harness.evaluation.single import run_single

    try:
        task, pruning, model = _checked_run(args)  # bad input: exit 2 before any browser starts
    except ValueError as exc:
        return _err("run", str(exc))
    ratio = pruning.ratio
    try:
        log = None if args.json else print
        results = []
        for i in range(args.episodes):
            seed = args.seed + i
            if log:
                prunes = args.policy == "vlm"  # the other built-in policies see no image tokens
                print(f"{task}  seed {seed}  policy {args.policy}"
                      + (f"  method {args.method}" if prunes else "")
                      + (f"  R={ratio:g}  mode {args.mode}" if prunes and not pruning.is_identity else ""))
            trace = args.trace if args.episodes == 1 or args.trace is None else f"{args.trace}/seed{seed}"
            result = run_single(task, seed, args.policy, pruning, model, args.max_steps, args.history,
                                args.fidelity, trace, speedup=not args.no_speedup, log=log)
            results.append(result)
            if log:
                _print_episode(result)
    except ValueError as exc:
        return _err("run", str(exc))
    if args.json:
        print(json.dumps(results[0] if args.episodes == 1 else results, indent=2, default=str))
        return 0
    if args.episodes > 1:
        _print_totals(results, args.method if args.policy == "vlm" and not pruning.is_identity else None)
    return 0


def _print_episode(result: dict) -> None:
    status = "success" if result["success"] else "failure"
    print(f"{status} after {result['steps']} steps, reward {result['reward']:g}, {result['wall_s']:.1f} s"
          + (f"; error: {result['error']}" if result["error"] else ""))
    sp = result.get("speedup")
    if sp and sp["prefill_speedup"]:
        print(f"prefill speed-up over unpruned: {sp['prefill_speedup']:.2f}x (median per step "
              f"{1e3 * sp['median_prefill_s_unpruned']:.1f} ms -> {1e3 * sp['median_prefill_s']:.1f} ms)"
              f"; unpruned episode: {'success' if sp['unpruned_success'] else 'failure'}")
    if result.get("trace_dir"):
        print(f"trace: {result['trace_dir']}/step_*.png, steps.jsonl")


def _print_totals(results: list[dict], method: str | None) -> None:
    import statistics

    n = len(results)
    wins = sum(bool(r["success"]) for r in results)
    line = f"== {wins}/{n} episodes solved"
    speedups = [r["speedup"] for r in results if r.get("speedup") and r["speedup"]["prefill_speedup"]]
    if method and speedups:
        base_wins = sum(bool(s["unpruned_success"]) for s in speedups)
        line += (f" with {method}; unpruned: {base_wins}/{len(speedups)}; prefill speed-up over unpruned: "
                 f"{statistics.median(s['prefill_speedup'] for s in speedups):.2f}x (median of episodes)")
    print(line)


def register_run(parser: argparse.ArgumentParser) -> None:
    """``catp-agent run``: one episode, a readable step log."""
    _setup(parser, """examples:
  catp-agent run                                         # default model, catp at R=0.778 on catp/login-v0
  catp-agent run --policy oracle --task catp/menu-v0 --seed 3
  catp-agent run --model path/to/ckpt --method catp --mode temporal --persistence --trace runs/trace
  catp-agent run --model path/to/ckpt --json

Each step prints: step, action, image tokens in -> after stage 1 -> final, prefill time.
With a pruning vlm run, a second episode runs unpruned on the same seed (sharing the model)
and the median prefill per step of both gives the speed-up; --no-speedup skips it.""")
    parser.add_argument("--task", default=None, help="env id (default: catp/login-v0, else the first task)")
    parser.add_argument("--seed", type=int, default=0, help="episode seed (default: 0)")
    parser.add_argument("--episodes", type=int, default=1, help="run seeds SEED .. SEED+N-1 and total them (default: 1)")
    parser.add_argument("--policy", default="vlm", help="vlm, oracle or random (default: %(default)s)")
    parser.add_argument("--method", default="catp", choices=method_names(), help="pruning method (default: %(default)s)")
    parser.add_argument("--ratio", type=float, default=0.778, help="R, fraction of image tokens removed")
    parser.add_argument("--mode", default="layer", choices=MODES, help="catp stage-2 mode (default: %(default)s)")
    parser.add_argument("--persistence", action="store_true", help="catp persistence weighting")
    parser.add_argument("--model", default=None, help="VLM checkpoint path or hub id")
    _add_loading(parser)
    parser.add_argument("--max-steps", type=int, default=None, help="steps before truncation (default: the task's)")
    parser.add_argument("--history", type=int, default=3, help="screenshots in the VLM's window (default: 3)")
    parser.add_argument("--fidelity", action="store_true", help="also log the unpruned action per step")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a pruning option of the method, e.g. --set k_layer=4")
    parser.add_argument("--trace", default=None, metavar="DIR", help="write step_NNN.png (kept tokens drawn) and steps.jsonl")
    parser.add_argument("--no-speedup", action="store_true", help="skip the unpruned comparison episode")
    parser.add_argument("--json", action="store_true", help="print the episode record as JSON, no log")
    parser.set_defaults(func=_run)
