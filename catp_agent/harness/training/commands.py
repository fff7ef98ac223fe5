"""``catp-agent train``: behaviour-clone the default agent model from the tasks' oracles;
``catp-agent dagger``: a DAgger round, the model's own states labelled by the oracles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register_dagger", "register_train"]

EPILOG = """\
examples:
  catp-agent train                                   # the shipped recipe, into runs/train
  catp-agent train --out catp_agent/assets/default_model   # replace the bundled model
  catp-agent train --episodes-per-task 20 --epochs 1 --out runs/quick   # a quick smoke run
  catp-agent eval --model runs/train --tasks bundled --seeds 0-9 --methods none   # held-out success
  catp-agent dagger --model runs/train --out runs/dagger1 --tasks bundled --seeds 10000-10049
  catp-agent train --init runs/train --extra-demos runs/dagger1 --out runs/train_dagger1   # a DAgger round
  catp-agent train --tower catp_agent/assets/reading_tower --ground-warmup-steps 2000 --pointer-weight 1 \\
      --pack-episodes --out runs/reading   # the reading model: frozen tower, grounding practice first

Demonstrations are cached in --demo-dir (reused by later runs). Training is deterministic from
--seed on a given machine and thread count. An interrupted run resumes from OUT/train_state.pt
when rerun with the same arguments. Evaluation seeds are those below 1000; demos start at
--seed-start (>= 1000), so the two never overlap.
"""


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
        return value
    return parse


def register_train(parser: argparse.ArgumentParser) -> None:
    from catp_agent.harness.training.model import ModelSize
    from catp_agent.harness.training.train import TrainConfig

    d = TrainConfig()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--out", default=d.out, help="output model folder (from_pretrained layout) (default: %(default)s)")
    parser.add_argument("--demo-dir", default=d.demo_dir, help="demonstration cache (default: %(default)s)")
    parser.add_argument("--tasks", default="bundled", help="comma list of env ids, or 'bundled' (default: %(default)s)")
    parser.add_argument("--episodes-per-task", type=_positive(int), default=d.episodes_per_task,
                        help="oracle episodes per task, the last --val-episodes of them held out (default: %(default)s)")
    parser.add_argument("--val-episodes", type=int, default=d.val_episodes_per_task, help="per task (default: %(default)s)")
    parser.add_argument("--seed-start", type=int, default=d.seed_start, help="first demo seed, >= 1000 (default: %(default)s)")
    parser.add_argument("--history", type=int, default=d.history, help="past screens in each prompt (default: %(default)s)")
    parser.add_argument("--epochs", type=_positive(float), default=d.epochs, help="passes over the samples (default: %(default)s)")
    parser.add_argument("--batch-size", type=_positive(int), default=d.batch_size, help="(default: %(default)s)")
    parser.add_argument("--lr", type=_positive(float), default=d.lr, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--copy-batch", type=int, default=d.copy_batch,
                        help="text-only copy-practice samples per step: type() steps with the typed values swapped, "
                             "so the model learns to type what the instruction says; 0 turns it off (default: %(default)s)")
    parser.add_argument("--copy-warmup-steps", type=int, default=d.copy_warmup_steps,
                        help="text-only copy-practice steps (batch 32, cheap) before behaviour cloning starts: the "
                             "model learns to copy there first (default: %(default)s)")
    parser.add_argument("--copy-weight", type=float, default=d.copy_weight,
                        help="weight of the copy-practice loss (default: %(default)s)")
    parser.add_argument("--ground-batch", type=int, default=d.ground_batch,
                        help="grounding-practice samples per behaviour-cloning step: one screen and 'Click \"<text>\".' "
                             "answered by a click at that element's centre; needs demos collected with their elements "
                             "(this version stores them); 0 turns it off (default: %(default)s)")
    parser.add_argument("--ground-warmup-steps", type=int, default=d.ground_warmup_steps,
                        help="grounding-practice steps (batch 64, copy practice beside) before behaviour cloning "
                             "(default: %(default)s)")
    parser.add_argument("--ground-weight", type=float, default=d.ground_weight,
                        help="weight of the grounding-practice loss (default: %(default)s)")
    parser.add_argument("--pointer-weight", type=float, default=d.pointer_weight,
                        help="> 0: also train a pointer head (clicks choose among the current screen's image tokens, then "
                             "an offset inside the token's patch; catp_agent.agent.pointer) with this loss weight, saved "
                             "beside the model as pointer_head.safetensors; 0: none (default: %(default)s)")
    parser.add_argument("--pointer-dim", type=_positive(int), default=d.pointer_dim,
                        help="the pointer head's query/key size (default: %(default)s)")
    parser.add_argument("--init", default="", metavar="MODEL_DIR",
                        help="start from this model folder's weights and tokenizer instead of fresh ones, e.g. "
                             "to add a second stage to a trained model (default: fresh)")
    parser.add_argument("--tower", default="", metavar="TOWER_DIR",
                        help="train the reading model: this practised convolutional tower (e.g. catp_agent/assets/"
                             "reading_tower, made by scripts/grounding_probe.py) in place of CLIP, frozen, each screen "
                             "encoded once for the run; screens at 640x480, 300 tokens (15x20). --image-size and "
                             "--patch-size do not apply (default: the CLIP model)")
    parser.add_argument("--pack-episodes", action="store_true",
                        help="behaviour cloning by whole episodes (about --batch-size steps per step), each episode's "
                             "steps packed into one row that holds each screen once; exact, and several times fewer "
                             "tokens when --history reaches back to the episode's start (default: steps at random)")
    parser.add_argument("--extra-demos", default="", metavar="DIR[,DIR]",
                        help="more demonstration folders whose episodes join the training split (never validation), "
                             "for the --tasks trained; made by `catp-agent dagger`: the model's own states labelled "
                             "with the oracle's action, so that it learns to recover from its mistakes. Episodes on "
                             "evaluation or validation seeds are left out (default: none)")
    parser.add_argument("--image-size", type=_positive(int), default=ModelSize().image_size,
                        help="screens are squashed to this square size, in px (default: %(default)s)")
    parser.add_argument("--patch-size", type=_positive(int), default=ModelSize().patch_size,
                        help="vision patch side in px; image tokens per screen = (image size / patch size)^2 "
                             "(default: %(default)s; scripts/train_step_cost.py measures what a size costs)")
    parser.add_argument("--sincos-init", action="store_true",
                        help="start fresh weights with sine-cosine codes for the patch positions and the coordinate tokens "
                             "(see catp_agent.harness.training.model.sincos_init); not with --init")
    parser.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                        help="learning-rate warm-up steps of each phase (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="weights and batch order (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads, 0 = default (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda (default: %(default)s)")
    parser.add_argument("--workers", type=_positive(int), default=d.workers, help="browser processes collecting demos (default: %(default)s)")
    parser.add_argument("--time-budget", type=float, default=0.0, metavar="MIN",
                        help="stop training after MIN minutes and save what there is (default: no limit)")
    parser.add_argument("--keep-state", action="store_true", help="keep OUT/train_state.pt (optimizer state) after a finished run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from catp_agent.harness.training.card import write_model_card
    from catp_agent.harness.training.model import ModelSize
    from catp_agent.harness.training.train import BUNDLED_TASKS, TrainConfig, train

    tasks = BUNDLED_TASKS if args.tasks == "bundled" else tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    try:
        size = ModelSize(image_size=args.image_size, patch_size=args.patch_size)
        cfg = TrainConfig(size=size, out=args.out, demo_dir=args.demo_dir, tasks=tasks, episodes_per_task=args.episodes_per_task,
                          val_episodes_per_task=args.val_episodes, seed_start=args.seed_start, history=args.history,
                          epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          copy_batch=args.copy_batch, copy_weight=args.copy_weight,
                          copy_warmup_steps=args.copy_warmup_steps, ground_batch=args.ground_batch,
                          ground_weight=args.ground_weight, ground_warmup_steps=args.ground_warmup_steps,
                          pointer_weight=args.pointer_weight, pointer_dim=args.pointer_dim,
                          init_from=args.init, tower=args.tower, pack_episodes=args.pack_episodes, sincos_init=args.sincos_init, warmup_steps=args.warmup_steps,
                          extra_demo_dirs=tuple(d.strip() for d in args.extra_demos.split(",") if d.strip()),
                          threads=args.threads, device=args.device, workers=args.workers, time_budget_s=60.0 * args.time_budget)
    except ValueError as exc:
        print(f"catp-agent train: {exc}", file=sys.stderr)
        return 2
    summary = train(cfg, progress=not args.no_progress)
    write_model_card(Path(cfg.out), summary)
    if not args.keep_state:
        (Path(cfg.out) / "train_state.pt").unlink(missing_ok=True)
    final = summary["final"]
    print(json.dumps({"out": cfg.out, "steps": summary["steps"], "train_s": summary["train_s"],
                      "val_loss": final.get("val_loss"), "val_action_acc": final.get("val_action_acc")}))
    return 0


DAGGER_EPILOG = """\
examples:
  catp-agent dagger --model runs/train --out runs/dagger1 --tasks bundled --seeds 10000-10049
  catp-agent dagger --model runs/train --out runs/dagger1 --tasks catp/login-v0,catp/menu-v0 --seeds 10000-10099 --workers 2
  catp-agent train --init runs/train --extra-demos runs/dagger1 --out runs/train_dagger1   # train on them

