"""Behaviour cloning of the default agent model on the bundled tasks' oracle demonstrations.

``train(TrainConfig(...))`` runs the whole recipe: collect demos (seeds from ``seed_start`` up,
disjoint from the evaluation seeds below 1000), learn the tokenizer, build the model, train
with AdamW and a cosine schedule, and save a ``from_pretrained`` folder (safetensors weights,
config, tokenizer, image processor, ``training_log.jsonl``, ``training.json``).

Deterministic from ``seed`` on a given machine and thread count: demos are collected in a fixed
order, the tokenizer is learned from them in that order, weights start from ``seed`` and the
batch order is a seeded permutation per epoch. A ``train_state.pt`` is written every
``save_every`` steps; a rerun with the same arguments resumes from it.

``extra_demo_dirs`` adds demos collected elsewhere, e.g. by a DAgger round
(:func:`catp_agent.harness.training.dagger.collect_dagger`: the model's own states, labelled with
the oracle's action), to the training split only; validation stays the oracle's held-out seeds.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import envs
from catp_agent.harness.training.data import Batch, SampleSet, corpus_texts
from catp_agent.harness.training.practice import CopySet, GroundSet
from catp_agent.harness.training.demos import collect_demos, load_demos
from catp_agent.harness.training.model import (ModelSize, build_bpe_tokenizer, build_image_processor, build_model,
                                               build_reading_image_processor, build_reading_model)
from catp_agent.harness.training.reading import freeze_tower, reading_grid, tower_encoder

__all__ = ["BUNDLED_TASKS", "TrainConfig", "train"]

_RECIPE_ORDER = ("login", "menu", "tabs", "search", "form", "cart", "pagination", "settings")
"""The order the default model was trained in. It fixes the demo, tokenizer and batch order, so it
is kept; bundled tasks that envs adds later come after these, by name."""

BUNDLED_TASKS: tuple[str, ...] = tuple(envs.env_id(t) for t in sorted(
    envs.BUNDLED_TASKS, key=lambda t: (_RECIPE_ORDER.index(t) if t in _RECIPE_ORDER else len(_RECIPE_ORDER), t)))
"""Env ids of every task ``envs`` bundles (``envs.BUNDLED_TASKS``): the default training tasks."""
EVAL_SEEDS_BELOW = 1000


@dataclass
class TrainConfig:
    out: str = "runs/train"
    demo_dir: str = ".cache/demos"
    tasks: tuple[str, ...] = BUNDLED_TASKS
    episodes_per_task: int = 300
    seed_start: int = 10000
    val_episodes_per_task: int = 8  # the last seeds of each task's range: not trained on
    history: int = 3
    epochs: float = 2.5
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    copy_batch: int = 16  # text-only copy-practice samples per step (CopySet); 0: none
    copy_weight: float = 1.0  # their loss's weight beside the behaviour-cloning loss
    copy_warmup_steps: int = 1500  # text-only copy-practice steps before behaviour cloning starts
    copy_warmup_batch: int = 32
    ground_batch: int = 0  # grounding-practice samples per behaviour-cloning step (GroundSet); 0: none
    ground_weight: float = 1.0
    ground_warmup_steps: int = 0  # grounding-practice steps (with copy practice beside) before behaviour cloning
    ground_warmup_batch: int = 64
    pointer_weight: float = 0.0  # > 0: train a pointer head (catp_agent.agent.pointer) with this loss weight
    pointer_dim: int = 128
    init_from: str = ""  # a model folder to start from (its weights and tokenizer) instead of fresh weights
    tower: str = ""  # a reading tower folder (grounding_probe.py pretrain/keep): the reading model, its tower frozen
    pack_episodes: bool = False  # behaviour cloning by whole episodes, each packed in one row (SampleSet.packed_batch)
    extra_demo_dirs: tuple[str, ...] = ()  # more demo folders (e.g. DAgger rounds, with labels): training split only
    sincos_init: bool = False  # fresh weights: patch positions and coordinate tokens start as sine-cosine codes
    seed: int = 0
    threads: int = 0  # 0: torch's default
    device: str = "cpu"  # "cuda" trains on a GPU (float32 still; results differ from the CPU run in the last bits)
    workers: int = 2  # demo collection processes
    save_every: int = 200
    eval_every: int = 200
    time_budget_s: float = 0.0  # stop (and save) after this much training time; 0: no limit
    size: ModelSize = field(default_factory=ModelSize)

    def __post_init__(self) -> None:
        if self.seed_start < EVAL_SEEDS_BELOW:
            raise ValueError(f"seed_start must be >= {EVAL_SEEDS_BELOW} (evaluation uses seeds below it), got {self.seed_start}")
        if self.episodes_per_task <= self.val_episodes_per_task:
            raise ValueError(f"episodes_per_task ({self.episodes_per_task}) must exceed val_episodes_per_task ({self.val_episodes_per_task})")
        if self.warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {self.warmup_steps}")
        if self.batch_size < 1 or self.epochs <= 0 or self.lr <= 0:
            raise ValueError(f"batch_size, epochs and lr must be positive, got {self.batch_size}, {self.epochs}, {self.lr}")
        if self.copy_batch < 0 or self.copy_weight < 0 or self.copy_warmup_steps < 0 or self.copy_warmup_batch < 1:
            raise ValueError("copy_batch, copy_weight and copy_warmup_steps must be >= 0 and copy_warmup_batch >= 1, got "
                             f"{self.copy_batch}, {self.copy_weight}, {self.copy_warmup_steps}, {self.copy_warmup_batch}")
        if self.ground_batch < 0 or self.ground_weight < 0 or self.ground_warmup_steps < 0 or self.ground_warmup_batch < 1:
            raise ValueError("ground_batch, ground_weight and ground_warmup_steps must be >= 0 and ground_warmup_batch >= 1, got "
                             f"{self.ground_batch}, {self.ground_weight}, {self.ground_warmup_steps}, {self.ground_warmup_batch}")
        if self.init_from and self.sincos_init:
            raise ValueError("sincos_init sets fresh weights; it cannot be combined with init_from (pick one)")
        if self.tower and self.sincos_init:
            raise ValueError("sincos_init is for the CLIP model's patch positions; the reading model (tower) has none")
        if self.tower and not (Path(self.tower) / "config.json").is_file():
            raise ValueError(f"tower must be a saved reading tower folder with a config.json, got {self.tower!r} "
                             "(the kept one: catp_agent/assets/reading_tower)")
        if self.init_from and not (Path(self.init_from) / "config.json").is_file():
            raise ValueError(f"init_from must be a model folder with a config.json, got {self.init_from!r}")
        if self.pointer_weight < 0 or self.pointer_dim < 1:
            raise ValueError(f"pointer_weight must be >= 0 and pointer_dim >= 1, got {self.pointer_weight}, {self.pointer_dim}")
        if self.history < 0:
            raise ValueError(f"history must be >= 0, got {self.history}")
        self.extra_demo_dirs = tuple(str(d) for d in self.extra_demo_dirs)
        for folder in self.extra_demo_dirs:
            if not Path(folder).is_dir():
                raise ValueError(f"extra demo folder {folder!r} does not exist (collect one with `catp-agent dagger --out DIR`)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        d["extra_demo_dirs"] = list(self.extra_demo_dirs)
        return d


def _lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def answer_logits(model, batch: Batch, extra: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, gold token, sample row) for every answer token of ``batch``, teacher forced, in
    order within each row. With ``extra`` (a dict), ``extra["hidden"]`` is set to the decoder's
    last hidden states (B, T, d).

    The screens are encoded once per batch; their features replace the image tokens' embeddings,
    which is what the model's own forward does with ``pixel_values``. A batch that carries a
    frozen tower's outputs (``batch.features``) goes through the projector only.
    """
    cfg = model.config
    batch = batch.to(model.device)
    embeds = model.get_input_embeddings()(batch.input_ids)
    feats = None
    if batch.features is not None:
        feats = model.model.multi_modal_projector(batch.features)
    elif batch.pixel_values.shape[0]:  # a text-only batch (copy practice) has no screens
        feats = model.model.get_image_features(pixel_values=batch.pixel_values, vision_feature_layer=cfg.vision_feature_layer,
                                               vision_feature_select_strategy=cfg.vision_feature_select_strategy)
        feats = getattr(feats, "pooler_output", feats)
        feats = torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats
    if feats is not None:
        feats = feats[batch.frame_order].reshape(-1, feats.shape[-1])
        mask = (batch.input_ids == cfg.image_token_index).unsqueeze(-1)
        embeds = embeds.masked_scatter(mask, feats.to(embeds.dtype))
    hidden = model.model.language_model(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                                        position_ids=batch.position_ids).last_hidden_state
    if extra is not None:
        extra["hidden"] = hidden
    # Position t predicts token t+1: score only the answer tokens.
    targets = batch.labels[:, 1:]
    rows, cols = torch.nonzero(targets != -100, as_tuple=True)
    return model.lm_head(hidden[rows, cols]), targets[rows, cols], rows


