"""The trainer as widgets see it: a structural protocol, and the subscription every view keeps.

Widgets only read snapshots and post commands; they never import the trainer module, so any
object with these members (the real trainer, a test fake) can drive them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from nca_widgets.snapshot import Snapshot

log = logging.getLogger("nca_widgets.widgets")


@runtime_checkable
class TrainerLike(Protocol):
    """What a widget may use of a trainer: its status plus thread-safe commands.

    Everything else a widget shows (the system's title, its kind of pictures, the pictures
    themselves) comes in snapshots.
    """

    status: str
    step: int
    learning_rate: float

    def start(self) -> None: ...  # noqa: D102
    def pause(self, wait: bool = True) -> None: ...  # noqa: D102
    def resume(self) -> None: ...  # noqa: D102
    def advance(self, n: int = 1) -> None: ...  # noqa: D102
    def stop(self) -> None: ...  # noqa: D102
    def save(self, path: Any = None, wait: bool = True) -> Any: ...  # noqa: D102
    def subscribe(self, fn: Callable[[Snapshot], None]) -> Callable[[], None]: ...  # noqa: D102
    def snapshot(self) -> Snapshot: ...  # noqa: D102
    def latest(self) -> Snapshot: ...  # noqa: D102
    def set_probe(  # noqa: D102
        self, index: int | None = None, split: str | None = None, channel: int | None = None,
        level: float | None = None,
    ) -> None: ...


def is_trainer(obj: object) -> bool:
    """True if `obj` looks like a trainer (has `subscribe` and `snapshot`), not an array."""
    return callable(getattr(obj, "subscribe", None)) and callable(getattr(obj, "snapshot", None))


class Feed:
    """Delivers a trainer's snapshots to one widget's `apply(snapshot)`, serialised by a lock.

    Subscribes first and then applies `trainer.latest()` (no round trip to the training thread,
    so building a widget never waits for a train step) unless a published snapshot already
    arrived, so no update is lost between the two. `apply` runs on the publisher thread (or
    the caller's, for the first one); an exception in it is logged and kept in `last_error`
    instead of killing the publisher. `first` is the snapshot fetched at construction, which
    says what kind of system the trainer runs.
    """

    def __init__(self, trainer: TrainerLike, apply: Callable[[Snapshot], None],
                 lock: threading.RLock | None = None) -> None:
        self.trainer = trainer
        self.lock = lock or threading.RLock()  # a widget passes its own to share it
        self.last_error: BaseException | None = None
        self._apply = apply
        self._received = False
        self._unsubscribe: Callable[[], None] | None = trainer.subscribe(self._on_snapshot)
        try:
            self.first: Snapshot = trainer.latest()
        except BaseException:  # e.g. a closed trainer: the widget is not built, so let go
            self.close()
            raise
        with self.lock:
            if not self._received:
                self._deliver(self.first)

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        with self.lock:
            self._received = True
            self._deliver(snapshot)

    def _deliver(self, snapshot: Snapshot) -> None:
        try:
            self._apply(snapshot)
            self.last_error = None
        except Exception as error:  # a widget bug must not stop the trainer's publisher
            self.last_error = error
            log.exception("widget update failed at step %s", getattr(snapshot, "step", "?"))

    def close(self) -> None:
        """Stop receiving snapshots (idempotent)."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()


def close_feed(widget: object) -> None:
    """Close a widget's `_feed`, if it got one (a constructor that raised leaves none)."""
    feed = getattr(widget, "_feed", None)
    if feed is not None:
        feed.close()
