"""Agents that act in the web environments: ``make_policy(name, ...)``.

    from policies import make_policy
    policy = make_policy("oracle", env=env)        # the task's own DOM oracle
    policy = make_policy("random", seed=0)
    policy = make_policy("vlm", pruning=PruningConfig(method="catp", ratio=0.778))
"""

from policies.base import Policy, make_policy, policy_names, register_policy

__all__ = ["Policy", "make_policy", "policy_names", "register_policy"]