def forward_loss(model, batch: Batch, pointer=None, extra: dict | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean answer-token loss, per-token correct (bool), per-token sample row) for ``batch``.

    With a ``pointer`` head and a batch with click rows, ``extra`` (a dict) gets the pointer's
    ``pointer_loss``, ``pointer_hit`` (the best token is a right one, per click) and
    ``pointer_inside`` (the pointed pixel is inside the clicked element's box, per click with a
    box)."""
    want_hidden = pointer is not None and batch.pointer is not None
    out: dict = {}
    logits, gold, rows = answer_logits(model, batch, out if want_hidden else None)
    loss = F.cross_entropy(logits.float(), gold)
    if want_hidden and extra is not None:
        extra.update(pointer_forward(pointer, out["hidden"], batch.pointer.to(out["hidden"].device)))
    return loss, logits.argmax(-1) == gold, rows


def pointer_forward(pointer, hidden: torch.Tensor, targets) -> dict:
    """The pointer head on a batch's last hidden states: ``pointer_loss``, ``pointer_hit`` and
    ``pointer_inside`` (see :func:`forward_loss`), and ``pointer_xy`` (n, 2), the pointed pixels."""
    from catp_agent.agent.pointer import pointer_loss

    n = targets.right.shape[1]
    query = hidden[targets.rows, targets.query_pos]
    keys = hidden[targets.rows[:, None], targets.key_start[:, None] + torch.arange(n, device=hidden.device)[None, :]]
    logits, offsets = pointer(query, keys)
    loss, hit = pointer_loss(logits, offsets, targets.right, targets.own, targets.offset)
    best = logits.argmax(-1)
    rows, cols = targets.grid[:, 0], targets.grid[:, 1]
    off = offsets[torch.arange(len(best), device=best.device), best]
    x = ((best % cols).float() + off[:, 0]) * targets.screen[:, 0] / cols
    y = ((best // cols).float() + off[:, 1]) * targets.screen[:, 1] / rows
    bx, by, bw, bh = targets.box.unbind(-1)
    has_box = bw >= 0
    inside = (x >= bx) & (x <= bx + bw) & (y >= by) & (y <= by + bh)
    return {"pointer_loss": loss, "pointer_hit": hit.detach(), "pointer_inside": inside[has_box].detach(),
            "pointer_xy": torch.stack([x, y], dim=-1).detach()}


def _exact_rows(correct: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Per sample: every answer token right."""
    wrong = torch.zeros(n, dtype=torch.long, device=rows.device).index_add_(0, rows, (~correct).long())
    return wrong == 0


