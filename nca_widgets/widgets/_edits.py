"""Brush edits from a scrubber: stroke messages to `trainer.edit`, the recovery curve back.

Both scrubbers mix this in. The browser collects a stroke and sends it as one custom message
`{"type": "edit", "mode", "time", "depth"}` with one binary buffer: the (H, W) mask as uint8
0/1. "clear" asks for the untouched rollout, "inject" for the edit to go into the training pool,
and "prepare" (sent when a brush is first picked) compiles the edited rollout early. What comes
back travels in the probe of the next snapshot: `edit_time` and the recovery curve
(`_recovery`: (2, T) float32, untouched then edited).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import traitlets as t

from nca_widgets import snapshot as snap
from nca_widgets.widgets._arrays import f32_bytes


class Edits(t.HasTraits):
    """Traits and message handling for brushing a trainer's probe rollout."""

    editable = t.Bool(False).tag(sync=True)  # a trainer's rollout (arrays cannot be edited)
    can_inject = t.Bool(False).tag(sync=True)  # the system has a pool to put edits into
    edit_time = t.Int(-1).tag(sync=True)  # time of the edit shown, -1 for the untouched rollout
    edits_ready = t.Bool(False).tag(sync=True)  # the edited rollout is compiled
    edit_status = t.Unicode("").tag(sync=True)  # what the last inject did, or why an edit failed
    _recovery = t.Bytes(b"").tag(sync=True)  # (2, T) float32: MSE vs target, untouched / edited

    def _listen_for_edits(self, trainer: Any) -> None:
        self._edit_trainer = trainer
        self.editable = callable(getattr(trainer, "edit", None))
        self.can_inject = bool(getattr(trainer, "can_inject", False))
        self.on_msg(self._on_edit_msg)

    def _show_edits(self, probe: snap.VolumeProbe | snap.FrameProbe) -> None:
        """Take the edit fields of a new probe (inside hold_sync)."""
        self.edit_time = int(probe.edit_time)
        self._recovery = b"" if probe.recovery is None else f32_bytes(probe.recovery)

    def _on_edit_msg(self, _widget: Any, content: Any, buffers: Any) -> None:
        if not isinstance(content, dict) or not self.editable:
            return
        kind = content.get("type")
        try:
            if kind == "edit":
                self._stroke(content, buffers)
            elif kind == "clear":
                self._edit_trainer.clear_edits()
                self.edit_status = ""
            elif kind == "inject":
                self._inject()
            elif kind == "prepare":
                self._prepare()
        except Exception as error:  # shown in the widget; the kernel log is out of sight
            self.edit_status = f"{kind} failed: {error}"

    def _stroke(self, content: dict, buffers: Any) -> None:
        height, width = self._cell_size()
        mask = np.frombuffer(bytes(buffers[0]) if buffers else b"", np.uint8)
        if mask.size != height * width:
            raise ValueError(f"a stroke must cover {height}x{width} cells; got {mask.size} bytes")
        depth = content.get("depth")
        self._edit_trainer.edit(mask.reshape(height, width) > 0, str(content.get("mode")),
                                int(content.get("time", 0)),
                                None if depth is None else int(depth))
        self.edit_status = ""

    def _prepare(self) -> None:
        prepare = getattr(self._edit_trainer, "prepare_edits", None)
        if not callable(prepare):
            self.edits_ready = True
            return
        self.edit_status = "preparing the brush…"

        def done(future: Any) -> None:
            error = future.exception()
            self.edit_status = "" if error is None else f"the brush failed: {error}"
            self.edits_ready = error is None

        prepare().add_done_callback(done)

    def _inject(self) -> None:
        written = self._edit_trainer.inject(wait=False)

        def done(future: Any) -> None:
            error = future.exception()
            self.edit_status = (f"into the pool failed: {error}" if error is not None else
                                f"into the pool at step {future.result()}")

        written.add_done_callback(done)

    def _cell_size(self) -> tuple[int, int]:
        """(H, W) of the pictures a stroke is drawn on."""
        raise NotImplementedError
