"""DAgger relabelling: demos with labels, samples that answer the label after the executed
history, the collection loop (a fake env, then the shipped model in real Chromium) and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from catp_agent.agent.history import HistoryWindow
from catp_agent.harness.training.dagger import REPORT_FILE, _DaggerDriver, _play, collect_dagger, same_effect
from catp_agent.harness.training.data import SampleSet, corpus_texts
from catp_agent.harness.training.practice import CopySet, typed_values
from catp_agent.harness.training.demos import Demo, _save, demo_path, load_demo, load_demos, load_meta, round_action
from catp_agent.harness.training.model import ModelSize, build_bpe_tokenizer, build_image_processor
from catp_agent.harness.training.train import TrainConfig, _extra_demos, train

DEFAULT_MODEL = str(Path(__file__).resolve().parents[3] / "catp_agent" / "assets" / "default_model")
SMALL = ModelSize(image_size=112, patch_size=28, vision_hidden=32, vision_layers=1, vision_heads=2, hidden=48,
                  layers=3, heads=4, kv_heads=2, intermediate=64, vocab_size=300)


def _labelled(seed: int = 10005, task: str = "catp/login-v0") -> Demo:
    """The model clicked the wrong field, typed part of the name, then clicked again; the oracle
    would have clicked the username field, typed the whole name and pressed Enter."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, size=(3, 48, 64, 3), dtype=np.uint8)
    actions = ["click(40, 30)", 'type("alic")', "click(50, 10)"]
    labels = ["click(20, 10)", 'type("alice7")', 'press("Enter")']
    elements = [[{"text": "Username", "role": "textbox", "bbox": [10, 5, 30, 12]},
                 {"text": "", "role": "form", "bbox": [0, 0, 64, 48]}]] * 3
    return Demo(task, seed, 'Log in as "alice7".', frames, actions, ["", "", "wrong field"], elements, labels)


def test_labels_round_trip_and_old_demos_load_without_them(tmp_path):
    demo = _labelled()
    path = demo_path(tmp_path, demo.task, demo.seed)
    _save(demo, path, {"dagger": {"success": False}})
    back = load_demo(path)
    assert back.labels == demo.labels and back.actions == demo.actions and back.targets == demo.labels
    assert np.array_equal(back.frames, demo.frames) and back.elements == demo.elements
    assert load_meta(path)["dagger"] == {"success": False}
    plain = Demo(demo.task, 10006, demo.instruction, demo.frames, demo.actions, demo.errors)
    _save(plain, demo_path(tmp_path, plain.task, plain.seed))
    assert "labels" not in load_meta(demo_path(tmp_path, plain.task, plain.seed))  # the old format, unchanged
    old = load_demo(demo_path(tmp_path, plain.task, plain.seed))
    assert old.labels is None and old.targets == old.actions
    with pytest.raises(ValueError, match="2 labels for 3 actions"):
        Demo(demo.task, 1, "", demo.frames, demo.actions, demo.errors, labels=demo.labels[:2])


def test_samples_answer_the_label_after_the_executed_history():
    demo = _labelled()
    tok = build_bpe_tokenizer(corpus_texts([demo], history=2), SMALL.vocab_size)
    data = SampleSet([demo], tok, build_image_processor(SMALL), history=2, progress=False)
    for t, sample in enumerate(data.samples):
        assert tok.decode(sample.target_ids[:-1]) == " " + demo.labels[t]
        prompt = tok.decode(sample.prompt_ids)
        for k in range(t):  # the history shows what was executed, never the label
            assert f"Action: {demo.actions[k]}\n" in prompt and f"Action: {demo.labels[k]}\n" not in prompt
        assert sample.action == demo.labels[t].split("(")[0]
    assert data.samples[0].click == (20.0, 10.0) and data.samples[0].box == (10.0, 5.0, 30.0, 12.0)  # the label's click
    assert data.samples[1].click is None and data.samples[2].click is None
    # Copy practice: the steps whose label types, answered by the label, after the executed
    # history; the values to swap are the labels' (the model's wrong "alic" is not one).
    assert typed_values(demo) == ["alice7"]
    copy = CopySet([demo], tok, history=2)
    assert len(copy) == 1 and copy.steps[0][2] == ' type("alice7")'
    prompt, answer = copy.swapped(0, np.random.default_rng(0))
    new = answer.split('"')[1]
    assert new != "alice7" and f'"{new}"' in prompt and "Action: click(40, 30)\n" in prompt


