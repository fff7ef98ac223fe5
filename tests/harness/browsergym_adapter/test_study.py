"""An AgentLab ``Study`` with our agent on BrowserGym's MiniWoB++, offline, in the system Chromium.

Needs AgentLab next to ``pip install -e ".[browsergym]"``; the install that works (AgentLab with
``--no-deps`` and what its ``Study`` imports) is in the README, "In BrowserGym and AgentLab". CI
does not install AgentLab, so these tests skip there; run them in such an environment with
``python -m pytest -m "slow and browser" tests/harness/browsergym_adapter/test_study.py``.

AgentLab's study module imports ``browsergym.webarena``, which downloads nltk's ``punkt_tab`` from
the network at import. Offline, where it is not in nltk's data path, the fixture gives nltk an empty
``tokenizers/punkt_tab`` folder (through ``NLTK_DATA``, so joblib's workers see it too): the import
then passes, and MiniWoB++ never tokenizes with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("browsergym.experiments", reason="needs BrowserGym: pip install -e '.[browsergym]'")
pytest.importorskip("agentlab", reason="needs AgentLab 0.4.2 (the README's recipe); CI does not install it")

from catp_agent.harness.browsergym import CatpAgentArgs, miniwob_url  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EPISODES = (("miniwob.click-button", 0), ("miniwob.click-test", 1))
MAX_STEPS = 2


@pytest.fixture(scope="module")
def study_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``agentlab.experiments.study``, imported offline (see the module docstring), with AgentLab's
    default results folder (made at import) in a temporary folder instead of the home folder."""
    saved = {name: os.environ.get(name) for name in ("NLTK_DATA", "AGENTLAB_EXP_ROOT")}
    os.environ.setdefault("AGENTLAB_EXP_ROOT", str(tmp_path_factory.mktemp("agentlab_results")))
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab")
    except LookupError:
        placeholder = tmp_path_factory.mktemp("nltk_data")
        (placeholder / "tokenizers" / "punkt_tab").mkdir(parents=True)
        os.environ["NLTK_DATA"] = os.pathsep.join(filter(None, [str(placeholder), os.environ.get("NLTK_DATA")]))
        nltk.data.path.insert(0, str(placeholder))
    from agentlab.experiments import study

    yield study
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def read_summaries(study_dir: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Each episode's ``summary_info.json``, keyed by (task, seed) from the folder's name."""
    summaries = {}
    for path in sorted(study_dir.glob("*/summary_info.json")):
        task, seed = path.parent.name.split("_on_", 1)[1].rsplit("_", 1)
        summaries[(task, int(seed))] = json.loads(path.read_text())
    return summaries


@pytest.mark.parametrize(("backend", "n_jobs"), [("sequential", 1), ("joblib", 2)])
def test_a_study_saves_reward_and_our_kept_tokens(study_module, tmp_path, chromium, monkeypatch, backend,
                                                  n_jobs) -> None:
    from agentlab.analyze import inspect_results
    from bgym import DEFAULT_BENCHMARKS, EnvArgs

    monkeypatch.setenv("MINIWOB_URL", miniwob_url())  # BrowserGym's MiniWoB++ tasks read it (the pages on disk)
    benchmark = dataclasses.replace(DEFAULT_BENCHMARKS["miniwob"](), name="miniwob_catp_test", env_args_list=[
        EnvArgs(task_name=task, task_seed=seed, max_steps=MAX_STEPS) for task, seed in EPISODES])
    agent_args = CatpAgentArgs(method="catp", ratio=0.778, device="cpu", chromium=chromium)
    assert agent_args.agent_name == "CatpAgent-catp-0.778"
    study = study_module.Study([agent_args], benchmark)
    study.run(n_jobs=n_jobs, parallel_backend=backend, n_relaunch=1, exp_root=tmp_path)

    summaries = read_summaries(study.dir)
    assert sorted(summaries) == sorted(EPISODES), sorted(p.name for p in study.dir.iterdir())
    for (task, seed), summary in summaries.items():
        assert summary["err_msg"] is None, f"{task} seed {seed}: {summary['stack_trace']}"
        assert summary["cum_reward"] in (0.0, 1.0) and 1 <= summary["n_steps"] <= MAX_STEPS
        assert summary["stats.cum_image_tokens_in"] > summary["stats.cum_kept_final"] > 0
        assert summary["stats.cum_prefill_s"] > 0 and summary["stats.cum_parse_error"] >= 0
    assert all("_CatpAgent-catp-0.778_on_miniwob." in p.name for p in study.dir.iterdir() if p.is_dir())

    # AgentLab's own result table (indexed by task, agent name and benchmark): our fields and summed stats
    table = inspect_results.load_result_df(study.dir, progress_fn=None)
    rows = table.reset_index()
    assert sorted(zip(rows["env.task_name"], rows["env.task_seed"])) == sorted(EPISODES)
    assert set(rows["agent.agent_name"]) == {"CatpAgent-catp-0.778"} and set(rows["agent.method"]) == {"catp"}
    assert (rows["stats.cum_kept_final"] < rows["stats.cum_image_tokens_in"]).all()
    report = inspect_results.global_report(table)
    assert report.loc[("CatpAgent-catp-0.778", "miniwob"), "n_completed"] == f"{len(EPISODES)}/{len(EPISODES)}"
