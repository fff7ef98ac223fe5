"""What an evaluation runs: variants x ratios x tasks x seeds, and the key that names each episode.

A *variant* is a pruning method with its GUI options (``catp`` in mode ``temporal`` with
persistence, say); a *run* is one episode: (task, seed, variant, ratio) for one policy.

>>> cfg = EvalConfig(tasks=("catp/login-v0",), seeds=(0, 1), variants=parse_variants("none,catp"),
...                  ratios=(0.778,), policy="random")
>>> [r.label for r in cfg.runs()]
['none', 'none', 'catp[layer] R=0.778', 'catp[layer] R=0.778']

Method ``none`` runs once, at R = 0, whatever the ratios are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from catp_agent.harness.validate import ModelLoading
from catp_agent.methods import MODES, MethodConfig, PruningConfig, config_fields, method_class, method_names

__all__ = [
    "MAX_EPISODES",
    "MAX_HISTORY",
    "MAX_SEED",
    "MAX_SEEDS",
    "MAX_STEPS",
    "MAX_WORKERS",
    "VIEWPORT_SIDES",
    "EvalConfig",
    "Run",
    "RunKey",
    "Variant",
    "key_of",
    "parse_overrides",
    "parse_ratios",
    "parse_seeds",
    "parse_variants",
    "variant_config",
]

RunKey = tuple[str, int, str, float, str, bool, str]
"""(task, seed, method, ratio, mode, persistence, policy): what identifies a finished episode."""

# Fields a run sets itself; --set may not override them.
_RUN_FIELDS = ("method", "ratio", "mode", "persistence", "seed")

# Sanity caps: a request beyond them is a typo (``0-999999999999``), refused before anything runs.
MAX_SEED = 2**32 - 1
"""Largest episode seed (what every seeded library takes)."""
MAX_SEEDS = 10_000
"""Most seeds in one grid (and episodes in one ``catp-agent run``)."""
MAX_EPISODES = 100_000
"""Most episodes in one grid (tasks x seeds x variants x ratios)."""
MAX_STEPS = 1_000
"""Most steps per episode."""
MAX_HISTORY = 64
"""Most screenshots in the VLM's window."""
MAX_WORKERS = 64
"""Most worker processes (each runs its own browser)."""
VIEWPORT_SIDES = (16, 4096)
"""Smallest and largest viewport side in CSS pixels (the env's own limits)."""


def _pruning_fields() -> dict[str, dataclasses.Field]:
    """Every option of every registered method's config (the first definition of each name)."""
    out: dict[str, dataclasses.Field] = {}
    for name in method_names():
        for f in dataclasses.fields(method_class(name).config_class):
            out.setdefault(f.name, f)
    return out


def _round_ratio(ratio: float) -> float:
    return round(float(ratio), 6)


def key_of(record: dict[str, Any]) -> RunKey:
    """The run key of an episode record (a line of ``episodes.jsonl``)."""
    return (str(record["task"]), int(record["seed"]), str(record["method"]), _round_ratio(record["ratio"]),
            str(record["mode"]), bool(record["persistence"]), str(record["policy"]))