def evaluate(model, data: SampleSet, batch_size: int, tokens_per_image: int, pointer=None) -> dict[str, float]:
    """Teacher-forced answer loss and exact-action accuracy on ``data``, overall and for the
    ``click`` and ``type`` answers apart; with a ``pointer`` head also how often its token is a
    right one (``val_pointer_hit``) and its pixel inside the clicked element (``val_pointer_inside``)."""
    model.eval()
    if pointer is not None:
        pointer.eval()
    losses, count = [], 0
    exact: dict[str, list[bool]] = {}
    hits: list[bool] = []
    inside: list[bool] = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            idx = list(range(start, min(len(data), start + batch_size)))
            extra: dict = {}
            loss, correct, rows = forward_loss(model, data.batch(idx, tokens_per_image), pointer, extra)
            hits += extra.get("pointer_hit", torch.zeros(0, dtype=torch.bool)).tolist()
            inside += extra.get("pointer_inside", torch.zeros(0, dtype=torch.bool)).tolist()
            losses.append(float(loss) * len(idx))
            for i, ok in zip(idx, _exact_rows(correct, rows, len(idx)).tolist()):
                exact.setdefault(data.samples[i].action, []).append(ok)
            count += len(idx)
    model.train()
    if pointer is not None:
        pointer.train()
    every = [ok for oks in exact.values() for ok in oks]
    out = {"val_loss": sum(losses) / max(1, count), "val_action_acc": sum(every) / max(1, len(every))}
    if hits:
        out["val_pointer_hit"] = sum(hits) / len(hits)
    if inside:
        out["val_pointer_inside"] = sum(inside) / len(inside)
    for kind in ("click", "type"):
        if exact.get(kind):
            out[f"val_{kind}_acc"] = sum(exact[kind]) / len(exact[kind])
    return out


