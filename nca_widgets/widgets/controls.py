"""Controls: Start/Pause/Resume, Step n, Stop, Save, a learning-rate slider and the run status."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from nca_widgets.snapshot import Snapshot
from nca_widgets.widgets._protocol import Feed, TrainerLike, close_feed
from nca_widgets.widgets.status_bar import StatusBar

_TERMINAL = ("finished", "stopped", "failed")


def toggle_label(status: str) -> str:
    """Text of the run button for a trainer status: 'Start', 'Pause' or 'Resume'."""
    return {"running": "Pause", "paused": "Resume"}.get(status, "Start")


class Controls(w.VBox):
    """Buttons and a learning-rate slider that post commands to the trainer, plus its status.

    Handlers only call trainer methods (pause without waiting), so a click never blocks the
    kernel; a failing command is shown in the error banner, not lost in the log. The box
    carries `data-nw="controls"` (written by its StatusBar) and `data-step`.
    """

    def __init__(self, trainer: TrainerLike, **kwargs: Any) -> None:
        self.trainer = trainer
        self.run_button = w.Button(description="Start", tooltip="start, pause or resume training",
                                   layout=w.Layout(width="90px"))
        self.step_button = w.Button(description="Step", tooltip="train n steps, then pause",
                                    layout=w.Layout(width="70px"))
        self.step_count = w.BoundedIntText(value=1, min=1, max=1_000_000,
                                           layout=w.Layout(width="80px"))
        self.stop_button = w.Button(description="Stop", tooltip="stop the run",
                                    layout=w.Layout(width="70px"))
        self.save_button = w.Button(description="Save", tooltip="write a checkpoint",
                                    layout=w.Layout(width="70px"))
        self.saved_path = w.Label(value="")
        lr = _initial_lr(trainer)
        exponent = math.floor(math.log10(lr))
        self.lr_slider = w.FloatLogSlider(
            value=lr, base=10, min=exponent - 3, max=exponent + 2, step=0.05,
            description="learning rate", readout_format=".2e", continuous_update=False,
            style={"description_width": "initial"}, layout=w.Layout(width="430px"),
        )
        self._quiet = threading.local()  # set while the slider follows a snapshot
        self._user_lr_at = -math.inf  # when the user last moved the slider (monotonic s)
        self.status_bar = StatusBar(nw="controls", host_class="nw-controls", mode="controls")
        self.run_button.on_click(self._on_run)
        self.step_button.on_click(self._on_step)
        self.stop_button.on_click(self._on_stop)
        self.save_button.on_click(self._on_save)
        self.lr_slider.observe(self._on_lr, names="value")
        buttons = w.HBox(
            [self.run_button, self.step_button, self.step_count, self.stop_button,
             self.save_button, self.saved_path],
            layout=w.Layout(align_items="center", flex_flow="row wrap"),
        )
        super().__init__([buttons, self.lr_slider, self.status_bar], **kwargs)
        self.add_class("nw-controls")
        self._feed = Feed(trainer, self._apply)

    def _apply(self, snapshot: Snapshot) -> None:
        self.status_bar.show(snapshot)
        self._set_buttons(snapshot.status)
        self._show_lr(float(snapshot.learning_rate))

    def _show_lr(self, lr: float) -> None:
        """Let the slider follow the scheduled learning rate, without telling the trainer.

        Skipped for a second after the user moved it (an older snapshot would undo the move
        on screen) and for changes under 0.5 %, so it is not redrawn on every snapshot.
        """
        current = self.lr_slider.value
        recent = time.monotonic() - self._user_lr_at < 1.0
        if recent or not (math.isfinite(lr) and lr > 0) or abs(lr - current) <= 0.005 * current:
            return
        self._quiet.on = True
        try:
            self.lr_slider.value = lr
        finally:
            self._quiet.on = False

    def _set_buttons(self, status: str) -> None:
        """Button texts and enabled states for `status` (only changed values are sent)."""
        self.run_button.description = toggle_label(status)
        self.run_button.disabled = status in _TERMINAL
        self.run_button.button_style = "warning" if status == "running" else "success"
        self.step_button.disabled = status not in ("idle", "paused")
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
            self._act("Pause", lambda: self.trainer.pause(wait=False))
        elif status == "paused":
            self._act("Resume", self.trainer.resume)
        elif status == "idle":
            self._act("Start", self.trainer.start)
        self._refresh_status()

    def _on_step(self, _button: Any = None) -> None:
        n = max(1, int(self.step_count.value))
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

    def _on_lr(self, change: dict) -> None:
        if getattr(self._quiet, "on", False):
            return
        self._user_lr_at = time.monotonic()
        value = float(change["new"])
        if math.isfinite(value) and value > 0:
            self._act("Set learning rate", lambda: setattr(self.trainer, "learning_rate", value))

    def close(self) -> None:
        """Unsubscribe and close this widget and its parts."""
        close_feed(self)
        names = ("run_button", "step_button", "step_count", "stop_button", "save_button",
                 "saved_path", "lr_slider", "status_bar")
        for part in [getattr(self, name, None) for name in names] + list(self.children):
            if part is not None:
                part.close()
        super().close()


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
