"""The two ways round, end to end in the system Chromium: BrowserGym's ``ExpArgs`` (what an
AgentLab study runs per episode) with our agent, and ``catp-agent eval`` on a BrowserGym task."""

from __future__ import annotations

import gzip
import json
import pickle

import pytest

pytest.importorskip("browsergym.experiments", reason="needs BrowserGym: pip install -e '.[browsergym]'")

from browsergym.experiments import EnvArgs, ExpArgs  # noqa: E402

from catp_agent.harness.browsergym import CatpAgentArgs, miniwob_url  # noqa: E402
from catp_agent.harness.cli import main  # noqa: E402
from catp_agent.harness.evaluation.results import read_episodes  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.compat]


def test_an_expargs_run_saves_reward_and_our_stats(tmp_path, chromium) -> None:
    agent_args = CatpAgentArgs(method="catp", ratio=0.778, device="cpu", chromium=chromium)
    agent_args = pickle.loads(pickle.dumps(agent_args))  # as it travels to AgentLab's workers
    exp = ExpArgs(agent_args=agent_args,
                  env_args=EnvArgs(task_name="miniwob.click-button", task_seed=0, max_steps=2,
                                   task_kwargs={"base_url": miniwob_url()}))
    exp.prepare(tmp_path)
    exp.run()
    summary = json.loads((exp.exp_dir / "summary_info.json").read_text())
    assert summary["err_msg"] is None, summary["stack_trace"]
    assert summary["cum_reward"] in (0.0, 1.0) and 1 <= summary["n_steps"] <= 2
    assert summary["stats.cum_image_tokens_in"] > summary["stats.cum_kept_final"] > 0
    assert summary["stats.cum_prefill_s"] > 0 and "stats.cum_parse_error" in summary
    with gzip.open(exp.exp_dir / "step_0.pkl.gz") as f:
        step = pickle.load(f)
    assert sorted(step.obs) == ["goal_object", "page"]  # no DOM, no AXTree (the screenshot is saved as a PNG)
    assert (exp.exp_dir / "screenshot_step_0.png").exists()
    assert step.agent_info.stats["kept_final"] < step.agent_info.stats["image_tokens_in"]


def test_catp_agent_eval_runs_a_browsergym_task_resumably(tmp_path, chromium, capsys) -> None:
    out = tmp_path / "eval"
    argv = ["eval", "--tasks", "browsergym/miniwob.click-button", "--seeds", "0", "--methods", "catp",
            "--ratios", "0.778", "--max-steps", "2", "--no-fidelity", "--device", "cpu", "--out", str(out),
            "--no-progress", "--json", "--no-plots"]
    assert main(argv) in (0, 1)
    result = json.loads(capsys.readouterr().out)
    [record] = read_episodes(out / "episodes.jsonl")
    assert record["task"] == "browsergym/miniwob.click-button" and record["error"] is None, record["error"]
    assert 1 <= record["steps"] <= 2
    first = record["step_records"][0]
    assert 0 < first["kept_final"] < first["image_tokens_in"] and first["screenshot"]["width"] == 498
    assert (out / "summary.md").exists() and (out / "report.html").exists()
    assert result["summary"]["overall"][0]["episodes"] == 1
    assert main(argv) in (0, 1) and json.loads(capsys.readouterr().out)["report"]["skipped"] == 1  # resumed
    assert main(argv[:2] + ["browsergym/miniwob.no-such-task"] + argv[3:]) == 2
    assert "unknown BrowserGym task" in capsys.readouterr().err
