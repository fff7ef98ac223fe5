"""Up-front checks for the CLI: what cannot run is refused before a browser starts or a model loads.

Each check raises ``ValueError`` with one line that names the bad value and what is allowed;
the commands print it and exit with status 2. The cheap checks come first (tasks, policy, the
results folder, a light look at a ``--model`` folder), then :func:`load_model` loads the model
once, turning any loading error into the same kind of one-line message.

    check_tasks(["catp/login-v0"])          # unknown ids: close matches and `catp-agent tasks`
    check_policy("vlm")
    check_model_folder("path/to/ckpt")      # config.json parses, weights present, family known
    check_out_dir("runs/eval")              # a folder (or creatable), not locked by a live run

A hub id (``Qwen/Qwen2-VL-2B-Instruct``) passes :func:`check_model_folder` untouched: whether it
loads is for :func:`load_model` to say. A name that can only be a local path (it starts with
``.``, ``/`` or ``~``, or has more than one ``/``) must exist.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ModelLoading",
    "check_model_folder",
    "check_out_dir",
    "check_policy",
    "check_pruning_on_model",
    "check_tasks",
    "load_model",
    "one_line",
]

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")
_MAX_HEADER = 100_000_000  # safetensors' own limit on its JSON header


def one_line(exc: BaseException) -> str:
    """``TypeName: first line of the message``."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# ------------------------------------------------------------------------------------------ tasks
def check_tasks(tasks: Iterable[str]) -> None:
    """Every id must be registered (``catp-agent tasks`` lists them); suggests close matches.
    BrowserGym ids (``browsergym/miniwob.click-button``) must be tasks of an installed BrowserGym
    benchmark."""
    import envs

    known = envs.list_tasks()
    registered = set(known)
    for task in tasks:
        if task in registered:
            continue
        if task.startswith("browsergym/"):
            _check_browsergym_task(task)
            continue
        guesses = [t for t in (envs.env_id(task.removeprefix(envs.ENV_ID_PREFIX).removesuffix("-v0")),)
                   if t in registered]
        guesses += [t for t in difflib.get_close_matches(task, known, n=3, cutoff=0.6) if t not in guesses]
        hint = f" (did you mean {' or '.join(repr(g) for g in guesses[:3])}?)" if guesses else ""
        raise ValueError(f"unknown task {_cut(task)!r}{hint}; `catp-agent tasks` lists the {len(known)} registered ids")


def _check_browsergym_task(task: str) -> None:
    try:
        from catp_agent.harness.browsergym.support import browsergym_task_ids

        benchmark = task.removeprefix("browsergym/").split(".", 1)[0]
        known = browsergym_task_ids(benchmark)
    except ImportError as exc:
        raise ValueError(f"task {_cut(task)!r} is a BrowserGym task: {exc}") from None
    if task not in known:
        close = difflib.get_close_matches(task, known, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(g) for g in close)}?)" if close else ""
        raise ValueError(f"unknown BrowserGym task {_cut(task)!r}{hint}; BrowserGym's {benchmark} has "
                         f"{len(known)} tasks, e.g. {known[0]!r}" if known else f"no tasks in BrowserGym's {benchmark}")


def check_policy(name: str) -> None:
    """``name`` must be a registered policy (``vlm``, ``oracle``, ``random``, ...)."""
    from policies import policy_names

    names = policy_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown policy {_cut(name)!r}{hint}; registered policies: {', '.join(names)}")


# ----------------------------------------------------------------------------------- out folder
def check_out_dir(out: str | os.PathLike[str], flag: str = "--out") -> None:
    """``out`` is a folder or can be one, and no live process holds its results lock."""
    from catp_agent.harness.evaluation.results import LOCK_FILE, lock_holder

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {str(path)!r} is a file, not a folder; choose a folder for the results")
    parent = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {str(path)!r} cannot be written ({str(parent)!r} is not a writable folder)")
    holder = lock_holder(path) if path.is_dir() else None
    if holder is not None:
        who = f"process {holder}" if holder > 0 else "another process"
        raise ValueError(f"results folder {str(path)!r} is in use: {who} holds {str(path / LOCK_FILE)!r} and is "
                         "writing there; wait for it to finish (rerunning then resumes), or choose another --out")


