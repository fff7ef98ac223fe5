"""The policy interface and the registry: ``make_policy("oracle", env=env)``.

A policy maps an observation (the env's dict: screenshot, instruction, url, last_action_error,
step) and its ``info`` to one action string. It never raises on its own output: what it cannot
turn into an action is returned as is, and the environment reports it as invalid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Policy(Protocol):
    """``reset()`` at the start of every episode, then ``act(obs, info)`` once per step."""

    name: str

    def reset(self) -> None: ...

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str: ...


_REGISTRY: dict[str, Callable[..., Policy]] = {}


def register_policy(name: str) -> Callable[[Callable[..., Policy]], Callable[..., Policy]]:
    """Class decorator: make the policy constructible by ``make_policy(name, ...)``."""

    def wrap(factory: Callable[..., Policy]) -> Callable[..., Policy]:
        if name in _REGISTRY:
            raise ValueError(f"policy {name!r} is registered already")
        _REGISTRY[name] = factory
        return factory

    return wrap


def policy_names() -> list[str]:
    """Names accepted by :func:`make_policy`."""
    _load_builtin()
    return sorted(_REGISTRY)


def make_policy(name: str, **kwargs: Any) -> Policy:
    """Build a registered policy. ``oracle`` needs ``env=``; ``vlm`` takes ``model=``, ``pruning=``."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown policy {name!r}; registered policies: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)


def _load_builtin() -> None:
    # Imported here so that `import policies` stays light (the VLM policy pulls in transformers).
    import policies.oracle  # noqa: F401
    import policies.random_policy  # noqa: F401
    import policies.vlm  # noqa: F401