@dataclass(frozen=True)
class Variant:
    """A pruning method and, for ``catp``, its stage-2 mode and persistence switch.

    Methods other than ``catp`` ignore mode and persistence; they keep the defaults
    (``layer``, False) so that their keys are unique.
    """

    method: str
    mode: str = "layer"
    persistence: bool = False

    def __post_init__(self) -> None:
        if self.method not in method_names():
            raise ValueError(f"method must be one of {list(method_names())}, got {self.method!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.method != "catp" and (self.mode != "layer" or self.persistence):
            raise ValueError(f"mode and persistence only apply to catp; got method {self.method!r} "
                             f"with mode={self.mode!r}, persistence={self.persistence}")

    @property
    def label(self) -> str:
        """``none``, ``fastv``, ``catp[layer]``, ``catp[temporal+p]`` (``+p``: persistence)."""
        if self.method != "catp":
            return self.method
        return f"catp[{self.mode}{'+p' if self.persistence else ''}]"


def variant_config(variant: Variant, ratio: float, seed: int,
                   overrides: tuple[tuple[str, Any], ...] = ()) -> MethodConfig:
    """The config of ``variant`` at R = ``ratio``, seeded, with the ``overrides`` its method has."""
    options: dict[str, Any] = {"ratio": float(ratio), "seed": seed}
    if variant.method == "catp":
        options.update(mode=variant.mode, persistence=variant.persistence)
    own = config_fields(variant.method)
    options.update((name, value) for name, value in overrides if name in own)
    return PruningConfig(method=variant.method, **options)


@dataclass(frozen=True)
class Run:
    """One episode of the grid."""

    task: str
    seed: int
    variant: Variant
    ratio: float
    policy: str

    @property
    def key(self) -> RunKey:
        v = self.variant
        return (self.task, self.seed, v.method, _round_ratio(self.ratio), v.mode, v.persistence, self.policy)

    @property
    def label(self) -> str:
        return self.variant.label if self.variant.method == "none" else f"{self.variant.label} R={self.ratio:g}"

    def key_dict(self) -> dict[str, Any]:
        names = ("task", "seed", "method", "ratio", "mode", "persistence", "policy")
        return dict(zip(names, self.key))

    def pruning(self, overrides: tuple[tuple[str, Any], ...] = ()) -> MethodConfig:
        """The pruning config: the variant, R, the episode seed, then those ``overrides`` that
        the variant's method has (``k_layer`` applies to catp and fastv, ``gamma`` to catp)."""
        return variant_config(self.variant, self.ratio, self.seed, overrides)


@dataclass(frozen=True)
class EvalConfig:
    """Everything that defines an evaluation; written to ``<out>/config.json``.

    Attributes:
        tasks: env ids (``catp/login-v0``); see ``catp-agent tasks``.
        seeds: episode seeds; each seeds the task, the policy and the pruning selection.
        variants: pruning variants; ``none`` runs once at R = 0.
        ratios: R values in (0, 1) for every pruning variant.
        policy: a registered policy name (``vlm``, ``oracle``, ``random``).
        model: checkpoint path (or hub id) for the ``vlm`` policy; None: the policy's default.
        max_steps, viewport: env options; None keeps the task's own default.
        history: screenshots in the VLM's window (ICDs + the current one).
        fidelity: ask the VLM policy for the unpruned reference action at every step.
        pruning_overrides: further method options, e.g. (("k_layer", 4), ("gamma", 0.8)).
        sample_step: step whose screenshot and kept tokens are saved for a heatmap, for each
            episode of the first seed (-1: none). Step 1 is the first step with history.
        retry_errors: rerun episodes whose record has an error (the newest record wins).
        workers: episodes in parallel processes, each with its own browser(s) and policy.
        loading: how each worker loads the vlm policy's model (device, dtype, attention,
            dialect, pointer head); every worker process and Ray actor loads it with these.
    """

    tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    variants: tuple[Variant, ...]
    ratios: tuple[float, ...] = (0.778,)
    policy: str = "vlm"
    model: str | None = None
    max_steps: int | None = None
    viewport: tuple[int, int] | None = None
    history: int = 3
    fidelity: bool = True
    pruning_overrides: tuple[tuple[str, Any], ...] = field(default=())
    sample_step: int = 1
    retry_errors: bool = False
    workers: int = 1
    loading: ModelLoading = ModelLoading()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "variants", tuple(self.variants))
        object.__setattr__(self, "ratios", tuple(_round_ratio(r) for r in self.ratios))
        object.__setattr__(self, "pruning_overrides", tuple(sorted(dict(self.pruning_overrides).items())))
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be a non-empty list without repeats, got {list(self.tasks)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be distinct ints >= 0, got {_short(self.seeds)}")
        if max(self.seeds) > MAX_SEED:
            raise ValueError(f"seeds must be at most {MAX_SEED}, got {max(self.seeds)}")
        if len(self.seeds) > MAX_SEEDS:
            raise ValueError(f"at most {MAX_SEEDS} seeds per grid, got {len(self.seeds)}; split the run")
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants must be non-empty and distinct, got {[v.label for v in self.variants]}")
        if any(v.method != "none" for v in self.variants) and not self.ratios:
            raise ValueError("ratios must be given for pruning methods, got none")
        for r in self.ratios:
            if not 0.0 < r < 1.0:
                raise ValueError(f"ratios must be in (0, 1) (R = 0 is method 'none'), got {r}")
        if len(set(self.ratios)) != len(self.ratios):
            raise ValueError(f"ratios must be distinct, got {list(self.ratios)}")
        if not self.policy:
            raise ValueError("policy must be a registered policy name such as 'vlm', got ''")
        if self.max_steps is not None and (not _is_int(self.max_steps) or not 1 <= self.max_steps <= MAX_STEPS):
            raise ValueError(f"max_steps must be an int in [1, {MAX_STEPS}] or None, got {self.max_steps!r}")
        if self.viewport is not None:
            lo, hi = VIEWPORT_SIDES
            if (len(self.viewport) != 2 or not all(_is_int(v) for v in self.viewport)
                    or not all(lo <= v <= hi for v in self.viewport)):
                raise ValueError(f"viewport must be (width, height) with sides in [{lo}, {hi}] CSS pixels, "
                                 f"got {tuple(self.viewport)}")
            object.__setattr__(self, "viewport", tuple(int(v) for v in self.viewport))
        if not _is_int(self.history) or not 1 <= self.history <= MAX_HISTORY:
            raise ValueError(f"history must be an int in [1, {MAX_HISTORY}] (the current screenshot counts), "
                             f"got {self.history!r}")
        if not _is_int(self.workers) or not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"workers must be an int in [1, {MAX_WORKERS}] (each runs a browser), "
                             f"got {self.workers!r}")
        if not isinstance(self.loading, ModelLoading):
            raise ValueError(f"loading must be a ModelLoading(device=, dtype=, attn=, dialect=, pointer=), "
                             f"got {type(self.loading).__name__}")
        if not isinstance(self.sample_step, int) or self.sample_step < -1:
            raise ValueError(f"sample_step must be an int >= 0, or -1 for none, got {self.sample_step!r}")
        fields = _pruning_fields()
        in_grid = {f for v in self.variants for f in config_fields(v.method)}
        for name, _ in self.pruning_overrides:
            if name not in fields or name in _RUN_FIELDS:
                allowed = sorted(set(fields) - set(_RUN_FIELDS))
                raise ValueError(f"cannot override pruning field {name!r}; allowed: {allowed}")
            if name not in in_grid:
                methods = sorted({v.method for v in self.variants})
                raise ValueError(f"no method of this grid ({', '.join(methods)}) has the option {name!r}")
        episodes = len(self.tasks) * len(self.seeds) * sum(1 if v.method == "none" else len(self.ratios)
                                                           for v in self.variants)
        if episodes > MAX_EPISODES:
            raise ValueError(f"at most {MAX_EPISODES} episodes per grid, this one has {episodes} "
                             f"({len(self.tasks)} tasks x {len(self.seeds)} seeds x variants x ratios); split it")
        # Fails early, with the config's own message, on a bad override value.
        checked: set[Variant] = set()
        for run in self.runs():
            if run.variant not in checked:
                checked.add(run.variant)
                run.pruning(self.pruning_overrides)

    def runs(self) -> list[Run]:
        """The grid, task-major (so each worker's env for a task is reused), seeds innermost."""
        out: list[Run] = []
        for task in self.tasks:
            for variant in self.variants:
                for ratio in ((0.0,) if variant.method == "none" else self.ratios):
                    out.extend(Run(task, seed, variant, ratio, self.policy) for seed in self.seeds)
        return out

    def identity(self) -> dict[str, Any]:
        """Fields that must match for a rerun to resume the same results (the grid may grow)."""
        return {"policy": self.policy, "model": self.model, "max_steps": self.max_steps,
                "viewport": list(self.viewport) if self.viewport else None, "history": self.history,
                "fidelity": self.fidelity, "pruning_overrides": dict(self.pruning_overrides),
                **self._loading_identity()}

    def _loading_identity(self) -> dict[str, Any]:
        """dtype, attn, dialect, pointer when any differs from the default (so folders written
        before these options existed still resume); the device may change between runs."""
        mine, default = ({k: v for k, v in dataclasses.asdict(x).items() if k != "device"}
                         for x in (self.loading, ModelLoading()))
        return {} if mine == default else {"loading": mine}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["variants"] = [dataclasses.asdict(v) | {"label": v.label} for v in self.variants]
        d["pruning_overrides"] = dict(self.pruning_overrides)
        return d


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0-4"`` -> (0, 1, 2, 3, 4); ``"0,3,7"``; ``"0-2,10"``. Refuses empty ranges (``5-2``) and
    more than :data:`MAX_SEEDS` seeds before building any list."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, sep, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise ValueError(f"seeds must look like '0-4' or '0,3,7' (ints >= 0), got {_short(text)!r}") from None
        if last < first:
            raise ValueError(f"seed range {_short(part)!r} is empty; write low-high, e.g. '0-4'")
        if len(seeds) + (last - first + 1) > MAX_SEEDS:
            raise ValueError(f"at most {MAX_SEEDS} seeds per grid, got {_short(text)!r} "
                             f"({len(seeds) + last - first + 1} seeds); split the run")
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise ValueError(f"no seeds in {text!r}; write e.g. '0-4'")
    return tuple(seeds)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _short(value: Any, limit: int = 80) -> str:
    """``value`` as text, cut to ``limit`` characters (a 10,000-seed list or a 4,301-digit number)."""
    text = value if isinstance(value, str) else str(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= limit else f"{text[:limit - 20]}...({len(text)} characters)"


def parse_ratios(text: str) -> tuple[float, ...]:
    """``"0.667,0.778"`` -> (0.667, 0.778)."""
    try:
        return tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ValueError(f"ratios must be comma-separated numbers in (0, 1), got {text!r}") from None


def parse_variants(methods: str, modes: str = "layer", persistence: str = "off") -> tuple[Variant, ...]:
    """Variants from comma lists: ``catp`` expands over ``modes`` x ``persistence`` (off, on, both).

    >>> [v.label for v in parse_variants("none,catp,fastv", modes="layer,temporal", persistence="both")]
    ['none', 'catp[layer]', 'catp[layer+p]', 'catp[temporal]', 'catp[temporal+p]', 'fastv']
    """
    switches = {"off": (False,), "on": (True,), "both": (False, True)}
    if persistence not in switches:
        raise ValueError(f"persistence must be one of {list(switches)}, got {persistence!r}")
    out: list[Variant] = []
    for method in (m.strip() for m in methods.split(",") if m.strip()):
        if method == "catp":
            out.extend(Variant("catp", mode.strip(), p) for mode in modes.split(",") if mode.strip()
                       for p in switches[persistence])
        else:
            out.append(Variant(method))
    return tuple(dict.fromkeys(out))


def parse_overrides(items: list[str]) -> tuple[tuple[str, Any], ...]:
    """``["k_layer=4", "gamma=0.8", "temporal_diff=absolute"]`` -> typed (name, value) pairs."""
    out: list[tuple[str, Any]] = []
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        fields = _pruning_fields()
        if not sep or name not in fields:
            raise ValueError(f"--set takes FIELD=VALUE with a pruning method's option, got {item!r}; "
                             f"options: {sorted(set(fields) - set(_RUN_FIELDS))}")
        out.append((name, _coerce(name, raw.strip())))
    return tuple(out)


def _coerce(name: str, raw: str) -> Any:
    default = _pruning_fields()[name].default
    if raw.lower() == "none":
        return None
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} takes true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    if isinstance(default, int) or name == "k_layer":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{name} takes an integer, got {raw!r}") from None
    if isinstance(default, float) or name in ("alpha", "beta"):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{name} takes a number, got {raw!r}") from None
    return raw
