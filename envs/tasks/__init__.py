"""Tasks: the bundled page tasks, MiniWoB++ tasks, and the registry that names them.

Add your own task by subclassing :class:`PageTask`, decorating it with
:func:`register_task`, and registering an env id with :func:`envs.register_env`
(see ``envs/README.md``).
"""

from __future__ import annotations

from envs.tasks import bundled_forms, bundled_navigation  # noqa: F401 - registers the tasks
from envs.tasks.base import PageTask, PageView, Task, TaskStatus
from envs.tasks.miniwob import MiniWobTask, miniwob_task_names
from envs.tasks.registry import TASKS, make_task, register_task, register_task_prefix

register_task_prefix("miniwob", lambda task, **options: MiniWobTask(task, **options))

BUNDLED_TASKS: tuple[str, ...] = tuple(sorted(TASKS))
"""Names of the tasks that ship with envs (served by the env's own HTTP server)."""

__all__ = [
    "BUNDLED_TASKS",
    "MiniWobTask",
    "PageTask",
    "PageView",
    "TASKS",
    "Task",
    "TaskStatus",
    "make_task",
    "miniwob_task_names",
    "register_task",
]
