"""The grounding probe: does a vision front end read the screen? (catp_agent.harness.grounding)

Given an element's text, point at that element, on held-out screens of the bundled tasks. The
control asks with the element's role only, so reading is told apart from knowing where things
usually are. Budgets are CPU seconds of the process (all threads) and images seen.

    # demos with their elements: training seeds and held-out probe seeds (resumes)
    python scripts/grounding_probe.py collect --train-seeds 10000-10149 --test-seeds 900-924
    # reading practice on rendered canvases; saves the tower (from_pretrained) and the probe head
    python scripts/grounding_probe.py pretrain --front convnet --cpu-seconds 600 --out runs/glyphs
    # one probe run; --tower is a front-end name or a pretrained folder
    python scripts/grounding_probe.py run --tower runs/glyphs --freeze --cpu-seconds 300 --out runs/probe/glyphs-frozen.json
    python scripts/grounding_probe.py run --tower vit336 --cpu-seconds 300 --out runs/probe/vit336.json
    python scripts/grounding_probe.py run --tower vit336 --control --cpu-seconds 300 --out runs/probe/vit336-control.json
    # keep a practised tower in the repository (float16, with a manifest of how it was made and what it probes)
    python scripts/grounding_probe.py keep --tower runs/glyphs --probe runs/probe/glyphs-frozen.json --out catp_agent/assets/reading_tower
    # the whole model (a reading model trained with a pointer head) asked the same held-out questions,
    # in the agent's prompt form ('Click "<text>".')
    python scripts/grounding_probe.py whole --model runs/reading --out runs/probe/whole-reading.json
    # the table of every run in a folder, with the gate (>= 90 % on tabs, menu, settings, login; >= 40 points over control)
    python scripts/grounding_probe.py table runs/probe
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
import json
import sys
import time
from pathlib import Path

GATE_TASKS = ("catp/tabs-v0", "catp/menu-v0", "catp/settings-v0", "catp/login-v0")
MINIWOB_PROBE = ("catp/miniwob.click-button-v0", "catp/miniwob.click-link-v0", "catp/miniwob.click-tab-v0")
"""MiniWoB++ tasks whose held-out screens make the probe's ``miniwob`` column: words no training canvas drew."""


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        if not lo.strip().isdigit() or (hi and not hi.strip().isdigit()):
            raise argparse.ArgumentTypeError(f"seeds must look like 900-924 or 1,2,5, got {text!r}")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def _tasks(text: str) -> list[str]:
    if text == "bundled":
        import envs

        return list(envs.BUNDLED_IDS)
    return [t for t in text.split(",") if t]


def _collect(args: argparse.Namespace) -> int:
    from catp_agent.harness.training.demos import collect_demos

    for seeds in (args.test_seeds, args.train_seeds):
        report = collect_demos(args.demo_dir, _tasks(args.tasks), seeds, workers=args.workers)
        print(json.dumps({t: (r["kept"], r["failed"]) for t, r in report.items()}))
    return 0


def _probe_for(tower: str, seed: int):
    from catp_agent.harness.grounding.probe import GroundingProbe
    import torch

    from catp_agent.harness.grounding.towers import FRONT_ENDS, build_front_end, load_front_end

    if tower in FRONT_ENDS:
        return GroundingProbe(build_front_end(tower, seed))
    folder = Path(tower)
    meta = json.loads((folder / "probe.json").read_text()) if (folder / "probe.json").exists() else {"front": "convnet"}
    probe = GroundingProbe(load_front_end(folder, meta["front"]))
    if (folder / "probe_head.pt").exists():
        probe.load_state_dict(torch.load(folder / "probe_head.pt"), strict=False)
    return probe


def _log(record: dict) -> None:
    print(json.dumps(record), file=sys.stderr, flush=True)


