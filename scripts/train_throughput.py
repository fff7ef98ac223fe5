"""Trained actions per CPU second: the shipped recipe against the reading model's, in one run.

Both train on the same demos (the bundled tasks' demos in --demo-dir, every --every-th seed),
with the pointer head, history 3, AdamW, batches of about 16 steps:

- ``shipped``: the CLIP model (336 px, 28 px patches, 144 tokens), its tower trained, every
  batch encoding its screens, steps drawn at random (what ``catp-agent train`` does);
- ``reading-cached``: the reading model (frozen reading tower, 300 tokens per screen), every
  screen encoded once before training (that CPU time is counted, spread over one epoch), steps
  drawn at random;
- ``reading-packed``: the same, with whole episodes packed one per row (``--pack-episodes``).

Each recipe times --steps steps after one warm-up step, in CPU seconds of this process (all
threads). The ratios are against ``shipped`` and hold on any machine; seconds are this one's.
Time it on a quiet machine.

    python scripts/train_throughput.py --threads 2 --steps 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from catp_agent.agent.pointer import PointerConfig, PointerHead
from catp_agent.harness.training.data import SampleSet, corpus_texts
from catp_agent.harness.training.demos import load_demos
from catp_agent.harness.training.model import (READING_TOWER, ModelSize, build_bpe_tokenizer, build_image_processor,
                                               build_model, build_reading_image_processor, build_reading_model)
from catp_agent.harness.training.reading import freeze_tower, reading_grid, tower_encoder
from catp_agent.harness.training.train import BUNDLED_TASKS, forward_loss


def _steps(model, pointer, batches, steps: int) -> dict:
    params = [p for p in list(model.parameters()) + list(pointer.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    times, actions = [], []
    for k, make in enumerate(batches):
        if k > steps:
            break
        start = time.process_time()
        batch = make()
        extra: dict = {}
        loss, _, _ = forward_loss(model, batch, pointer, extra)
        if "pointer_loss" in extra:
            loss = loss + extra["pointer_loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k:  # the first is warm-up
            times.append(time.process_time() - start)
            actions.append(int((batch.labels[:, 1:] != -100).any(-1).sum()) if batch.position_ids is None
                           else _packed_actions(batch))
    return {"steps": len(times), "actions": sum(actions), "cpu_s": round(sum(times), 2),
            "actions_per_cpu_s": round(sum(actions) / sum(times), 3)}


def _packed_actions(batch) -> int:
    """Answers in packed rows: runs of labelled positions."""
    labelled = batch.labels != -100
    starts = labelled & ~torch.nn.functional.pad(labelled[:, :-1], (1, 0))
    return int(starts.sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", default=".cache/demos", help="(default: %(default)s)")
    parser.add_argument("--tower", default=str(READING_TOWER), help="reading tower folder (default: the kept one)")
    parser.add_argument("--every", type=int, default=5, help="demos of every n-th seed from 10000 (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per recipe after one warm-up (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16, help="steps per batch (default: %(default)s)")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    demos = [d for d in load_demos(args.demo_dir, BUNDLED_TASKS) if d.seed >= 10000 and d.seed % args.every == 0]
    if not demos:
        print(f"train_throughput: no bundled-task demos from seed 10000 in {args.demo_dir}; "
              "`python scripts/grounding_probe.py collect` makes them", file=sys.stderr)
        return 2
    tok = build_bpe_tokenizer(corpus_texts(demos, 3), ModelSize().vocab_size)
    rng = np.random.default_rng(0)
    result: dict = {"demos": len(demos), "threads": args.threads, "batch": args.batch}

    torch.manual_seed(0)
    model = build_model(tok, ModelSize()).train()
    pointer = PointerHead(PointerConfig(hidden_size=model.config.text_config.hidden_size))
    data = SampleSet(demos, tok, build_image_processor(), 3, progress=False)
    n = int(model.config.image_seq_length)
    result["shipped"] = _steps(model, pointer, (lambda: data.batch(rng.choice(len(data), args.batch, replace=False).tolist(), n)
                                                for _ in iter(int, 1)), args.steps)
    result["samples"] = len(data)

    torch.manual_seed(0)
    model = build_reading_model(tok, args.tower).train()
    freeze_tower(model)
    pointer = PointerHead(PointerConfig(hidden_size=model.config.text_config.hidden_size))
    proc = build_reading_image_processor()
    data = SampleSet(demos, tok, proc, 3, progress=False, grid=reading_grid(model, proc))
    start = time.process_time()
    data.cache_features(tower_encoder(model), progress=False)
    cache_s = time.process_time() - start
    result["feature_cache"] = {"screens": len(data.pixels), "cpu_s": round(cache_s, 2)}
    n = int(model.config.image_seq_length)
    result["reading-cached"] = _steps(model, pointer, (lambda: data.batch(rng.choice(len(data), args.batch, replace=False).tolist(), n)
                                                       for _ in iter(int, 1)), args.steps)
    episodes = data.episodes()
    per = max(1, round(args.batch * len(episodes) / len(data)))

    def packed():
        chosen = rng.choice(len(episodes), per, replace=False).tolist()
        return data.packed_batch([i for d in chosen for i in episodes[d]], n)

    result["reading-packed"] = _steps(model, pointer, (packed for _ in iter(int, 1)), args.steps)
    base = result["shipped"]["actions_per_cpu_s"]
    for name in ("reading-cached", "reading-packed"):
        r = result[name]
        r["ratio_to_shipped"] = round(r["actions_per_cpu_s"] / base, 3)
        # Over one epoch the cache's CPU time is paid once: actions / (cache + the epoch's steps).
        epoch_s = result["samples"] / r["actions_per_cpu_s"] + cache_s
        r["ratio_to_shipped_with_cache_over_one_epoch"] = round(result["samples"] / epoch_s / base, 3)
    print(json.dumps(result, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