def batches_accuracy(model, batches) -> float:
    """Teacher-forced exact-answer rate over ``batches``."""
    model.eval()
    exact: list[bool] = []
    with torch.no_grad():
        for batch in batches:
            _, correct, rows = forward_loss(model, batch)
            exact += _exact_rows(correct, rows, batch.input_ids.shape[0]).tolist()
    model.train()
    return sum(exact) / max(1, len(exact))


def copy_accuracy(model, data: CopySet, batch_size: int = 32) -> float:
    """Teacher-forced exact-answer rate on ``data``'s ``type`` steps as the demos had them
    (text only): how well the model types what the instruction says."""
    return batches_accuracy(model, (data.original(range(s, min(len(data), s + batch_size))) for s in range(0, len(data), batch_size)))


def _extra_demos(cfg: TrainConfig, log=print) -> list:
    """The demos of ``cfg.extra_demo_dirs`` for ``cfg.tasks``, for the training split. Episodes on
    an evaluation seed (below :data:`EVAL_SEEDS_BELOW`) or on one of the validation seeds are left
    out (and counted in the log): they would leak what the held-out numbers measure."""
    cut = cfg.seed_start + cfg.episodes_per_task - cfg.val_episodes_per_task
    val_seeds = range(cut, cfg.seed_start + cfg.episodes_per_task)
    kept, dropped = [], 0
    for folder in cfg.extra_demo_dirs:
        for demo in load_demos(folder, cfg.tasks):
            if demo.seed < EVAL_SEEDS_BELOW or demo.seed in val_seeds:
                dropped += 1
            else:
                kept.append(demo)
    labelled = sum(1 for d in kept if d.labels is not None)
    log(f"extra demos: {len(kept)} episodes ({labelled} with labels, {sum(len(d) for d in kept)} steps) from "
        f"{', '.join(cfg.extra_demo_dirs)}, added to the training split"
        + (f"; {dropped} left out (evaluation or validation seeds)" if dropped else ""))
    return kept


def _split(demos, cfg: TrainConfig):
    train_d, val_d = [], []
    for task in cfg.tasks:
        mine = sorted((d for d in demos if d.task == task), key=lambda d: d.seed)
        cut = cfg.seed_start + cfg.episodes_per_task - cfg.val_episodes_per_task
        train_d += [d for d in mine if d.seed < cut]
        val_d += [d for d in mine if d.seed >= cut]
    return train_d, val_d


