"""Our policy as a BrowserGym agent: ``get_action(obs) -> (coord action, AgentInfo)``.

    from catp_agent.harness.browsergym import CatpAgentArgs
    agent = CatpAgentArgs(method="catp", ratio=0.778).make_agent()   # VLMPolicy, bundled model
    action, info = agent.get_action(agent.obs_preprocessor(obs))    # obs: BrowserGym's

Each step the policy (``reset()``, ``act(obs, info) -> str``, optionally ``last_report``) sees
our observation (:mod:`.mapping`), writes an action in our format, and the agent sends its
``coord`` equivalent. ``done()`` returns None, which ends BrowserGym's episode. Output that is not
an action becomes ``noop()``, and the parse error is shown to the policy at the next step as its
``last_action_error`` (BrowserGym never saw the text). ``AgentInfo.stats`` per step: image tokens
in, after stage 1 and kept; selection, prefill, decode, vision and act times (s); and
``parse_error`` (0 or 1). BrowserGym sums them into ``stats.cum_*`` of ``summary_info.json``.
"""

from __future__ import annotations

import time
from typing import Any

from browsergym.core.action.highlevel import HighLevelActionSet
from browsergym.experiments.agent import Agent, AgentInfo

from catp_agent.agent.report import StepReport
from catp_agent.harness.browsergym.mapping import NOOP, Pointer, keep_needed, policy_observation, to_coord
from envs.actions import ActionParseError, parse_action

__all__ = ["REPORT_STATS", "CatpBrowserGymAgent", "StepInfo", "coord_action_set"]

REPORT_STATS = ("image_tokens_in", "kept_stage1", "kept_final", "selection_s", "prefill_s", "decode_s", "vision_s")
"""The :class:`StepReport` fields copied into ``AgentInfo.stats`` (policies without a report give 0)."""


def coord_action_set() -> HighLevelActionSet:
    """BrowserGym's ``coord`` action set (plus ``noop``), one action per step, parsed strictly."""
    return HighLevelActionSet(subsets=["coord"], multiaction=False, strict=True)


class StepInfo(AgentInfo):
    """BrowserGym's ``AgentInfo`` that also takes item assignment: BrowserGym's and AgentLab's
    experiment loops write ``agent_info["err_msg"]`` when an episode fails, which the plain
    dataclass refuses, and the episode's summary is then never saved."""

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)


class CatpBrowserGymAgent(Agent):
    """A BrowserGym agent around one of our policies (a :class:`policies.vlm.VLMPolicy` for
    pruning). The agent resets the policy at its first step and when told (``reset()``):
    AgentLab makes one agent per episode."""

    def __init__(self, policy: Any) -> None:
        if not (callable(getattr(policy, "act", None)) and callable(getattr(policy, "reset", None))):
            raise TypeError(f"policy must have reset() and act(obs, info), got {type(policy).__name__}")
        self.policy = policy
        self.action_set = coord_action_set()
        self.pointer = Pointer()
        self._step = 0
        self._own_error = ""

    def reset(self) -> None:
        """Start a new episode: the policy's history, the pointer, the step count."""
        self.policy.reset()
        self.pointer.reset()
        self._step = 0
        self._own_error = ""

    def obs_preprocessor(self, obs: dict) -> dict:
        return keep_needed(obs)

    def get_action(self, obs: dict) -> tuple[str | None, StepInfo]:
        if self._step == 0:
            self.reset()
        ours = policy_observation(obs, self._step, self._own_error)
        t0 = time.perf_counter()
        text = self.policy.act(ours, {})
        act_s = time.perf_counter() - t0
        report = getattr(self.policy, "last_report", None)
        report = report if isinstance(report, StepReport) else None
        self._step += 1
        try:
            action: str | None = to_coord(parse_action(text), self.pointer, ours["screenshot"])
            self._own_error = ""
        except ActionParseError as exc:
            action, self._own_error = NOOP, f"not an action, nothing was done: {exc}"
        stats: dict[str, float] = {name: float(getattr(report, name, 0) or 0) for name in REPORT_STATS}
        stats["act_s"] = act_s
        stats["parse_error"] = float(bool(self._own_error))
        think = report.raw_output if report is not None else str(text)
        extra = {"policy_action": str(text), "parse_error": self._own_error or None,
                 "k_layer": getattr(report, "k_layer", None)}
        return action, StepInfo(think=think, stats=stats, extra_info=extra)
