"""When a periodic action is due: every N steps, every S seconds, at most a share of wall time.

One helper for every cadence of a run (checkpoints, snapshots, the views' rollouts), kept apart
from the actions it times, in the spirit of clu's periodic actions: `due()` asks, `run()` runs
the action and records when it is due next.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class When:
    """A trigger: due after `every_steps` steps and `every_secs` seconds since the last run.

    With `share`, the wait after a run is also at least its cost / share (capped at
    `max_wait_s`), so an action that got slower runs less often and never takes more than that
    share of wall time; the first run's cost (mostly compiling) is not counted.
    """

    def __init__(self, *, every_steps: int | None = None, every_secs: float = 0.0,
                 share: float | None = None, start_step: int = 0, max_wait_s: float = 60.0):
        if every_steps is not None and every_steps < 1:
            raise ValueError(f"every_steps must be at least 1; got {every_steps}")
        self.every_steps, self.every_secs, self.share = every_steps, every_secs, share
        self.max_wait_s = max_wait_s
        self._step, self._next_time, self._runs = start_step, 0.0, 0
        self.failed = False  # whether the last run raised

    def due(self, step: int = 0) -> bool:
        """Whether the action should run now, at train step `step`."""
        if time.perf_counter() < self._next_time:
            return False
        return self.every_steps is None or \
            step // self.every_steps > self._step // self.every_steps

    def run(self, action: Callable[[], Any], step: int = 0) -> Any:
        """Run `action` and record it as done at `step`.

        A run that raised counts too, so a failing action is not retried at once.
        """
        started = time.perf_counter()
        self.failed = True
        try:
            result = action()
            self.failed = False
            return result
        finally:
            now = time.perf_counter()
            cost = now - started if self._runs else 0.0
            self._runs += 1
            wait = max(self.every_secs, cost / self.share if self.share else 0.0)
            self._next_time = now + min(self.max_wait_s, wait)
            self._step = step