# ---------------------------------------------------------------------------------------- model
def _looks_local(text: str) -> bool:
    return text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1 or not _HUB_ID.fullmatch(text)


def check_model_folder(model: str | None) -> None:
    """A light look at ``--model`` before anything loads.

    None (the bundled default) and hub ids pass. A local folder must hold a ``config.json``
    that parses as a JSON object naming a supported family (its ``architectures`` or
    ``model_type``, see :func:`catp_agent.models.families.supported_class_names`) and a weights
    file whose safetensors header matches the file's size.
    """
    if model is None:
        return
    text = str(model)
    if not text.strip():
        raise ValueError("--model is empty; pass a checkpoint folder or leave --model out for the bundled model")
    path = Path(text).expanduser()
    if not path.exists():
        if _looks_local(text):
            raise ValueError(f"--model {_cut(text)!r}: no such folder; pass a checkpoint folder (config.json and "
                             "weights, as save_pretrained writes them) or leave --model out for the bundled model")
        return  # a hub id: load_model says whether it can be had
    if not path.is_dir():
        raise ValueError(f"--model {text!r} is a file; pass the checkpoint folder that holds config.json and weights")
    config_path = path / "config.json"
    if not config_path.is_file():
        what = "an empty folder" if not any(path.iterdir()) else "a folder without config.json"
        raise ValueError(f"--model {text!r} is {what}; a checkpoint folder holds config.json and weights "
                         "(as save_pretrained writes them)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ValueError(f"--model {text!r}: config.json cannot be read as JSON ({one_line(exc)})") from None
    if not isinstance(config, dict):
        raise ValueError(f"--model {text!r}: config.json must hold a JSON object, got {type(config).__name__}")
    _check_family(text, config)
    _check_weights(text, path)


def _check_family(text: str, config: dict[str, Any]) -> None:
    from catp_agent.models.families import family_names, supported_class_names

    classes = config.get("architectures") or []
    model_type = config.get("model_type")
    classes = [c for c in classes if isinstance(c, str)] if isinstance(classes, list) else []
    if model_type in family_names() or set(classes) & set(supported_class_names()):
        return
    raise ValueError(f"--model {text!r}: unsupported model (architectures {classes}, model_type {model_type!r}); "
                     f"catp-agent supports {', '.join(supported_class_names())} (model types "
                     f"{', '.join(family_names())}); register a ModelFamily for others")


def _check_weights(text: str, path: Path) -> None:
    present = [name for name in WEIGHT_FILES if (path / name).is_file()]
    shards = sorted(path.glob("*.safetensors"))
    if not present and not shards:
        raise ValueError(f"--model {text!r} has no weights file (one of {', '.join(WEIGHT_FILES)})")
    for name in present:
        if name.endswith(".index.json"):
            try:
                weight_map = json.loads((path / name).read_text(encoding="utf-8"))["weight_map"]
                files = sorted(set(weight_map.values()))
            except (ValueError, OSError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"--model {text!r}: {name} is not a weights index ({one_line(exc)})") from None
            missing = [f for f in files if not (path / f).is_file()]
            if missing:
                raise ValueError(f"--model {text!r}: {name} names weight files that are missing: {missing[:3]}")
        elif (path / name).stat().st_size == 0:
            raise ValueError(f"--model {text!r}: {name} is empty")
    for shard in shards:
        _check_safetensors(text, shard)


def _check_safetensors(text: str, file: Path) -> None:
    """The 8-byte header length, the JSON header and the tensors' extent must fit the file."""
    size = file.stat().st_size
    bad = f"--model {text!r}: {file.name} is corrupt or truncated"
    with open(file, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= min(size - 8, _MAX_HEADER):
            raise ValueError(f"{bad} (its header does not fit the file's {size} bytes)")
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"{bad} (its header is not valid: {one_line(exc)})") from None
    if 8 + n + end != size:
        raise ValueError(f"{bad} (its header describes {8 + n + end} bytes, the file has {size})")


def load_model(model: str | None, device: str = "auto", dtype: str = "auto", attn: str = "sdpa",
               dialect: str | None = None, pointer: bool = True) -> Any:
    """Load the agent model (:func:`catp_agent.agent.model_io.load_agent_model`) once, up front,
    on ``device`` in ``dtype`` with attention ``attn``; ``dialect`` (a registered action dialect,
    None: the model's default) is recorded on it for the policy. Bad options and any loading
    error (corrupt weights, missing tokenizer, a hub id that cannot be had) become a one-line
    ``ValueError``. ``pointer=False`` leaves a pointer head saved beside the checkpoint out."""
    from catp_agent.agent.dialects import get_dialect
    from catp_agent.agent.model_io import check_attn, load_agent_model, resolve_device, resolve_dtype

    try:
        resolve_dtype(dtype, resolve_device(device))
        check_attn(attn)
        if dialect is not None:
            get_dialect(dialect)
    except ValueError as exc:
        raise ValueError(one_line(exc).removeprefix("ValueError: ")) from None
    try:
        agent = load_agent_model(model, device=device, dtype=dtype, attn=attn, pointer_head=pointer)
    except Exception as exc:  # noqa: BLE001 - any failure to load is reported as one line, exit 2
        raise ValueError(f"--model {_cut(str(model))!r} could not be loaded: {one_line(exc)}") from None
    agent.dialect = dialect
    return agent


@dataclass(frozen=True)
class ModelLoading:
    """How the vlm policy's model is loaded, prompted and read (``--device``, ``--dtype``,
    ``--attn``, ``--dialect``, ``--no-pointer``), as it travels to worker processes and Ray actors.

    Checked here only for form: whether ``cuda`` exists (and ``flash_attn`` for
    ``flash_attention_2``) is for the process that loads the model to say, which on a cluster is
    a worker holding the GPUs Ray gave it, not the driver. There ``cuda`` is the first of them.
    """

    device: str = "auto"
    dtype: str = "auto"
    attn: str = "sdpa"
    dialect: str | None = None
    pointer: bool = True

    DEVICES = ("auto", "cpu", "cuda", "cuda:N")  # as catp_agent.agent.model_io has them (tested),
    DTYPES = ("bf16", "fp16", "fp32")               # without importing torch here
    ATTN = ("sdpa", "flash_attention_2")

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be one of {', '.join(self.DEVICES)}, got {self.device!r}")
        if self.dtype not in ("auto", *self.DTYPES):
            raise ValueError(f"dtype must be one of auto, {', '.join(self.DTYPES)}, got {self.dtype!r}")
        if self.attn not in self.ATTN:
            raise ValueError(f"attn must be one of {', '.join(self.ATTN)}, got {self.attn!r}")
        if self.dialect is not None:
            from catp_agent.agent.dialects import get_dialect

            try:
                get_dialect(self.dialect)
            except ValueError as exc:
                raise ValueError(one_line(exc).removeprefix("ValueError: ")) from None
        if not isinstance(self.pointer, bool):
            raise ValueError(f"pointer must be True or False, got {self.pointer!r}")

    @property
    def is_default(self) -> bool:
        return self == ModelLoading()

    def load(self, model: str | None, device: str | None = None) -> Any:
        """:func:`load_model` with these options (``device`` overrides this one's)."""
        return load_model(model, device=device or self.device, dtype=self.dtype, attn=self.attn,
                          dialect=self.dialect, pointer=self.pointer)


def check_pruning_on_model(configs: Iterable[Any], agent: Any) -> None:
    """Each pruning config must fit the loaded model (``k_layer`` within its decoder)."""
    from catp_agent.methods import make_method
    from catp_agent.models.families import adapter_for

    layers = adapter_for(agent.model).num_layers
    for cfg in configs:
        make_method(cfg, layers)  # raises ValueError naming k_layer and the allowed range


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit - 20]}...({len(text)} characters)"