def _pretrain(args: argparse.Namespace) -> int:
    import torch

    from catp_agent.harness.grounding.probe import Budget, pretrain_on_canvases

    torch.set_num_threads(args.threads)
    probe = _probe_for(args.front, args.seed)
    words: list[str] = []
    if args.words_from_demos:
        from catp_agent.harness.grounding.data import GroundingSet

        gset = GroundingSet.from_demos(args.demo_dir, _tasks(args.tasks), args.train_seeds, max_screens_per_task=200)
        words = sorted({q.text for q in gset.questions})
    from catp_agent.harness.grounding.glyphs import CanvasSpec

    budget = Budget(args.cpu_seconds, args.images)
    if args.objective == "classes":
        from catp_agent.harness.grounding.words import CropSpec, generated_vocabulary, pretrain_on_word_classes

        spec = CropSpec()
        vocabulary = generated_vocabulary(args.seed, args.vocabulary_size, words)
        scale = 1.0 if args.tower_lr_scale is None else args.tower_lr_scale
        stats = pretrain_on_word_classes(probe, budget, vocabulary, batch=args.batch, lr=args.lr, tower_lr_scale=scale,
                                         spec=spec, seed=args.seed, log=_log)
    elif args.objective == "words":
        from catp_agent.harness.grounding.words import CropSpec, pretrain_on_words

        spec = CropSpec()
        stats = pretrain_on_words(probe, budget, batch=args.batch, lr=args.lr,
                                  tower_lr_scale=0.1 if args.tower_lr_scale is None else args.tower_lr_scale,
                                  spec=spec, extra_words=words, seed=args.seed, log=_log)
    else:
        spec = CanvasSpec(height=args.height, lists=args.lists)
        stats = pretrain_on_canvases(probe, budget, batch=args.batch, lr=args.lr, spec=spec, extra_words=words,
                                     seed=args.seed, log=_log)
    stats["objective"] = args.objective
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    probe.tower.save_pretrained(out)
    torch.save({k: v for k, v in probe.state_dict().items() if not k.startswith(("tower.", "front."))}, out / "probe_head.pt")
    before = Path(args.front) / "probe.json"
    earlier = json.loads(before.read_text()) if before.exists() else {}
    total = stats["cpu_s"] + float(earlier.get("total_cpu_s", earlier.get("pretrain", {}).get("cpu_s", 0.0)))
    history = list(earlier.get("history", [])) + [{"command": " ".join(sys.argv), "cpu_s": stats["cpu_s"]}]
    (out / "probe.json").write_text(json.dumps({"front": probe.front.name, "pretrain": stats, "total_cpu_s": total,
                                                "history": history,
                                                "continued_from": earlier or None, "spec": asdict(spec),
                                                "extra_words": len(words), "seed": args.seed}, indent=1))
    print(json.dumps(stats))
    return 0


def _run(args: argparse.Namespace) -> int:
    import torch

    from catp_agent.harness.grounding.data import GroundingSet
    from catp_agent.harness.grounding.probe import Budget, evaluate, train_on_screens

    torch.set_num_threads(args.threads)
    tasks = _tasks(args.tasks)
    train = GroundingSet.from_demos(args.demo_dir, tasks, args.train_seeds, max_screens_per_task=args.max_screens)
    probe = _probe_for(args.tower, args.seed)
    sets = _test_sets(args, pad=probe.front.stride if probe.front.input_size is None else 1)
    test = sets["tasks"]
    stats = train_on_screens(probe, train, Budget(args.cpu_seconds, args.images), freeze_tower=args.freeze,
                             tower_lr_scale=args.tower_lr_scale, control=args.control, lr=args.lr, seed=args.seed, log=_log)
    result = {"tower": args.tower, "command": " ".join(sys.argv), "front": probe.front.name, "freeze": args.freeze, "control": args.control,
              "tower_lr_scale": args.tower_lr_scale, "train": stats, "train_screens": len(train.frames),
              "test_screens": len(test.frames), "seed": args.seed,
              "metrics": evaluate(probe, test, control=args.control)}
    # Generality: strings no training screen or canvas held, read by the same probe.
    for name in ("random", "miniwob"):
        if name in sets:
            result["metrics"][name] = evaluate(probe, sets[name], control=args.control)["all"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: round(v["pick"], 3) for k, v in result["metrics"].items()}))
    return 0


def _test_sets(args: argparse.Namespace, pad: int) -> dict:
    """The probe's held-out sets: the tasks' test screens, the synthetic random strings, and the
    MiniWoB++ screens (left out, with a note, when their demos are missing)."""
    from catp_agent.harness.grounding.data import GroundingSet

    sets = {"tasks": GroundingSet.from_demos(args.demo_dir, _tasks(args.tasks), args.test_seeds),
            "random": GroundingSet.synthetic(args.random_seed, args.random_screens)}
    try:
        sets["miniwob"] = GroundingSet.from_demos(args.demo_dir, MINIWOB_PROBE, args.test_seeds, pad_to=pad)
    except FileNotFoundError as err:
        print(f"no miniwob column: {err}", file=sys.stderr)
    return sets


