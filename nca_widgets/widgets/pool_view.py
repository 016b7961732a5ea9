"""PoolView: the pool's samples (target beside current render), worst loss first; click to probe."""

from __future__ import annotations

from typing import Any

import anywidget
import numpy as np
import traitlets as t

from nca_widgets import snapshot as snap
from nca_widgets.widgets._arrays import f32_bytes, u8_bytes
from nca_widgets.widgets._protocol import Feed, TrainerLike, close_feed
from nca_widgets.widgets._static import STATIC, view_module

_SPLITS = ("train", "test")


class PoolView(anywidget.AnyWidget):
    """A grid of `snapshot.pool` samples sorted by loss; clicking one makes it the probe digit.

    The images travel only when the snapshot's `pool` is a new object: `_targets`, `_renders`
    and (where the pool has them) `_inputs` are (P, H, W) uint8 bytes and `_losses` (P,)
    float32 bytes, `_shape` = [P, H, W]. A tile shows input | render | target, or target |
    render without inputs, and its level (e.g. noise level) where the system has levels. A
    click in the browser sends `{"type": "select", "digit_index": i, "split": s, "level": l}`,
    and the handler calls `trainer.set_probe(index=i, split=s, level=l)`.
    """

    _esm = view_module("pool_view.js")
    _css = STATIC / "pool_view.css"

    step = t.Int(0).tag(sync=True)  # snapshot step (data-step)
    pool_step = t.Int(0).tag(sync=True)  # train step of the state the shown pool shows
    split = t.Unicode("train").tag(sync=True)  # split of the digit indices
    digit_indices = t.List(t.Int()).tag(sync=True)  # (P,) digit index of each shown sample
    levels = t.List(t.Float()).tag(sync=True)  # (P,) level of each sample, or empty
    level_name = t.Unicode("").tag(sync=True)  # what a level is, e.g. 'noise level'
    probe_index = t.Int(-1).tag(sync=True)  # the probe digit (highlighted), -1 if none
    probe_split = t.Unicode("").tag(sync=True)
    scale = t.Int(2).tag(sync=True)  # CSS pixels per image pixel
    error = t.Unicode("").tag(sync=True)  # why the last click could not set the probe ('' = ok)
    _shape = t.List(t.Int(), default_value=[0, 0, 0]).tag(sync=True)  # [P, H, W]
    _targets = t.Bytes(b"").tag(sync=True)  # (P, H, W) uint8
    _renders = t.Bytes(b"").tag(sync=True)  # (P, H, W) uint8
    _inputs = t.Bytes(b"").tag(sync=True)  # (P, H, W) uint8, or empty
    _losses = t.Bytes(b"").tag(sync=True)  # (P,) float32

    def __init__(self, trainer: TrainerLike, *, scale: int = 2, **kwargs: Any) -> None:
        super().__init__(scale=scale, **kwargs)
        self._trainer = trainer
        self._pool: snap.PoolView | None = None
        self.on_msg(self._on_custom)
        self._feed = Feed(trainer, self._apply)

    @t.validate("scale")
    def _clamp_scale(self, proposal: dict) -> int:
        return int(np.clip(proposal["value"], 1, 16))

    @property
    def pool(self) -> snap.PoolView | None:
        """The pool shown now (as it came in the snapshot), or None before the first one."""
        return self._pool

    def _apply(self, snapshot: snap.Snapshot) -> None:
        with self.hold_sync():
            self.step = int(snapshot.step)
            probe = snapshot.probe
            if probe is not None:
                self.probe_index = int(probe.probe_index)
                self.probe_split = str(probe.probe_split)
            pool = snapshot.pool
            if pool is None or pool is self._pool:
                return
            self._pool = pool
            losses = np.asarray(pool.losses, np.float32)
            order = snap.worst_first(losses)  # a LiveTrainer sends it sorted; other sources may not
            p, h, w = pool.targets.shape
            self._shape = [int(p), int(h), int(w)]
            self._targets = u8_bytes(pool.targets[order])
            self._renders = u8_bytes(pool.renders[order])
            self._inputs = b"" if pool.inputs is None else u8_bytes(pool.inputs[order])
            self._losses = f32_bytes(losses[order])
            self.digit_indices = [int(i) for i in np.asarray(pool.digit_indices)[order]]
            self.levels = [] if pool.levels is None else \
                [float(v) for v in np.asarray(pool.levels)[order]]
            self.level_name = pool.level_name
            self.split = str(pool.split)
            self.pool_step = int(pool.step if pool.step >= 0 else snapshot.step)

    def _on_custom(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "select":
            self.select(content.get("digit_index"), content.get("split"), content.get("level"))

    def select(self, digit_index: Any, split: Any = None, level: Any = None) -> bool:
        """Make digit `digit_index` of `split` (at `level`) the probe, as a click does.

        False if the choice is invalid (the reason shows in the view).
        """
        if isinstance(digit_index, bool):
            return False
        try:
            index = int(digit_index)
        except (TypeError, ValueError):
            return False
        split = self.split if split is None else split
        if index < 0 or split not in _SPLITS:
            return False
        probe = {"index": index, "split": split}
        if level is not None:
            probe["level"] = level
        try:
            self._trainer.set_probe(**probe)
        except Exception as error:  # shown in the widget; the kernel log is out of sight
            self.error = f"could not probe digit #{index} ({split}): {error}"
            return False
        self.error = ""
        return True

    def close(self) -> None:
        """Unsubscribe from the trainer and close the widget."""
        close_feed(self)
        super().close()