The model plays each (task, seed); before each of its actions the task's oracle says what the
right action from that screen is (the label). Every episode is stored in OUT as a demo with the
executed actions (the model's) and the labels; `catp-agent train --extra-demos OUT` adds them to
the training split. --beta P executes the oracle's action instead with probability P, to reach
states further along the tasks. Seeds must be >= 1000 (below are the evaluation seeds); rerunning
the same command skips the episodes already stored. OUT/dagger_report.json holds the report:
per task episodes, successes, steps and how often the model's action equalled the label.
"""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text!r}")
    return value


def register_dagger(parser: argparse.ArgumentParser) -> None:
    """``catp-agent dagger``: one DAgger round (catp_agent.harness.training.dagger)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = DAGGER_EPILOG
    parser.add_argument("--model", required=True, metavar="DIR", help="the model folder that drives (a trained checkpoint)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="demo folder the episodes go to (the layout of --demo-dir; resumable)")
    parser.add_argument("--tasks", default="bundled", help="comma list of env ids, or 'bundled' (default: %(default)s)")
    parser.add_argument("--seeds", default="10000-10049",
                        help="training seeds, >= 1000: '10000-10049', '10000,10007' (default: %(default)s)")
    parser.add_argument("--beta", type=_fraction, default=0.0,
                        help="chance that a step executes the oracle's action instead of the model's (default: %(default)s)")
    parser.add_argument("--max-steps", type=_positive(int), default=None, help="steps per episode (default: the task's own limit)")
    parser.add_argument("--history", type=int, default=3, help="past screens in the model's prompt, as trained (default: %(default)s)")
    parser.add_argument("--workers", type=_positive(int), default=1,
                        help="processes, each with its own browser and copy of the model (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the --beta draws (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_dagger)


def run_dagger(args: argparse.Namespace) -> int:
    from catp_agent.harness import validate
    from catp_agent.harness.evaluation.grid import parse_seeds
    from catp_agent.harness.training.dagger import check_dagger_args, collect_dagger
    from catp_agent.harness.training.train import BUNDLED_TASKS

    tasks = BUNDLED_TASKS if args.tasks.strip() == "bundled" else tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    try:  # bad input: exit 2 before a browser starts (the model loads once here, to refuse one that cannot)
        seeds = parse_seeds(args.seeds)
        check_dagger_args(tasks, seeds, beta=args.beta, max_steps=args.max_steps, workers=args.workers, history=args.history)
        validate.check_model_folder(args.model)
        validate.check_out_dir(args.out)
        agent = validate.load_model(args.model)
    except ValueError as exc:
        print(f"catp-agent dagger: error: {exc}", file=sys.stderr)
        return 2
    report = collect_dagger(agent if args.workers == 1 else args.model, args.out, tasks, seeds, history=args.history,
                            max_steps=args.max_steps, beta=args.beta, workers=args.workers,
                            progress=not args.no_progress, seed=args.seed)
    total = report["total"]
    for task, stats in report["tasks"].items():
        print(f"{task}: {stats['episodes']} episodes ({stats['new']} new), {stats['successes']} solved, "
              f"{stats['steps']} steps, model = label on {stats['agree']}"
              + (f", {stats['failed']} ended in an error (not stored)" if stats["failed"] else ""))
    for error in [e for s in report["tasks"].values() for e in s["errors"]][:5]:
        print(f"  {error}", file=sys.stderr)
    print(json.dumps({"out": args.out, **{k: total[k] for k in ("episodes", "new", "successes", "steps", "agree", "empty", "failed")}}))
    return 0 if total["failed"] == 0 else 1