def _whole(args: argparse.Namespace) -> int:
    """The whole model on the probe's held-out questions, scored like the tower alone."""
    import torch

    from catp_agent.agent.model_io import load_agent_model
    from catp_agent.harness.training.reading import probe_whole_model, reading_grid

    torch.set_num_threads(args.threads)
    agent = load_agent_model(args.model, device="cpu", dtype="fp32")
    if agent.pointer is None:
        raise SystemExit(f"{args.model} has no pointer head (pointer_head.safetensors): train it with --pointer-weight")
    grid = reading_grid(agent.model, agent.image_processor)
    sets = _test_sets(args, pad=1)
    start = time.process_time()
    metrics = {}
    for name, gset in sets.items():
        scores = probe_whole_model(agent.model, agent.pointer, agent.tokenizer, agent.image_processor, gset, grid)
        metrics.update(scores if name == "tasks" else {name: scores["all"]})
    summary_path = Path(args.model) / "training.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    result = {"kind": "whole", "tower": str(summary.get("config", {}).get("tower") or args.model), "model": args.model,
              "command": " ".join(sys.argv), "front": "whole model", "freeze": True, "control": False,
              "train": {"cpu_s": summary.get("train_s", 0.0), "images": summary.get("steps", 0), "wall_s_kind": "train_s"},
              "eval_cpu_s": round(time.process_time() - start, 1), "test_screens": len(sets["tasks"].frames), "metrics": metrics}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: round(v["pick"], 3) for k, v in metrics.items()}))
    return 0