def train(cfg: TrainConfig, progress: bool = True, log=print) -> dict:
    """Run the recipe; returns the final metrics (also in ``out/training.json``)."""
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    seeds = range(cfg.seed_start, cfg.seed_start + cfg.episodes_per_task)
    log(f"collecting oracle demos: {len(cfg.tasks)} tasks x seeds {seeds.start}-{seeds.stop - 1} -> {cfg.demo_dir}")
    report = collect_demos(cfg.demo_dir, cfg.tasks, seeds, workers=cfg.workers, progress=progress)
    collect_s = time.perf_counter() - t_start
    failed = {task: r["failed"] for task, r in report.items() if r["failed"]}
    if failed:
        log(f"episodes not kept (oracle unsolved or raised): {failed}")
        for error in [e for r in report.values() for e in r["errors"]][:5]:
            log(f"  {error}")
    demos = [d for d in load_demos(cfg.demo_dir, cfg.tasks) if d.seed in seeds]
    train_d, val_d = _split(demos, cfg)
    if not train_d:
        raise RuntimeError(f"no demonstrations in {cfg.demo_dir} for {list(cfg.tasks)}: collection report {report}")
    extra_d = _extra_demos(cfg, log) if cfg.extra_demo_dirs else []
    train_d += extra_d

    image_processor = build_reading_image_processor() if cfg.tower else build_image_processor(cfg.size)
    if cfg.init_from:
        from transformers import AutoTokenizer, LlavaForConditionalGeneration

        tokenizer = AutoTokenizer.from_pretrained(cfg.init_from)
        model = LlavaForConditionalGeneration.from_pretrained(cfg.init_from).to(cfg.device)
        if cfg.tower and model.config.vision_config.model_type != "focalnet":
            raise ValueError(f"{cfg.init_from} is not a reading model (its tower is {model.config.vision_config.model_type}); "
                             "drop --tower or start from a model trained with it")
        if not cfg.tower and (model.config.vision_config.image_size != cfg.size.image_size
                              or model.config.image_seq_length != cfg.size.image_tokens):
            raise ValueError(f"{cfg.init_from} takes {model.config.vision_config.image_size} px screens with "
                             f"{model.config.image_seq_length} tokens, but this run prepares {cfg.size.image_size} px screens with "
                             f"{cfg.size.image_tokens} tokens; pass the model's --image-size and --patch-size")
        log(f"starting from the weights and tokenizer in {cfg.init_from}")
    else:
        tokenizer = build_bpe_tokenizer(corpus_texts(train_d, cfg.history), cfg.size.vocab_size)
        if cfg.tower:
            model = build_reading_model(tokenizer, cfg.tower, cfg.size, seed=cfg.seed).to(cfg.device)
        else:
            model = build_model(tokenizer, cfg.size, seed=cfg.seed, structured_init=cfg.sincos_init).to(cfg.device)
    model.train()
    if cfg.tower:
        log(f"reading model: tower {cfg.tower}, {freeze_tower(model) / 1e6:.2f} M tower parameters frozen "
            "(each screen encoded once for the run)")
    pointer = None
    if cfg.pointer_weight:
        from catp_agent.agent.pointer import PointerConfig, PointerHead, load_pointer_head

        pointer = load_pointer_head(cfg.init_from) if cfg.init_from else None
        if pointer is None:
            torch.manual_seed(cfg.seed + 1)
            pointer = PointerHead(PointerConfig(hidden_size=model.config.text_config.hidden_size, dim=cfg.pointer_dim))
        else:
            log(f"continuing the pointer head saved in {cfg.init_from}")
        pointer = pointer.to(cfg.device).train()
    n_tok = int(model.config.image_seq_length)
    grid = reading_grid(model, image_processor)
    log(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, vocabulary {len(tokenizer)}, "
        f"{grid[0]}x{grid[1]} tokens per screen")
    train_set = SampleSet(train_d, tokenizer, image_processor, cfg.history, progress, grid=grid)
    val_set = SampleSet(val_d, tokenizer, image_processor, cfg.history, progress=False, grid=grid)
    if cfg.tower:
        train_set.cache_features(tower_encoder(model), progress=progress)
        val_set.cache_features(tower_encoder(model), progress=False)
    copy_set = CopySet(train_d, tokenizer, cfg.history, train_set.side)
    val_copy = CopySet(val_d, tokenizer, cfg.history, train_set.side)
    ground_set = GroundSet(train_set, train_d) if cfg.ground_batch or cfg.ground_warmup_steps else None
    val_ground = GroundSet(val_set, val_d).fixed(256, n_tok) if ground_set is not None else []
    if ground_set is not None and not len(ground_set):
        raise RuntimeError(f"grounding practice needs demos with stored elements; those in {cfg.demo_dir} have none "
                           "(collected by an older version): collect them again into an empty --demo-dir")
    tokenizer.save_pretrained(out)  # already now, so a running model's checkpoints can be inspected
    n_train_episodes, n_val_episodes, n_extra_episodes = len(train_d), len(val_d), len(extra_d)
    log(f"samples: {len(train_set)} train ({n_train_episodes} episodes), {len(val_set)} validation ({n_val_episodes} episodes)")
    del demos, train_d, val_d, extra_d  # the full-size screenshots (GBs); the sample sets keep resized copies

    episodes = train_set.episodes()  # sample indices of each training demo
    per_step = max(1, round(cfg.batch_size * len(episodes) / max(1, len(train_set))))  # episodes per packed step
    steps_per_epoch = max(1, (len(episodes) // per_step) if cfg.pack_episodes else len(train_set) // cfg.batch_size)
    warm_copy = cfg.copy_warmup_steps if len(copy_set) else 0  # phase 1: text-only copy practice
    warm = warm_copy + (cfg.ground_warmup_steps if ground_set is not None else 0)  # phase 2: grounding practice
    bc_total = max(1, int(round(cfg.epochs * steps_per_epoch)))  # phase 3: behaviour cloning
    total = warm + bc_total
    decay, no_decay = [], []
    named = list(model.named_parameters()) + ([] if pointer is None else [(f"pointer.{n}", p) for n, p in pointer.named_parameters()])
    named = [(name, p) for name, p in named if p.requires_grad]  # a frozen tower is not trained
    for name, p in named:
        (no_decay if p.ndim < 2 or "norm" in name or "embedding" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.98))

    state_path = out / "train_state.pt"
    log_path = out / "training_log.jsonl"
    step, train_s = 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False, map_location=cfg.device)
        ignore = ("device", "workers", "time_budget_s")  # how the run goes, not what it computes
        saved = {"extra_demo_dirs": [], "tower": "", "pack_episodes": False, **state["config"]}  # a state written before a key existed: its default
        if {k: v for k, v in saved.items() if k not in ignore} != {k: v for k, v in cfg.to_dict().items() if k not in ignore}:
            raise RuntimeError(f"{state_path} was written by a different configuration; delete it or use another --out")
        model.load_state_dict(state["model"])
        if pointer is not None:
            pointer.load_state_dict(state["pointer"])
        opt.load_state_dict(state["optimizer"])
        step, train_s = state["step"], state["train_s"]
        log(f"resuming at step {step}/{total}")
        if log_path.exists():  # steps after the saved state were lost: they will be redone
            kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= step]
            log_path.write_text("".join(line + "\n" for line in kept))
    elif log_path.exists():
        log_path.unlink()

    def save_state() -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "pointer": None if pointer is None else pointer.state_dict(),
                    "step": step, "train_s": train_s}, tmp)
        os.replace(tmp, state_path)

    def order_for(epoch: int) -> np.ndarray:
        return np.random.default_rng([cfg.seed, epoch]).permutation(len(episodes) if cfg.pack_episodes else len(train_set))

    def bc_batch(epoch: int, pos: int) -> Batch:
        if cfg.pack_episodes:  # whole episodes, about batch_size steps, each episode one packed row
            chosen = order_for(epoch)[pos * per_step:(pos + 1) * per_step]
            return train_set.packed_batch([i for d in chosen.tolist() for i in episodes[d]], n_tok)
        return train_set.batch(order_for(epoch)[pos * cfg.batch_size:(pos + 1) * cfg.batch_size].tolist(), n_tok)

    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not progress)
    metrics: dict = {}
    running = None
    stopped_early = False
    with open(log_path, "a") as logf:
        while step < total:
            t0 = time.perf_counter()
            copy_loss = ground_loss = pointer_loss_value = pointer_hits = None
            if step < warm_copy:
                lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
                loss, correct, rows = forward_loss(model, copy_set.batch(cfg.copy_warmup_batch, np.random.default_rng([cfg.seed, 1, step])))
                total_loss = loss
            else:
                if step < warm:  # grounding practice (the pointer head too, when there is one)
                    lr = cfg.lr * min(1.0, (step - warm_copy + 1) / cfg.warmup_steps)
                    extra = {}
                    loss, correct, rows = forward_loss(model, ground_set.packed_batch(cfg.ground_warmup_batch, np.random.default_rng([cfg.seed, 2, step]), n_tok),
                                                       pointer, extra)
                    if "pointer_loss" in extra:
                        pointer_loss_value = extra["pointer_loss"]
                        pointer_hits = extra["pointer_hit"]
                else:  # behaviour cloning
                    epoch, pos = divmod(step - warm, steps_per_epoch)
                    lr = _lr_at(cfg, step - warm, bc_total)
                    extra: dict = {}
                    loss, correct, rows = forward_loss(model, bc_batch(epoch, pos), pointer, extra)
                    if "pointer_loss" in extra:
                        pointer_loss_value = extra["pointer_loss"]
                        pointer_hits = extra["pointer_hit"]
                total_loss = loss
                if pointer_loss_value is not None:
                    total_loss = total_loss + cfg.pointer_weight * pointer_loss_value
                # Copy practice beside both (so typing is not forgotten), grounding practice beside behaviour cloning.
                if cfg.copy_batch and cfg.copy_weight and len(copy_set):
                    copy_loss, _, _ = forward_loss(model, copy_set.batch(cfg.copy_batch, np.random.default_rng([cfg.seed, 1, step])))
                    total_loss = total_loss + cfg.copy_weight * copy_loss
                if step >= warm and ground_set is not None and cfg.ground_batch and cfg.ground_weight:
                    ground_loss, _, _ = forward_loss(model, ground_set.packed_batch(cfg.ground_batch, np.random.default_rng([cfg.seed, 2, step]), n_tok))
                    total_loss = total_loss + cfg.ground_weight * ground_loss
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            gnorm = float(torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.grad_clip))
            opt.step()
            train_s += time.perf_counter() - t0
            step += 1
            value = float(loss.detach())
            running = value if running is None else 0.95 * running + 0.05 * value
            phase = "copy" if step <= warm_copy else "ground" if step <= warm else "bc"
            if step == warm + 1:
                running = value  # the behaviour-cloning loss starts here
            record = {"step": step, "phase": phase, "epoch": round(max(0, step - warm) / steps_per_epoch, 3),
                      "loss": round(value, 5), "lr": lr,
                      "grad_norm": round(gnorm, 4), "token_acc": round(float(correct.float().mean()), 4),
                      "train_s": round(train_s, 1)}
            if copy_loss is not None:
                record["copy_loss"] = round(float(copy_loss.detach()), 5)
            if ground_loss is not None:
                record["ground_loss"] = round(float(ground_loss.detach()), 5)
            if pointer_loss_value is not None:
                record["pointer_loss"] = round(float(pointer_loss_value.detach()), 5)
                record["pointer_hit"] = round(float(pointer_hits.float().mean()), 4)
            if step % cfg.eval_every == 0 or step == total:
                if phase == "bc":
                    record.update({k: round(v, 5) for k, v in evaluate(model, val_set, 2 * cfg.batch_size, n_tok, pointer).items()})
                if len(val_copy):
                    record["val_copy_acc"] = round(copy_accuracy(model, val_copy), 5)
                if val_ground:
                    record["val_ground_acc"] = round(batches_accuracy(model, val_ground), 5)
                metrics = record
            logf.write(json.dumps(record) + "\n")
            logf.flush()
            shown = {k: f"{record[v]:.2f}" for k, v in (("val_acc", "val_action_acc"), ("copy_acc", "val_copy_acc"),
                                                        ("pointer", "val_pointer_inside"),
                                                        ("ground_acc", "val_ground_acc")) if v in record}
            bar.set_postfix(phase=phase, loss=f"{running:.3f}", **shown)
            bar.update(1)
            if step % cfg.save_every == 0:
                save_state()
            if cfg.time_budget_s and train_s >= cfg.time_budget_s and step < total:
                log(f"time budget of {cfg.time_budget_s:.0f} s reached at step {step}/{total}: stopping here")
                stopped_early = True
                break
    bar.close()
    if "val_action_acc" not in metrics or metrics.get("step") != step:
        metrics = {"step": step, **{k: round(v, 5) for k, v in evaluate(model, val_set, 2 * cfg.batch_size, n_tok, pointer).items()}}
        if len(val_copy):
            metrics["val_copy_acc"] = round(copy_accuracy(model, val_copy), 5)
        if val_ground:
            metrics["val_ground_acc"] = round(batches_accuracy(model, val_ground), 5)
    save_state()

    model.eval()
    model.to("cpu").save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    if pointer is not None:
        from catp_agent.agent.pointer import save_pointer_head

        save_pointer_head(pointer.eval().to("cpu"), out)
    summary = {
        "config": cfg.to_dict(),
        "steps": step, "total_steps": total, "stopped_early": stopped_early,
        "train_samples": len(train_set), "train_episodes": n_train_episodes, "extra_train_episodes": n_extra_episodes,
        "val_samples": len(val_set),
        "val_episodes": n_val_episodes, "demo_report": report,
        "parameters": sum(p.numel() for p in model.parameters()),
        "pointer_parameters": 0 if pointer is None else sum(p.numel() for p in pointer.parameters()),
        "collect_s": round(collect_s, 1), "train_s": round(train_s, 1),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "final": metrics, "machine": {"device": cfg.device, "cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                                      "torch": torch.__version__},
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2))
    return summary
