"""Hands a trainer's newest snapshot to its subscribers on a thread of its own.

Older snapshots are dropped, so a slow subscriber misses snapshots instead of slowing training;
a subscriber that raises is reported and unsubscribed, and training goes on.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable

from nca_widgets.snapshot import Snapshot

log = logging.getLogger("nca_widgets")


class Publisher:
    """Hands the newest snapshot to subscribers on its own thread; older ones are dropped."""

    def __init__(self):
        self._subscribers: dict[int, Callable[[Snapshot], None]] = {}
        self._next_id = 0
        self._latest: Snapshot | None = None
        self._closed = False
        self._cond = threading.Condition()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._loop, name="nca-publisher", daemon=True)
        self.thread.start()

    def subscribe(self, fn: Callable[[Snapshot], None]) -> Callable[[], None]:
        """Deliver new snapshots to `fn`; returns the function that unsubscribes it."""
        with self._cond:
            sid, self._next_id = self._next_id, self._next_id + 1
            self._subscribers[sid] = fn
        return lambda: self._subscribers.pop(sid, None)

    @property
    def active(self) -> bool:
        """Whether anyone subscribes (snapshots are built only then)."""
        return bool(self._subscribers)

    def offer(self, snapshot: Snapshot) -> None:
        """Hand `snapshot` to the subscribers, replacing one not yet delivered."""
        with self._cond:
            self._latest = snapshot
            self._cond.notify()

    def close(self) -> None:
        """End the thread once the snapshot on offer (if any) is delivered."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._latest is None and not self._closed:
                    self._cond.wait()
                if self._latest is None:
                    return
                snapshot, self._latest = self._latest, None
                subscribers = list(self._subscribers.items())
            for sid, fn in subscribers:
                try:
                    fn(snapshot)
                except Exception:  # reported, unsubscribed; training goes on
                    message = f"subscriber {fn!r} raised and was unsubscribed:\n"
                    self.errors.append(message + traceback.format_exc())
                    log.exception("subscriber %r raised and was unsubscribed", fn)
                    self._subscribers.pop(sid, None)
