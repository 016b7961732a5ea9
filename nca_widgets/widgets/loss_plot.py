"""LossPlot: the live loss curve (raw + EMA, learning rate on a right axis) on a canvas.

Beside the loss it draws the trainer's live evaluation (e.g. test far-side MSE) and that
evaluation's baseline as a dashed line, on the same axis.
"""

from __future__ import annotations

import threading
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from nca_widgets.snapshot import EvalTrack, History, Snapshot
from nca_widgets.widgets._arrays import f32_bytes, i32_bytes
from nca_widgets.widgets._protocol import Feed, TrainerLike, close_feed
from nca_widgets.widgets._static import STATIC, view_module
from nca_widgets.widgets.decimate import minmax_indices

_EMPTY = np.zeros(0)


class LossPlot(anywidget.AnyWidget):
    """Loss per train step, drawn live; only new points travel to the browser.

    Each snapshot with new steps sends one state update holding the new points as binary
    buffers (`_chunk_step` int32, `_chunk_loss` / `_chunk_lr` float32) with a sequence number.
    A view that opens (or misses a chunk) asks for the whole curve with a custom message and
    gets it back min/max-decimated to its pixel columns, so a reloaded page shows everything.
    """

    _esm = view_module("loss_plot.js")
    _css = STATIC / "loss_plot.css"

    step = t.Int(0).tag(sync=True)  # snapshot step (written as data-step)
    total_steps = t.Int(0).tag(sync=True)  # num_train_steps of the run
    log_y = t.Bool(True).tag(sync=True)  # log-scale loss axis (checkbox in the view)
    smoothing = t.Float(0.9).tag(sync=True)  # EMA weight of the smoothed curve, 0..0.999
    height = t.Int(260).tag(sync=True)  # chart height in CSS px (width follows the layout)
    _chunk_step = t.Bytes(b"").tag(sync=True)  # (k,) int32 steps of the newest chunk
    _chunk_loss = t.Bytes(b"").tag(sync=True)  # (k,) float32 losses of the newest chunk
    _chunk_lr = t.Bytes(b"").tag(sync=True)  # (k,) float32 learning rates of the newest chunk
    _chunk_seq = t.Int(0).tag(sync=True)  # sequence number of the newest chunk (1, 2, ...)
    _epoch = t.Int(0).tag(sync=True)  # bumped when the history restarts (a new or restored run)
    _eval_step = t.Bytes(b"").tag(sync=True)  # (k,) int32 steps of the live evaluation
    _eval_value = t.Bytes(b"").tag(sync=True)  # (k,) float32 its errors (a few dozen points)
    eval_name = t.Unicode("").tag(sync=True)  # e.g. 'test far-side MSE'; '' while there is none
    eval_baseline = t.Float(0.0).tag(sync=True)  # the baseline's error (dashed line)
    eval_baseline_name = t.Unicode("").tag(sync=True)  # e.g. 'mean digit'

    def __init__(self, trainer: TrainerLike, *, height: int = 260, **kwargs: Any) -> None:
        super().__init__(height=height, **kwargs)
        self._send_lock = threading.RLock()  # orders chunks and full replies: seq stays true
        self._history: History | None = None
        self._evaluation: EvalTrack | None = None
        self._cursor: int | None = None  # last step sent to the browser (None: nothing yet)
        self._sent = 0  # number of history entries sent so far
        self.on_msg(self._on_custom)
        self._feed = Feed(trainer, self._apply)

    @t.validate("smoothing")
    def _clamp_smoothing(self, proposal: dict) -> float:
        value = float(proposal["value"])
        return 0.0 if not np.isfinite(value) else float(np.clip(value, 0.0, 0.999))

    @t.validate("height")
    def _clamp_height(self, proposal: dict) -> int:
        return int(np.clip(proposal["value"], 120, 2000))

    def _apply(self, snapshot: Snapshot) -> None:
        history = snapshot.history
        with self._send_lock, self.hold_sync():
            self.step = int(snapshot.step)
            self.total_steps = int(snapshot.total_steps)
            self._apply_evaluation(snapshot.evaluation)
            if history is self._history:
                return
            steps = history.step
            n = len(steps)
            first = self._history is None
            continues = n >= self._sent and (
                self._sent == 0 or int(steps[self._sent - 1]) == self._cursor
            )
            self._history = history
            if first or not continues:
                # Nothing travels now: a view asks for the full (decimated) curve when it opens,
                # and on an epoch change, so a widget made late in a long run stays cheap.
                if not first:
                    self._epoch += 1
                self._sent = n
                self._cursor = int(steps[-1]) if n else None
                return
            if n > self._sent:
                start = self._sent
                self._chunk_step = i32_bytes(steps[start:])
                self._chunk_loss = f32_bytes(history.loss[start:])
                self._chunk_lr = f32_bytes(history.lr[start:])
                self._chunk_seq += 1
                self._sent = n
                self._cursor = int(steps[-1])

    def _apply_evaluation(self, evaluation: EvalTrack | None) -> None:
        """Send the whole evaluation track when it changed: a few dozen points, so no chunks."""
        if evaluation is None or evaluation is self._evaluation:
            return
        self._evaluation = evaluation
        self._eval_step = i32_bytes(evaluation.step)
        self._eval_value = f32_bytes(evaluation.value)
        self.eval_name = evaluation.name
        self.eval_baseline = evaluation.baseline
        self.eval_baseline_name = evaluation.baseline_name

    def _on_custom(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "history":
            self.send_history(content.get("columns"))

    def send_history(self, columns: Any = None) -> None:
        """Answer a view's request: the curve so far, min/max-decimated to `columns` columns."""
        try:
            n_columns = int(np.clip(int(columns), 100, 8000))
        except (TypeError, ValueError):
            n_columns = 2000
        with self._send_lock:
            steps, loss, lr = self.sent_history()
            idx = minmax_indices(steps, loss, n_columns)
            content = {"type": "history", "seq": self._chunk_seq, "epoch": self._epoch,
                       "n": len(idx), "total": len(steps)}
            self.send(content, [i32_bytes(steps[idx]), f32_bytes(loss[idx]), f32_bytes(lr[idx])])

    def sent_history(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps (n,), loss (n,), lr (n,)): the points sent to the browser so far."""
        with self._send_lock:
            history, n = self._history, self._sent
            if history is None:
                return _EMPTY.astype(np.int64), _EMPTY.astype(np.float32), _EMPTY.astype(np.float32)
            return history.step[:n], history.loss[:n], history.lr[:n]

    def figure(self) -> Any:
        """A matplotlib Figure of the loss (and learning rate) so far; see export.loss_figure."""
        from nca_widgets.export import loss_figure

        return loss_figure(self._history)

    def close(self) -> None:
        """Unsubscribe from the trainer and close the widget."""
        close_feed(self)
        super().close()
