"""The model card written next to a trained model (README.md of the model folder)."""

from __future__ import annotations

import json
from pathlib import Path

from catp_agent.harness.training.model import ModelSize

__all__ = ["write_model_card"]


def write_model_card(out: Path, summary: dict, evaluation: str | None = None) -> Path:
    """Write ``out/README.md`` from the training summary; ``evaluation``: a markdown section
    with measured held-out results (left as a pointer to the command when None)."""
    cfg = summary["config"]
    size = cfg["size"]
    config = json.loads((out / "config.json").read_text())
    final = summary.get("final", {})
    n_params = summary["parameters"]
    weights = out / "model.safetensors"
    mb = weights.stat().st_size / 2**20 if weights.exists() else float("nan")
    seeds_last = cfg["seed_start"] + cfg["episodes_per_task"] - 1
    val_first = cfg["seed_start"] + cfg["episodes_per_task"] - cfg["val_episodes_per_task"]
    tasks = ", ".join(f"`{t}`" for t in cfg["tasks"])
    lines = [
        "# catp-agent default model",
        "",
        "A small LLaVA-architecture web agent trained from scratch, on a CPU, by behaviour cloning of the",
        "bundled tasks' DOM oracles. It exists so that the pipeline (pruning, temporal signals, ablations)",
        "can be run and measured out of the box; it is not a general GUI agent.",
        "",
        "## Architecture",
        "",
        f"- `LlavaForConditionalGeneration` ({config.get('architectures', ['?'])[0]}), {n_params / 1e6:.2f} M parameters, "
        f"float32 safetensors ({mb:.1f} MB).",
        (f"- Vision: the reading tower `{cfg['tower']}` (a convolutional FocalNet, 32 px tokens, frozen while this model "
         f"was trained): a screenshot is squashed to 640x480, {config.get('image_seq_length')} image tokens (15 rows of 20)."
         if cfg.get("tower") else
         f"- Vision: CLIP ViT, {size['vision_layers']} layers, width {size['vision_hidden']}, {size['image_size']}x{size['image_size']} "
         f"input, {size['patch_size']} px patches: {ModelSize(**size).image_tokens} image tokens per screenshot "
         "(the screenshot is squashed to a square, nothing is cropped)."),
        f"- Projector: LLaVA's two-layer MLP. Decoder: Llama, {size['layers']} layers, width {size['hidden']}, "
        f"{size['heads']} heads ({size['kv_heads']} KV heads), MLP {size['intermediate']}.",
        f"- Tokenizer: byte-level BPE ({size['vocab_size']} entries) learned offline from the training prompts and actions, "
        "digits split one by one, plus one whole token for each multiple of 10 from 0 to 1000 (a click coordinate is one "
        "token); LLaVA special tokens and chat template.",
        (f"- Pointer head (`pointer_head.safetensors` beside the weights, {summary.get('pointer_parameters', 0) / 1e3:.0f} k "
         f"parameters, query/key size {cfg.get('pointer_dim')}): a click's location is chosen among the current screenshot's "
         "image tokens that survived pruning (the decoder's last hidden state of the last prompt token against each image "
         "token's), then an offset inside that token's patch; the click's text coordinates are replaced by it "
         "(`catp_agent.agent.pointer`). Trained with dense targets: every patch whose centre is in the clicked element's "
         f"box is right (loss weight {cfg.get('pointer_weight')})."
         if summary.get("pointer_parameters") else "- No pointer head: clicks are read from the text's coordinates."),
        "",
        "## Data",
        "",
        f"- Tasks: {tasks}.",
        f"- Demonstrations: the oracle of each task on seeds {cfg['seed_start']}-{seeds_last} "
        f"({cfg['episodes_per_task']} per task), clicks rounded to multiples of 10 px and executed; only solved "
        "episodes are kept. "
        f"Seeds {val_first}-{seeds_last} of each task are held out for validation. Evaluation uses seeds below 1000: "
        "training and evaluation seeds are disjoint.",
        f"- {summary['train_samples']} training samples from {summary['train_episodes']} episodes "
        f"({summary['val_samples']} validation samples).",
        f"- Prompt: exactly `VLMPolicy`'s (history window {cfg['history']}: each past screenshot followed by "
        "`Action: <action>`, then the current screenshot, `Task: <instruction>`, `Next action:`); target: the action, then `</s>`.",
        "",
        "## Training",
        "",
        f"- AdamW, peak lr {cfg['lr']}, {cfg['warmup_steps']} warm-up steps, cosine decay to {cfg['min_lr_ratio']} x peak, "
        f"batch {cfg['batch_size']}, weight decay {cfg['weight_decay']}, gradient clip {cfg['grad_clip']}, seed {cfg['seed']}.",
        f"- {summary['steps']} steps of {summary['total_steps']} planned"
        + (" (stopped by the time budget)" if summary.get("stopped_early") else "")
        + f"; training {summary['train_s'] / 60:.1f} min, demo collection {summary['collect_s'] / 60:.1f} min "
        "(about 15 min with 2 to 5 browser processes when .cache/demos is empty), "
        f"on {summary['machine'].get('device', 'cpu')}, {summary['machine']['cpu_threads']} CPU threads ({summary['machine']['platform']}, torch {summary['machine']['torch']}).",
        (f"- Copy practice: first {cfg.get('copy_warmup_steps', 0)} steps of {cfg.get('copy_warmup_batch', 0)} text-only "
         f"`type` steps alone, then behaviour cloning where each step also scores {cfg['copy_batch']} text-only `type` steps (screens left out) whose typed "
         "values are swapped, in the instruction, the history and the answer, for another demo's value or a random string "
         f"(loss weight {cfg['copy_weight']}): it teaches typing what the instruction says rather than a name seen in training."
         if cfg.get("copy_batch") and cfg.get("copy_weight") else "- No copy practice."),
        (f"- Grounding practice: {cfg.get('ground_warmup_steps', 0)} steps of {cfg.get('ground_warmup_batch', 0)} "
         "single-screen questions `Click \"<text>\".` (copy practice beside), then "
         f"{cfg.get('ground_batch', 0)} of them beside each behaviour-cloning step (loss weight {cfg.get('ground_weight', 0)}). "
         "Each is answered by a click at the centre of the element with that text, for every element whose text is unique "
         "on a demo screen: dense practice at reading a screen and finding a control."
         if cfg.get("ground_batch") or cfg.get("ground_warmup_steps") else "- No grounding practice."),
        (f"- Started from the weights and tokenizer of `{cfg['init_from']}` (the first stage); this card describes the "
         "second stage, and its step counts and times are the second stage's alone."
         if cfg.get("init_from") else
         "- Started from random weights (seed above), except that the patch position embedding and the coordinate tokens' "
         "input and output rows started as sine-cosine codes of position and value (`--sincos-init`)."
         if cfg.get("sincos_init") else "- Started from random weights (seed above)."),
        f"- Final validation (teacher forced): answer loss {final.get('val_loss', float('nan')):.4f}, "
        f"exact action {100 * final.get('val_action_acc', float('nan')):.1f} % "
        f"(clicks {100 * final.get('val_click_acc', float('nan')):.1f} %, typing {100 * final.get('val_type_acc', float('nan')):.1f} %)"
        + (f"; grounding questions {100 * final['val_ground_acc']:.1f} % exact" if "val_ground_acc" in final else "")
        + (f"; pointer: right token {100 * final['val_pointer_hit']:.1f} %, click inside the target "
           f"{100 * final.get('val_pointer_inside', float('nan')):.1f} %." if "val_pointer_hit" in final else "."),
        ("- Reproduce: train the first stage, then rerun `catp-agent train --init FIRST_STAGE` with this stage's settings "
         "(all in `training.json`); `training_log.jsonl` has the loss per step."
         if cfg.get("init_from") else
         "- Reproduce: `catp-agent train --out DIR` (the defaults are this recipe); `training_log.jsonl` has the loss per step."),
        "",
        "## Evaluation",
        "",
        evaluation or "Held-out success: `catp-agent eval --model DIR --tasks bundled --seeds 0-9 --methods none`.",
        "",
        "## Limits",
        "",
        ("- Knows only the tasks above, at the viewport they were collected at; it has never seen other pages and will "
         "not generalise to them."),
        "- Trained with a history window of 3: use `--history 3` (the default).",
        "- Random weights at the start and a few CPU-hours' worth of data at most: its mistakes are a small model's mistakes,",
        "  e.g. clicking a neighbouring item in a long list.",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
