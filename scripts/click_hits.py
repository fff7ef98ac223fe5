"""Teacher-forced clicks of a trained model on the validation demos: exact, x and y, inside the target.

The training log's ``val_click_acc`` counts a click right only when both coordinates are the
oracle's (rounded) numbers. An episode only needs the click to land inside the element the oracle
clicked, so this also counts that, per task. The target is the smallest stored element whose box
holds the oracle's click (demos collected with elements: ``.cache/demos`` from a current checkout).
The y coordinate is predicted after the oracle's x (teacher forcing), as in training. A model
with a pointer head (``pointer_head.safetensors``) also gets the pointer's columns: its token is
a right one (patch centre in the target's box, or the click's own patch), and its pixel is inside
the target; with a pointer head the pointer's pixel is what the agent clicks.

    python scripts/click_hits.py runs/train            # a trained model folder
    python scripts/click_hits.py default               # the shipped model
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

import torch

from catp_agent.agent.model_io import load_agent_model
from catp_agent.harness.training.data import SampleSet
from catp_agent.harness.training.demos import load_demos
from catp_agent.harness.training.train import answer_logits, pointer_forward


def _inside(box: list[int], x: int, y: int) -> bool:
    return box[0] <= x <= box[0] + box[2] and box[1] <= y <= box[1] + box[3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model folder, or 'default' for the shipped model")
    parser.add_argument("--demo-dir", default=".cache/demos", help="demos with elements (default: %(default)s)")
    parser.add_argument("--first-val-seed", type=int, default=10292,
                        help="demos from this seed on are the validation ones (default: %(default)s, training's split)")
    parser.add_argument("--history", type=int, default=3, help="(default: %(default)s)")
    args = parser.parse_args(argv)

    agent = load_agent_model(None if args.model == "default" else args.model)
    model, tok = agent.model.eval(), agent.tokenizer
    demos = [d for d in load_demos(args.demo_dir) if d.seed >= args.first_val_seed]
    if not demos or any(d.elements is None for d in demos):
        print(f"click_hits: need validation demos with elements in {args.demo_dir} (seed >= {args.first_val_seed}); "
              "collect them with `catp-agent train` from a current checkout into an empty --demo-dir", file=sys.stderr)
        return 2
    data = SampleSet(demos, tok, agent.image_processor, args.history, progress=False)
    where = [(demo, t) for demo in demos for t in range(len(demo))]  # sample i is screen i
    pointer = agent.pointer
    names = ["exact click", "x exact", "y exact", "inside the target"]
    if pointer is not None:
        names += ["pointer: right token", "pointer: inside the target"]
    stats: dict[str, list[int]] = collections.defaultdict(lambda: [0] * (len(names) + 1))
    with torch.no_grad():
        clicks = [i for i, s in enumerate(data.samples) if s.action == "click"]
        for start in range(0, len(clicks), 16):
            idx = clicks[start:start + 16]
            out: dict = {}
            batch = data.batch(idx, model.config.image_seq_length)
            logits, gold, rows = answer_logits(model, batch, out)
            pointed = pointer_forward(pointer, out["hidden"], batch.pointer) if pointer is not None else None
            pred = logits.argmax(-1)
            for row, i in enumerate(idx):
                demo, t = where[i]
                got, want = tok.decode(pred[rows == row]), tok.decode(gold[rows == row])
                nums = [int(v) for v in re.findall(r"\d+", got)]
                gx, gy = (int(v) for v in re.findall(r"\d+", demo.actions[t])[:2])
                boxes = [e["bbox"] for e in demo.elements[t] if _inside(e["bbox"], gx, gy)]
                box = min(boxes, key=lambda b: b[2] * b[3]) if boxes else None
                s = stats[demo.task]
                s[0] += got == want
                s[1] += len(nums) >= 1 and nums[0] == gx
                s[2] += len(nums) >= 2 and nums[1] == gy
                s[3] += box is not None and len(nums) >= 2 and _inside(box, nums[0], nums[1])
                if pointed is not None:  # batch.pointer.rows lists the click rows in order: all of them here
                    px, py = (float(v) for v in pointed["pointer_xy"][row])
                    s[4] += bool(pointed["pointer_hit"][row])
                    s[5] += box is not None and _inside(box, px, py)
                s[-1] += 1
    print("| task | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for task, counts in sorted(stats.items()):
        print(f"| {task} | " + " | ".join(f"{c}/{counts[-1]}" for c in counts[:-1]) + " |")
    total = [sum(s[k] for s in stats.values()) for k in range(len(names) + 1)]
    print("| **all** | " + " | ".join(f"**{c}/{total[-1]}** ({100 * c / max(1, total[-1]):.0f} %)" for c in total[:-1]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