class _FakeEnv:
    """Five steps at most; the oracle's answers come from a list (None: no right action)."""

    def __init__(self, oracle: list[str | None]) -> None:
        self.oracle, self.t, self.unwrapped = oracle, 0, self

    def _obs(self) -> dict:
        return {"screenshot": np.full((8, 8, 3), self.t, np.uint8), "instruction": "do it", "last_action_error": ""}

    def reset(self, seed=None):
        self.t = 0
        return self._obs(), {"elements": [{"text": "OK", "role": "button", "bbox": [1, 2, 3, 4], "id": "ok"}]}

    def step(self, action):
        self.t += 1
        return self._obs(), 0.0, action == "done()" or self.t >= 5, False, {"elements": [], "success": False}

    def oracle_action(self, obs=None, info=None):
        return self.oracle[self.t]


class _FakeModel:
    def __init__(self) -> None:
        self.window, self.agent = HistoryWindow(3), SimpleNamespace(source="fake")

    def reset(self) -> None:
        self.window.reset()

    def act(self, obs, info) -> str:
        self.window.observe(obs["screenshot"])
        self.window.act("click(5, 5)")
        return "click(5, 5)"


def _play_fake(oracle: list[str | None], model: _FakeModel, beta: float) -> tuple:
    env = _FakeEnv(oracle)
    return _play(env, _DaggerDriver(env, model, beta, np.random.default_rng(0)), "t", 10000)


def test_a_screen_without_oracle_action_ends_the_episode_unstored_and_beta_executes_the_label():
    oracle = ["click(101, 49)", 'type("x")', None, "click(1, 1)", "click(1, 1)"]
    model = _FakeModel()
    demo, record, error = _play_fake(oracle, model, 0.0)
    assert error is None and record["no_label"] and not record["success"]
    assert demo.labels == ["click(100, 50)", 'type("x")'] and demo.actions == ["click(5, 5)"] * 2  # labels rounded
    assert len(demo.frames) == len(demo.elements) == 2
    assert demo.elements[0] == [{"text": "OK", "role": "button", "bbox": [1, 2, 3, 4]}]
    demo, record, _ = _play_fake(oracle, model, 1.0)
    assert demo.actions == demo.labels and record["oracle_steps"] == [True, True]
    assert record["model_actions"] == ["click(5, 5)"] * 2
    assert [s.action for s in model.window.screens()] == demo.labels  # the model's history shows what ran
    demo, record, error = _play_fake([None] * 5, model, 0.0)  # no label on the first screen: nothing to store
    assert demo is None and error is None and record["no_label"]


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_the_shipped_model_drives_and_the_oracle_labels_every_screen(tmp_path):
    """Two steps of login with the shipped model: one demo, whose labels are what the oracle
    says on each screen reached by the executed actions (replayed in a fresh browser); a second
    call skips it."""
    from catp_agent.harness.evaluation.episode import make_env

    task, seed = "catp/login-v0", 10004
    report = collect_dagger(DEFAULT_MODEL, tmp_path, [task], [seed], max_steps=2, progress=False)
    stats = report["tasks"][task]
    assert (stats["episodes"], stats["new"], stats["skipped"], stats["steps"], stats["failed"]) == (1, 1, 0, 2, 0)
    assert json.loads((tmp_path / REPORT_FILE).read_text())["total"] == report["total"]
    (demo,) = load_demos(tmp_path)
    assert len(demo.frames) == len(demo.actions) == len(demo.labels) == len(demo.errors) == len(demo.elements) == 2
    meta = load_meta(demo_path(tmp_path, task, seed))["dagger"]
    assert meta["model_actions"] == demo.actions and meta["oracle_steps"] == [False, False]  # beta 0: the model ran
    assert stats["agree"] == sum(same_effect(a, b, e) for a, b, e in zip(demo.actions, demo.labels, demo.elements))
    env = make_env(task)
    try:
        obs, info = env.reset(seed=seed)
        assert np.array_equal(obs["screenshot"], demo.frames[0]) and obs["instruction"] == demo.instruction
        for action, label, error in zip(demo.actions, demo.labels, demo.errors):
            assert obs["last_action_error"] == error
            assert label == round_action(env.unwrapped.oracle_action(obs, info))
            obs, _, terminated, truncated, info = env.step(action)
    finally:
        env.close()
    stamp = demo_path(tmp_path, task, seed).stat().st_mtime_ns
    again = collect_dagger(DEFAULT_MODEL, tmp_path, [task], [seed], max_steps=2, progress=False)
    assert again["tasks"][task]["skipped"] == 1 and again["tasks"][task]["new"] == 0
    assert {k: v for k, v in again["total"].items() if k not in ("new", "skipped")} == \
        {k: v for k, v in report["total"].items() if k not in ("new", "skipped")}
    assert demo_path(tmp_path, task, seed).stat().st_mtime_ns == stamp


