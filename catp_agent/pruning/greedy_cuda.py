"""The facility-location greedy captured once as a CUDA graph and replayed (opt-in, CUDA only).

On a GPU the ``recompute`` loop of :mod:`catp_agent.pruning.stage1` is launch-bound: about 16
small kernels per pick, each a few microseconds of launch, for 782 picks per 1280-token image.
A CUDA graph of the whole loop launches the same kernels from the device's side, without the
host in between. The graph is captured on the first call for a given (batch, tokens, keep,
dtype, device) and replayed on later calls with the new inputs copied into its static tensors;
an agent's steps repeat the same shapes, so the capture is paid once per episode shape.

Not the default (``stage1.greedy_impl_for``) until it is measured: ``impl="recompute_graph"``.
Its picks are the ``recompute`` loop's (the same kernels on the same values). Tensors captured
under ``torch.inference_mode`` cannot be refilled outside it: call it in the same mode each time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["GraphedGreedy"]


class GraphedGreedy:
    """Captured greedy loops by shape, at most ``max_graphs`` (least recently used dropped)."""

    def __init__(self, loop: Callable[[Tensor, Tensor, int], Tensor], max_graphs: int = 4) -> None:
        self._loop = loop
        self._max = max_graphs
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()

    def __call__(self, sim: Tensor, align_bonus: Tensor, keep: int) -> Tensor:
        """``(B, keep)`` picks of ``loop(sim, align_bonus, keep)``; ``sim`` on a CUDA device."""
        if sim.device.type != "cuda":
            raise ValueError(f"the graphed greedy needs CUDA tensors, got device {sim.device}: pass impl=None")
        key = (tuple(sim.shape), keep, sim.dtype, sim.device)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(sim, align_bonus, keep)
            self._graphs[key] = entry
            while len(self._graphs) > self._max:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        graph, static_sim, static_bonus, static_picks = entry
        static_sim.copy_(sim)
        static_bonus.copy_(align_bonus)
        graph.replay()
        return static_picks.clone()

    def _capture(self, sim: Tensor, align_bonus: Tensor, keep: int) -> tuple:
        static_sim, static_bonus = sim.clone(), align_bonus.clone()
        side = torch.cuda.Stream(device=sim.device)
        side.wait_stream(torch.cuda.current_stream(sim.device))
        with torch.cuda.stream(side):  # warm-up outside the capture, as torch.cuda.graphs asks
            self._loop(static_sim, static_bonus, keep)
        torch.cuda.current_stream(sim.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_picks = self._loop(static_sim, static_bonus, keep)
        return graph, static_sim, static_bonus, static_picks
