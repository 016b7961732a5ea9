"""Controls: Start/Pause/Resume, Step n, Stop, Save, the learning rate and the run status."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from nca_widgets.numbers import format_number
from nca_widgets.snapshot import Snapshot
from nca_widgets.widgets._protocol import Feed, TrainerLike, close_feed
from nca_widgets.widgets.status_bar import StatusBar
from nca_widgets.widgets.step_control import StepControl

_TERMINAL = ("finished", "stopped", "failed")
LR_FACTORS = (0.5, 0.8, 1.25, 2.0)  # the learning-rate nudges: small steps near the current rate


def toggle_label(status: str, pausing: bool = False) -> str:
    """Text of the run button: 'Start', 'Pause', 'Pausing…' (asked, not yet) or 'Resume'."""
    if status == "running":
        return "Pausing…" if pausing else "Pause"
    return {"paused": "Resume"}.get(status, "Start")


def parse_learning_rate(text: str) -> float:
    """A learning rate typed by the user ('3e-4', '0.001'), or ValueError saying what fits."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a number; type one such as 3e-4") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"a learning rate must be a positive number; got {text.strip()!r}")
    return value


class Controls(w.VBox):
    """Buttons and a learning-rate control that post commands to the trainer, plus its status.

    Handlers only call trainer methods (pause without waiting), so a click never blocks the
    kernel; a failing command is shown in the error banner, not lost in the log. The learning
    rate shows as the status line writes numbers; it changes by small factors of the current
    rate (÷2, ×0.8, ×1.25, ×2) or to a typed value. The box carries `data-nw="controls"` (written
    by its StatusBar) and `data-step`.
    """

    def __init__(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.trainer = trainer
        self.run_button = w.Button(description="Start", tooltip="start, pause or resume training",
                                   layout=w.Layout(width="90px"))
        self.stepper = StepControl()  # Step and its count, in one message
        self.stop_button = w.Button(description="Stop", tooltip="stop the run",
                                    layout=w.Layout(width="70px"))
        self.save_button = w.Button(description="Save", tooltip="write a checkpoint",
                                    layout=w.Layout(width="70px"))
        self.saved_path = w.Label(value="")
        self.lr_label = w.Label(value=_lr_text(_initial_lr(trainer)))
        self.lr_buttons = [
            w.Button(description=f"÷{1 / f:g}" if f < 1 else f"×{f:g}",
                     tooltip=f"multiply the learning rate by {f:g}",
                     layout=w.Layout(width="64px"))
            for f in LR_FACTORS
        ]
        self.lr_text = w.Text(placeholder="set to… (Enter)", continuous_update=False,
                              layout=w.Layout(width="130px"))
        self._pausing = False  # Pause was clicked and the trainer has not paused yet
        self.status_bar = StatusBar(nw="controls", host_class="nw-controls", mode="controls")
        self.run_button.on_click(self._on_run)
        self.stepper.on_step(self._on_step)
        self.stop_button.on_click(self._on_stop)
        self.save_button.on_click(self._on_save)
        for factor, button in zip(LR_FACTORS, self.lr_buttons, strict=True):
            button.on_click(lambda _b, f=factor: self._scale_lr(f))
        self.lr_text.observe(self._on_lr_text, names="value")
        row = w.Layout(align_items="center", flex_flow="row wrap")
        buttons = w.HBox([self.run_button, self.stepper, self.stop_button,
                          self.save_button, self.saved_path], layout=row)
        lr_row = w.HBox([self.lr_label, *self.lr_buttons, self.lr_text], layout=row)
        super().__init__([buttons, lr_row, self.status_bar], **kwargs)
        self.add_class("nw-controls")
        self._feed = Feed(trainer, self._apply)

    def _apply(self, snapshot: Snapshot) -> None:
        self.status_bar.show(snapshot)
        self._set_buttons(snapshot.status)
        self.lr_label.value = _lr_text(float(snapshot.learning_rate))

    def _set_buttons(self, status: str) -> None:
        """Button texts and enabled states for `status` (only changed values are sent)."""
        self._pausing = self._pausing and status == "running"
        self.run_button.description = toggle_label(status, self._pausing)
        self.run_button.disabled = status in _TERMINAL or self._pausing
        self.run_button.button_style = "warning" if status == "running" else "success"
        self.stepper.disabled = status not in ("idle", "paused")
        self.stop_button.disabled = status not in ("running", "paused")
        self.save_button.disabled = status == "failed"  # a failed run's state is not saved

    def _act(self, name: str, action: Callable[[], Any]) -> Any:
        """Run a trainer command; a failure goes to the banner instead of the kernel log."""
        try:
            result = action()
        except Exception as error:  # shown to the user, who can act on it
            self.status_bar.action_error = f"{name} failed: {type(error).__name__}: {error}"
            return None
        self.status_bar.action_error = ""
        return result

    def _refresh_status(self) -> None:
        status = getattr(self.trainer, "status", None)
        if isinstance(status, str):
            self._set_buttons(status)

    def _on_run(self, _button: Any = None) -> None:
        status = self.trainer.status  # act on the trainer's state, not on a stale label
        if status == "running":
            self._pausing = True  # shown at once: the step in flight ends first
            self._act("Pause", lambda: self.trainer.pause(wait=False))
        elif status == "paused":
            self._act("Resume", self.trainer.resume)
        elif status == "idle":
            self._act("Start", self.trainer.start)
        self._refresh_status()

    def _on_step(self, n: int) -> None:
        self._act("Step", lambda: self.trainer.advance(n))
        self._refresh_status()

    def _on_stop(self, _button: Any = None) -> None:
        self._act("Stop", self.trainer.stop)
        self._refresh_status()

    def _on_save(self, _button: Any = None) -> None:
        """Ask for a checkpoint without waiting for it: the label follows the write."""
        written = self._act("Save", lambda: self.trainer.save(wait=False))
        if written is None:
            return
        self.saved_path.value = "saving…"
        written.add_done_callback(self._show_saved)

    def _show_saved(self, written: Any) -> None:
        error = written.exception()
        if error is None:
            self.saved_path.value = f"saved {written.result()}"
        else:
            self.saved_path.value = ""
            self.status_bar.action_error = f"Save failed: {type(error).__name__}: {error}"

    def _scale_lr(self, factor: float) -> None:
        """Multiply the trainer's current learning rate by `factor`."""
        lr = self._act("Set learning rate", lambda: float(self.trainer.learning_rate) * factor)
        if lr is not None:
            self._set_lr(lr)

    def _on_lr_text(self, change: dict) -> None:
        if not change["new"].strip():
            return
        lr = self._act("Set learning rate", lambda: parse_learning_rate(change["new"]))
        if lr is not None:
            self.lr_text.value = ""
            self._set_lr(lr)

    def _set_lr(self, lr: float) -> None:
        if self._act("Set learning rate",
                     lambda: setattr(self.trainer, "learning_rate", lr) or True):
            self.lr_label.value = _lr_text(lr)  # at once; the next snapshot confirms it

    def close(self) -> None:
        """Unsubscribe and close this widget and its parts."""
        close_feed(self)
        names = ("run_button", "stepper", "stop_button", "save_button",
                 "saved_path", "lr_label", "lr_text", "status_bar")
        parts = [getattr(self, name, None) for name in names] + getattr(self, "lr_buttons", [])
        for part in parts + list(self.children):
            if part is not None:
                part.close()
        super().close()


def _lr_text(lr: float) -> str:
    return f"learning rate {format_number(lr)}" if math.isfinite(lr) else "learning rate ?"


def _initial_lr(trainer: TrainerLike) -> float:
    for value in (getattr(trainer, "learning_rate", None),
                  getattr(getattr(trainer, "config", None), "learning_rate", None)):
        try:
            lr = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(lr) and lr > 0:
            return lr
    return 1e-3
