"""StepControl: the Step button and its count, sent to the kernel together.

With an ipywidgets Button beside an IntText, a Step clicked right after typing a count could
train the old count: a busy page holds the text box's state update back behind earlier messages
while the button's click goes straight out. Here the click carries the count, in one message.
"""

from __future__ import annotations

from collections.abc import Callable

import anywidget
import traitlets as t

from nca_widgets.widgets._static import STATIC, view_module

MAX_STEPS = 1_000_000  # the most steps one click asks for


class StepControl(anywidget.AnyWidget):
    """A Step button and a count box.

    A click in the page calls the `on_step` handlers with the count typed in the box, whatever
    the kernel last heard of the box.
    """

    _esm = view_module("step_control.js")
    _css = STATIC / "step_control.css"

    count = t.Int(1).tag(sync=True)  # the count in the box: typed there, or the last stepped
    max_steps = t.Int(MAX_STEPS).tag(sync=True)
    disabled = t.Bool(False).tag(sync=True)  # the button (the box stays open for typing)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._handlers: list[Callable[[int], None]] = []
        self.on_msg(self._on_msg)

    def on_step(self, handler: Callable[[int], None]) -> None:
        """Call `handler(count)` on every Step."""
        self._handlers.append(handler)

    def click(self, count: int | None = None) -> None:
        """Step `count` (default: the box's), as a click in the page does; nothing if disabled.

        A count outside 1 to `max_steps` is clamped to it, as the box in the page does.
        """
        if self.disabled:
            return
        self.count = max(1, min(self.max_steps, int(self.count if count is None else count)))
        for handler in self._handlers:
            handler(self.count)

    def _on_msg(self, _widget: StepControl, content: dict, _buffers: list) -> None:
        if isinstance(content, dict) and content.get("event") == "step" and \
                isinstance(content.get("count"), int | float):
            self.click(content["count"])