def test_dagger_command_refuses_evaluation_seeds_and_bad_values(tmp_path, capsys):
    from catp_agent.harness.cli import main

    base = ["dagger", "--model", DEFAULT_MODEL, "--out", str(tmp_path / "d"), "--tasks", "catp/login-v0"]
    assert main([*base, "--seeds", "998-1001"]) == 2
    assert "seed 998 is an evaluation seed" in capsys.readouterr().err
    assert main(["dagger", "--model", DEFAULT_MODEL, "--out", str(tmp_path / "d"), "--tasks", "catp/logn-v0"]) == 2
    assert "unknown task 'catp/logn-v0'" in capsys.readouterr().err
    assert main([*base, "--model", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*base, "--beta", "1.5"])
    assert exc.value.code == 2 and "1.5" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # nothing started
    with pytest.raises(ValueError, match="seed 5 is an evaluation seed"):
        collect_dagger(DEFAULT_MODEL, tmp_path, ["catp/login-v0"], [5, 10000], progress=False)


def test_extra_demos_join_the_training_split_only(tmp_path, capsys):
    """Oracle demos for seeds 10000-10002 (10002 held out) plus a DAgger folder: its episode on a
    training seed is trained on (answering its labels); those on the validation seed, on an
    evaluation seed and of another task are not."""
    demos, extra = tmp_path / "demos", tmp_path / "dagger"
    for seed in (10000, 10001, 10002):
        d = _labelled(seed)
        _save(Demo(d.task, seed, d.instruction, d.frames, d.labels, ["", "", ""], d.elements), demo_path(demos, d.task, seed))
    for seed, task in ((10005, "catp/login-v0"), (10002, "catp/login-v0"), (500, "catp/login-v0"), (10006, "catp/menu-v0")):
        _save(_labelled(seed, task), demo_path(extra, task, seed))
    cfg = TrainConfig(out=str(tmp_path / "out"), demo_dir=str(demos), tasks=("catp/login-v0",), episodes_per_task=3,
                      val_episodes_per_task=1, extra_demo_dirs=(str(extra),), size=SMALL, epochs=1, batch_size=4,
                      warmup_steps=1, copy_batch=0, copy_warmup_steps=0, threads=1, workers=1, eval_every=1000)
    lines: list[str] = []
    assert [(d.task, d.seed) for d in _extra_demos(cfg, lines.append)] == [("catp/login-v0", 10005)]
    assert "1 episodes (1 with labels, 3 steps)" in lines[0] and "2 left out" in lines[0]
    summary = train(cfg, progress=False, log=lambda *_: None)
    assert summary["extra_train_episodes"] == 1 and summary["train_episodes"] == 3 and summary["val_episodes"] == 1
    assert summary["train_samples"] == 9 and summary["val_samples"] == 3
    assert summary["config"]["extra_demo_dirs"] == [str(extra)]
    with pytest.raises(ValueError, match="extra demo folder"):
        TrainConfig(extra_demo_dirs=(str(tmp_path / "none"),))
    from catp_agent.harness.cli import main

    assert main(["train", "--extra-demos", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert "extra demo folder" in capsys.readouterr().err


BUTTON = {"text": "Log in", "role": "button", "bbox": [100, 200, 80, 30]}
FORM = {"text": "", "role": "form", "bbox": [50, 150, 300, 200]}


@pytest.mark.parametrize(("action", "label", "agree"), [
    ("click(110, 205)", "click(140, 215)", True),          # another point of the same button
    ("click(179, 229)", "click(140, 215)", True),          # its far corner
    ("click(60, 160)", "click(140, 215)", False),          # the form around it, not the button
    ("double_click(140, 215)", "click(140, 215)", False),  # another primitive
    ('type("ada")', 'type("ada")', True),
    ("type('ada')", 'type("ada")', True),                  # the same text, written differently
    ('type("Ada")', 'type("ada")', False),
    ('press("Enter")', 'press("Enter")', True),
    ("click(10, 10)", "click(10, 10)", True),              # on no element: the same point only
    ("click(11, 10)", "click(10, 10)", False),
    ("clik(1, 2)", "click(1, 2)", False),                  # text that does not parse
])
def test_agreement_counts_the_effect_not_the_text(action, label, agree):
    assert same_effect(action, label, [FORM, BUTTON]) is agree