def _keep(args: argparse.Namespace) -> int:
    """The tower and probe head in float16 (half the bytes; the probe is rerun on the float16
    copy to show what that costs) and manifest.json: what it is, the commands that made it,
    their CPU seconds, and its probe figures."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    tower, out = Path(args.tower), Path(args.out)
    meta = json.loads((tower / "probe.json").read_text())
    probe = json.loads(Path(args.probe).read_text()) if args.probe else None
    if probe is not None and Path(probe["tower"]).resolve() != tower.resolve():
        raise SystemExit(f"{args.probe} probed {probe['tower']}, not {tower}: keep a tower with its own probe result")
    out.mkdir(parents=True, exist_ok=True)
    state = load_file(str(tower / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    shutil.copy(tower / "config.json", out / "config.json")
    head = torch.load(tower / "probe_head.pt")
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in head.items()}, out / "probe_head.pt")
    (out / "probe.json").write_text(json.dumps(meta, indent=1))
    manifest = {"what": "a convolutional vision tower (transformers FocalNetModel, 32 px tokens at the screen's own size) "
                        "with reading practice, and the grounding probe's head; float16",
                "load": "catp_agent.harness.grounding.towers.load_front_end(folder)",
                "commands": meta.get("history", []), "total_cpu_s": meta.get("total_cpu_s"),
                "probe": None if probe is None else {"command": probe.get("command"), "tower_frozen": probe["freeze"],
                                                     "probe_cpu_s": probe["train"]["cpu_s"],
                                                     "pick": {k: round(v["pick"], 3) for k, v in probe["metrics"].items()}}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(json.dumps(manifest, indent=1))
    return 0


def _table(args: argparse.Namespace) -> int:
    rows = [json.loads(p.read_text()) | {"file": p.name} for p in sorted(Path(args.folder).glob("*.json"))]
    if not rows:
        print(f"no probe results (*.json) in {args.folder}", file=sys.stderr)
        return 2
    short = [t.split("/")[1].removesuffix("-v0") for t in GATE_TASKS]
    print(f"| run | tower | reading practice, CPU s | frozen | query | probe CPU s | screens | {' | '.join(short)} | all | all, inside "
          f"| random | miniwob |")
    print("|---|---|---|---|---|---|---|" + "---|" * (len(short) + 4))
    for r in rows:
        m = r["metrics"]
        cells = " | ".join(f"{m[t]['pick']:.2f}" if t in m else "-" for t in GATE_TASKS)
        meta = Path(r["tower"]) / "probe.json"
        practice = json.loads(meta.read_text()) if meta.exists() else {}
        practice_s = practice.get("total_cpu_s", practice.get("pretrain", {}).get("cpu_s", 0.0))
        print(f"| {r['file'].removesuffix('.json')} | {r['front']} | {practice_s:.0f} | {'yes' if r['freeze'] else 'no'} | "
              f"{'role only' if r['control'] else 'text'} | {r['train']['cpu_s']:.0f} | {r['train']['images']} | "
              f"{cells} | {m['all']['pick']:.2f} | {m['all']['inside']:.2f} | "
              + " | ".join(f"{m[k]['pick']:.2f}" if k in m else "-" for k in ("random", "miniwob")) + " |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--demo-dir", default=".cache/demos", help="demo folder (default: .cache/demos)")
    common.add_argument("--tasks", default="bundled", help="comma list of env ids, or 'bundled'")
    common.add_argument("--train-seeds", type=_seeds, default=_seeds("10000-10149"))
    common.add_argument("--test-seeds", type=_seeds, default=_seeds("900-924"), help="held-out screens for the probe")
    common.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: CPU-second budgets stay honest on a busy machine)")
    common.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("collect", parents=[common], help="oracle demos with their elements")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=_collect)
    for name, func in (("pretrain", _pretrain), ("run", _run)):
        p = sub.add_parser(name, parents=[common])
        p.add_argument("--cpu-seconds", type=float, default=300.0, help="budget: CPU seconds of this process")
        p.add_argument("--images", type=int, default=10**9, help="budget: images (screens or canvases) seen")
        p.add_argument("--lr", type=float, default=2e-3 if name == "pretrain" else 1e-3)
        p.add_argument("--out", required=True)
        p.set_defaults(func=func)
    sub.choices["pretrain"].add_argument("--front", default="convnet",
                                         help="front end to pretrain (default convnet), or a pretrained folder to go on from")
    sub.choices["pretrain"].add_argument("--height", type=int, default=96, help="canvas height in px (width 320)")
    sub.choices["pretrain"].add_argument("--lists", type=float, default=0.0,
                                         help="chance that a canvas starts with a vertical list (menu-like rows)")
    sub.choices["pretrain"].add_argument("--objective", choices=("pointing", "words", "classes"), default="pointing",
                                         help="pointing: point at each word of a canvas (default); words: recognise "
                                              "the word on each crop among the batch's texts (grounding.words); classes: "
                                              "classify each crop's word among a generated closed vocabulary")
    sub.choices["pretrain"].add_argument("--vocabulary-size", type=int, default=4096,
                                         help="classes objective: labels drawn from the generator (default 4096)")
    sub.choices["pretrain"].add_argument("--batch", type=int, default=32,
                                         help="canvases (pointing) or word crops (words) per step")
    sub.choices["pretrain"].add_argument("--words-from-demos", action="store_true",
                                         help="mix the training demos' element texts into the random words")
    r = sub.choices["run"]
    r.add_argument("--tower", default="vit336", help="vit336, vit336-scratch, convnet, or a pretrained folder")
    r.add_argument("--freeze", action="store_true", help="train the head only (tower features computed once per screen)")
    r.add_argument("--tower-lr-scale", type=float, default=1.0, help="the tower's learning rate as a fraction of --lr")
    sub.choices["pretrain"].add_argument("--tower-lr-scale", type=float, default=None,
                                         help="words and classes objectives: the tower's learning rate as a fraction "
                                              "of --lr (default 0.1 for words, 1.0 for classes)")
    r.add_argument("--control", action="store_true", help="ask with the element's role only (cannot read)")
    r.add_argument("--max-screens", type=int, default=300, help="training screens kept per task")
    w = sub.add_parser("whole", parents=[common], help="the whole model (with its pointer head) on the probe's questions")
    w.add_argument("--model", required=True, help="a model folder trained with a pointer head (catp-agent train --tower ...)")
    w.add_argument("--out", required=True)
    w.set_defaults(func=_whole)
    for q in (r, w):
        q.add_argument("--random-seed", type=int, default=7, help="seed of the synthetic random-string screens")
        q.add_argument("--random-screens", type=int, default=40, help="synthetic random-string screens in the random column")
    p = sub.add_parser("keep", help="store a practised tower compactly (float16) with its manifest")
    p.add_argument("--tower", required=True, help="a pretrained folder (from `pretrain`)")
    p.add_argument("--probe", help="the probe result (from `run`) of that tower, for the manifest")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_keep)
    p = sub.add_parser("table", help="markdown table of the runs in a folder")
    p.add_argument("folder")
    p.set_defaults(func=_table)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
