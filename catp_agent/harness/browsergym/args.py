"""``CatpAgentArgs``: the agent's arguments as AgentLab and BrowserGym's ``ExpArgs`` take them.

    from catp_agent.harness.browsergym import CatpAgentArgs
    args = CatpAgentArgs(method="catp", ratio=0.778)          # the bundled model, CATP at R = 0.778
    args = CatpAgentArgs(model="path/to/Qwen2-VL-2B-Instruct", method="fastv", ratio=0.667,
                         device="cuda", dtype="bf16")

A plain dataclass of strings, numbers and tuples, so it pickles to AgentLab's worker processes
and shows in its result tables. It subclasses AgentLab's ``AgentArgs`` where agentlab is installed,
else BrowserGym's ``AbstractAgentArgs`` (same contract: ``make_agent()``, ``prepare()``,
``close()``; ``set_benchmark`` and ``set_reproducibility_mode`` are defined here either way).

``make_agent()`` is called once per episode; the model is loaded once per process and
``(model, device, dtype, attn, dialect, pointer)`` (:func:`cached_model`), and each episode gets a
fresh :class:`policies.vlm.VLMPolicy` on it. ``make_agent()`` and ``prepare()`` also point
BrowserGym's Chromiums at the system one (:func:`.support.use_system_chromium`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from catp_agent.harness.browsergym.support import DEFAULT_CHROMIUM, require_browsergym, use_system_chromium

require_browsergym()

try:  # AgentLab's base where it is installed; BrowserGym's (the same contract) where it is not
    from agentlab.agents.agent_args import AgentArgs as _Base
except ModuleNotFoundError as exc:
    if exc.name is None or not exc.name.startswith("agentlab"):
        raise
    from browsergym.experiments.loop import AbstractAgentArgs as _Base

__all__ = ["CatpAgentArgs", "cached_model"]


@cache
def cached_model(model: str | None, device: str, dtype: str, attn: str, dialect: str | None, pointer: bool) -> Any:
    """The loaded :class:`catp_agent.agent.model_io.AgentModel`, once per process and setting."""
    from catp_agent.harness.validate import ModelLoading

    return ModelLoading(device, dtype, attn, dialect, pointer).load(model)


@dataclass
class CatpAgentArgs(_Base):
    """model: a checkpoint folder or hub id, None for the bundled model. method, ratio, mode,
    persistence, overrides: the pruning (``catp-agent eval``'s ``--methods``, ``--ratios``,
    ``--modes``, ``--persistence``, ``--set`` as (field, value) pairs). history, max_new_tokens,
    seed: the policy's. device, dtype, attn, dialect, pointer: how the model is loaded and read.
    chromium: the system Chromium BrowserGym's browsers run. agent_name: what AgentLab names the
    study, the episode folders and the result rows by; None gives ``CatpAgent-<method>-<ratio>``
    (``CatpAgent-none`` unpruned), so agents of one study that differ in pruning are told apart."""

    agent_name: str | None = None
    model: str | None = None
    method: str = "catp"
    ratio: float = 0.778
    mode: str = "layer"
    persistence: bool = False
    overrides: tuple[tuple[str, Any], ...] = ()
    history: int = 3
    max_new_tokens: int = 24
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    attn: str = "sdpa"
    dialect: str | None = None
    pointer: bool = True
    chromium: str = DEFAULT_CHROMIUM

    def __post_init__(self) -> None:
        if self.agent_name is None:
            self.agent_name = "CatpAgent-none" if self.method == "none" else f"CatpAgent-{self.method}-{self.ratio:g}"
        super().__post_init__()
        self.overrides = tuple((str(k), v) for k, v in self.overrides)
        self.pruning()  # a bad method, ratio, mode or option is refused here, naming it
        from catp_agent.harness.validate import ModelLoading

        ModelLoading(self.device, self.dtype, self.attn, self.dialect, self.pointer)

    def pruning(self) -> Any:
        """The pruning config these arguments describe (R = 0 for method ``none``)."""
        from catp_agent.harness.evaluation.grid import Variant, variant_config

        variant = Variant(self.method, self.mode if self.method == "catp" else "layer",
                          self.persistence if self.method == "catp" else False)
        return variant_config(variant, 0.0 if self.method == "none" else self.ratio, self.seed, self.overrides)

    def prepare(self) -> None:
        """Before the study (AgentLab calls it in the launching process): the system Chromium for
        BrowserGym. Workers load the model themselves, at their first make_agent()."""
        use_system_chromium(self.chromium)

    def close(self) -> None:
        """After the study: drop this process's loaded models."""
        cached_model.cache_clear()

    def set_benchmark(self, benchmark: Any, demo_mode: bool) -> None:
        """Nothing to adjust: the agent reads the screenshot and the goal on every benchmark, and
        acts with the ``coord`` action set."""

    def set_reproducibility_mode(self) -> None:
        """Already deterministic: greedy decoding, seeded pruning."""

    def make_agent(self) -> Any:
        from catp_agent.harness.browsergym.agent import CatpBrowserGymAgent
        from policies.vlm import VLMPolicy

        use_system_chromium(self.chromium)
        model = cached_model(self.model, self.device, self.dtype, self.attn, self.dialect, self.pointer)
        policy = VLMPolicy(model=model, pruning=self.pruning(), history=self.history,
                           max_new_tokens=self.max_new_tokens, seed=self.seed, dialect=self.dialect,
                           pointer=self.pointer)
        return CatpBrowserGymAgent(policy)
