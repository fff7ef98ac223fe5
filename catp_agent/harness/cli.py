"""catp-agent: prune the image tokens of vision-language GUI agents, and measure it.

Usage (each subcommand has its own --help):

    catp-agent run                          # one web episode with the default model under CATP
    catp-agent run --task catp/login-v0 --method catp --ratio 0.778 --trace runs/trace
    catp-agent eval --tasks catp/login-v0 --seeds 0-4 --methods none,catp --ratios 0.778 --out runs/eval
    catp-agent ablate --tasks catp/login-v0 --seeds 0-2 --out runs/ablate   # temporal vs layer difference
    catp-agent bench --json                 # prefill latency, KV cache and FLOPs per method and R
    catp-agent tasks                        # list the registered web tasks
    catp-agent train --out runs/train       # train the default agent model (CPU, behaviour cloning)
    catp-agent dagger --model runs/train --out runs/dagger1 --seeds 10000-10049   # DAgger relabelling

Subcommand modules register themselves in SUBCOMMANDS as "module:register_function"; each
register function adds its parser and sets ``func``. Modules load only when named, so
``catp-agent bench`` never imports Playwright and ``catp-agent tasks`` never imports torch.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("catp_agent.harness.evaluation.commands:register_run", "run one episode and print a readable step log"),
    "eval": ("catp_agent.harness.evaluation.commands:register_eval", "tasks x seeds x methods x ratios, results as JSON lines"),
    "ablate": ("catp_agent.harness.evaluation.commands:register_ablate", "the temporal-vs-layer ablation grid"),
    "report": ("catp_agent.harness.report:register", "write RUN_DIR/report.html: walk through a run's episodes step by step"),
    "bench": ("catp_agent.harness.bench:register", "prefill latency / KV cache / FLOPs per method and ratio"),
    "tasks": ("catp_agent.harness.tasks:register", "list the registered web tasks"),
    "train": ("catp_agent.harness.training.commands:register_train", "behaviour-clone the default agent model from the task oracles"),
    "dagger": ("catp_agent.harness.training.commands:register_dagger",
               "a DAgger round: the model drives, the oracle labels each step; demos for train --extra-demos"),
}


def _load(spec: str):
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="catp-agent", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (spec, help_text) in SUBCOMMANDS.items():
        if only is None or name == only:
            _load(spec)(sub.add_parser(name, help=help_text, description=help_text))
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in SUBCOMMANDS:
        close = difflib.get_close_matches(command, SUBCOMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"catp-agent: unknown command {command!r}{hint}; choose from {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
