"""Command line for the web environments.

Usage::

    python -m envs list                                   # all env ids
    python -m envs solve catp/login-v0 --seed 3           # watch the oracle solve it
    python -m envs solve catp/miniwob.click-tab-v0 --seed 0 --screenshots /tmp/shots
    python -m envs bench [--json] [--episodes 20]         # latency benchmark
    python -m envs bench-dom [--json] [--rounds 3]        # step time against page size (1k-200k nodes)
    python -m envs miniwob-report                         # writes envs/miniwob_report.md
    python -m envs soak --episodes 200 --every 20         # do processes and fds stay flat?
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _solve(env_id: str, seed: int, screenshots: Path | None, headed: bool) -> int:
    import gymnasium

    import envs  # noqa: F401 - registers the ids

    if env_id not in envs.list_tasks():
        print(f"unknown env id {env_id!r}; see `python -m envs list`", file=sys.stderr)
        return 2
    with gymnasium.make(env_id, headless=not headed) as env:
        obs, info = env.reset(seed=seed)
        print(f"{env_id} seed {seed}: {obs['instruction']}")
        if screenshots is not None:
            from PIL import Image

            screenshots.mkdir(parents=True, exist_ok=True)
            Image.fromarray(obs["screenshot"]).save(screenshots / "step_00.png")
        while True:
            action = env.unwrapped.oracle_action(obs, info)
            if action is None:
                print("oracle has no further action")
                break
            obs, reward, terminated, truncated, info = env.step(action)
            error = f"  error: {obs['last_action_error']}" if obs["last_action_error"] else ""
            print(f"step {obs['step']:2d}: {action:40s} reward {reward:g}{error}")
            if screenshots is not None:
                Image.fromarray(obs["screenshot"]).save(screenshots / f"step_{obs['step']:02d}.png")
            if terminated or truncated:
                break
        print("success" if info["success"] else "not solved")
        return 0 if info["success"] else 1


def _soak(parser: argparse.ArgumentParser, env_id: str, episodes: int, every: int) -> int:
    from envs.soak import HEADER, TRANSIENT, format_row, grew, run_soak

    if episodes < 1 or every < 1:
        parser.error(f"--episodes and --every must be at least 1, got {episodes} and {every}")
    print(f"{env_id}: {episodes} oracle episodes in one env\n{HEADER}", flush=True)
    samples = []
    for s in run_soak(env_id, episodes, every):
        samples.append(s)
        print(format_row(s), flush=True)
    during = [s for s in samples if s.episodes > 0]
    flat = not grew(during[0], during[-1])
    left = samples[-1].processes
    print(f"counts from episode {during[0].episodes} to {during[-1].episodes}: "
          f"{f'flat (within {TRANSIENT})' if flat else 'GREW'}; processes left after close: {left}")
    return 0 if flat and left == 0 else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m envs``."""
    parser = argparse.ArgumentParser(prog="python -m envs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the registered env ids")
    solve = sub.add_parser("solve", help="run the oracle on one episode and print each step")
    solve.add_argument("env_id")
    solve.add_argument("--seed", type=int, default=0)
    solve.add_argument("--screenshots", type=Path, default=None, help="save step_NN.png here")
    solve.add_argument("--headed", action="store_true", help="show the browser window")
    bench = sub.add_parser("bench", help="median reset/step latency and oracle episodes per minute")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.add_argument("--episodes", type=int, default=20)
    bench.add_argument("--ids", nargs="+", default=None, help="env ids to measure")
    dom = sub.add_parser("bench-dom", help="step time against page size (1k-200k nodes), as ratios in one run")
    dom.add_argument("--json", action="store_true", help="print JSON instead of a table")
    dom.add_argument("--sizes", nargs="+", type=int, default=None, help="page sizes in nodes (default 1k-200k)")
    dom.add_argument("--steps", type=int, default=20, help="steps per size and round")
    dom.add_argument("--rounds", type=int, default=3, help="rounds over all sizes")
    sub.add_parser("miniwob-report", help="check all MiniWoB tasks; write envs/miniwob_report.md")
    soak = sub.add_parser("soak", help="many oracle episodes in one env; print process and fd counts")
    soak.add_argument("--id", default="catp/login-v0", help="env id (default catp/login-v0)")
    soak.add_argument("--episodes", type=int, default=200)
    soak.add_argument("--every", type=int, default=20, help="print counts every this many episodes")
    args = parser.parse_args(argv)

    if args.command == "list":
        import envs

        print("\n".join(envs.list_tasks()))
        return 0
    if args.command == "solve":
        return _solve(args.env_id, args.seed, args.screenshots, args.headed)
    if args.command == "bench":
        from envs.bench import DEFAULT_IDS, format_table, run_benchmark

        if args.episodes < 1:
            parser.error(f"--episodes must be at least 1, got {args.episodes}")
        report = run_benchmark(tuple(args.ids or DEFAULT_IDS), episodes=args.episodes)
        print(json.dumps(report, indent=2) if args.json else format_table(report))
        return 0
    if args.command == "bench-dom":
        from envs.bench_dom import DEFAULT_SIZES, bench_dom, format_dom_table

        if args.steps < 1 or args.rounds < 1:
            parser.error(f"--steps and --rounds must be at least 1, got {args.steps} and {args.rounds}")
        report = bench_dom(tuple(args.sizes or DEFAULT_SIZES), steps=args.steps, rounds=args.rounds)
        print(json.dumps(report, indent=2) if args.json else format_dom_table(report))
        return 0
    if args.command == "miniwob-report":
        from envs.miniwob_report import REPORT_PATH, build_report

        text, rows = build_report()
        REPORT_PATH.write_text(text)
        ok = sum(r["loads"] and r["scored"] for r in rows.values())
        print(f"{ok} of {len(rows)} MiniWoB tasks load and can be scored; wrote {REPORT_PATH}")
        return 0
    if args.command == "soak":
        return _soak(parser, args.id, args.episodes, args.every)
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
