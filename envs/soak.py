"""Many episodes in one env: do processes, file descriptors and threads stay flat?

``python -m envs soak --episodes 200 --every 20`` runs the oracle through that many episodes of
one env (one browser, one driver, reused across episodes) and prints, every ``--every``
episodes, what this process and everything it started hold: live processes below it (zombies
not counted), open file descriptors (its own, and those of the processes below it), its
threads, and the resident memory of all of them. It exits with 1 when a count other than
memory grew by more than :data:`TRANSIENT` between the first sample and the last (the first
sample is taken after ``--every`` episodes, once the browser has started everything it keeps),
or when a process is left after ``close()``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Iterator, NamedTuple

__all__ = ["TRANSIENT", "Sample", "format_row", "grew", "run_soak", "sample"]

TRANSIENT = 1
"""How much a count may differ between two samples without a leak: a connection in flight (one
socket in the refusing proxy, here, and one in the browser) when the sample is taken."""


class Sample(NamedTuple):
    """Counts after ``episodes`` episodes."""

    episodes: int
    processes: int  # live processes below this one (browser, renderers, driver)
    own_fds: int  # open file descriptors of this process
    child_fds: int  # open file descriptors of the processes below it
    threads: int  # threads of this process
    rss_mib: float  # resident memory of this process and those below it

    @property
    def flat_counts(self) -> tuple[int, int, int, int]:
        """The counts that must not grow (memory is reported, not judged)."""
        return (self.processes, self.own_fds, self.child_fds, self.threads)


def grew(first: Sample, last: Sample) -> bool:
    """Whether a count other than memory grew by more than :data:`TRANSIENT` from ``first`` to ``last``."""
    return any(b - a > TRANSIENT for a, b in zip(first.flat_counts, last.flat_counts))


def _descendants() -> list[int]:
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            data = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        if fields[0] not in (b"Z", b"X"):
            parents[int(name)] = int(fields[1])
    found, todo = [], [os.getpid()]
    while todo:
        parent = todo.pop()
        kids = [pid for pid, ppid in parents.items() if ppid == parent]
        found += kids
        todo += kids
    return found


def _fds(pid: int | str) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # gone meanwhile
        return 0


def _rss_kib(pid: int | str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(episodes: int) -> Sample:
    """Count what this process and the processes below it hold now."""
    kids = _descendants()
    rss = _rss_kib("self") + sum(_rss_kib(pid) for pid in kids)
    return Sample(episodes, len(kids), _fds("self"), sum(_fds(pid) for pid in kids),
                  threading.active_count(), round(rss / 1024, 1))


def settled_sample(episodes: int, tries: int = 10, pause_s: float = 0.2) -> Sample:
    """A :func:`sample` once two in a row agree on every count (at most ``tries``, ``pause_s``
    apart): since every reset opens a fresh browser context, the last episode's renderer may
    still be exiting when the episode ends, and a leak persists while that teardown does not."""
    import time

    last = sample(episodes)
    for _ in range(tries):
        time.sleep(pause_s)
        now = sample(episodes)
        if now.flat_counts == last.flat_counts:
            return now
        last = now
    return last


def run_soak(env_id: str, episodes: int, every: int, **env_kwargs: Any) -> Iterator[Sample]:
    """Run ``episodes`` oracle episodes in one env (seeds 0, 1, ...); yield a :class:`Sample`
    before the first and after every ``every`` episodes, and one after ``close()``."""
    import gymnasium

    import envs  # noqa: F401 - registers the ids

    if episodes < 1 or every < 1:
        raise ValueError(f"episodes and every must be at least 1, got {episodes} and {every}")
    yield sample(0)
    env = gymnasium.make(env_id, **env_kwargs)
    try:
        for episode in range(1, episodes + 1):
            obs, info = env.reset(seed=episode - 1)
            for _ in range(env.unwrapped.config.max_steps):
                action = env.unwrapped.oracle_action(obs, info) or "scroll(0, 10)"
                obs, reward, terminated, truncated, info = env.step(action)
                if terminated or truncated:
                    break
            if episode % every == 0 or episode == episodes:
                yield settled_sample(episode)
    finally:
        env.close()
    yield sample(-1)


def format_row(s: Sample) -> str:
    """One line of the table ``python -m envs soak`` prints."""
    when = "after close" if s.episodes < 0 else f"{s.episodes:>11d}"
    return (f"{when} | {s.processes:>9d} | {s.own_fds:>7d} | {s.child_fds:>9d} | {s.threads:>7d} | "
            f"{s.rss_mib:>8.1f}")


HEADER = ("   episodes | processes | own fds | child fds | threads | RSS MiB\n"
          "------------|-----------|---------|-----------|---------|--------")
