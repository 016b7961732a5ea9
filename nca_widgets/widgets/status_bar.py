"""StatusBar: the small anywidget that shows run status and marks its box with `data-nw`.

ipywidgets boxes cannot carry arbitrary attributes, so a StatusBar placed inside a box that
has the CSS class `host_class` writes `data-nw`, `data-step` and `data-status` onto that box
once it is in the page (onto itself until then), giving browser tests one element to find.
"""

from __future__ import annotations

import math

import anywidget
import traitlets as t

from nca_widgets.snapshot import Snapshot
from nca_widgets.widgets._static import STATIC, view_module


def format_duration(seconds: float) -> str:
    """'M:SS' or 'H:MM:SS' for a non-negative duration; '' when unknown (NaN, inf, negative)."""
    if not math.isfinite(seconds) or seconds < 0:
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_texts(snapshot: Snapshot) -> dict[str, str]:
    """The progress line of a snapshot: 'step / total', speed and ETA.

    The learning rate has its own readout, beside its control.
    """
    rate = float(snapshot.steps_per_s)
    remaining = max(0, int(snapshot.total_steps) - int(snapshot.step))
    eta = ""
    if snapshot.status == "running" and math.isfinite(rate) and rate > 0 and remaining:
        eta = "ETA " + format_duration(remaining / rate)
    return {
        "progress_text": f"{int(snapshot.step)} / {int(snapshot.total_steps)}",
        "rate_text": f"{rate:.1f} steps/s" if math.isfinite(rate) and rate > 0 else "",
        "eta_text": eta,
    }


class StatusBar(anywidget.AnyWidget):
    """Progress, status and an error banner (controls), or a title line (dashboard)."""

    _esm = view_module("status_bar.js")
    _css = STATIC / "status_bar.css"

    nw = t.Unicode("controls").tag(sync=True)  # value of data-nw written on the host
    host_class = t.Unicode("").tag(sync=True)  # CSS class of the box to mark ('' = itself)
    mode = t.Unicode("controls").tag(sync=True)  # 'controls' (progress, banner) | 'title'
    title = t.Unicode("").tag(sync=True)  # text of the title line
    step = t.Int(0).tag(sync=True)  # snapshot step (data-step)
    total_steps = t.Int(0).tag(sync=True)
    status = t.Unicode("idle").tag(sync=True)  # trainer status (data-status)
    progress_text = t.Unicode("").tag(sync=True)  # 'step / total'
    rate_text = t.Unicode("").tag(sync=True)  # 'x steps/s'
    eta_text = t.Unicode("").tag(sync=True)  # 'ETA m:ss' while running
    message = t.Unicode("").tag(sync=True)  # the snapshot's message, in full ('' = none)
    action_error = t.Unicode("").tag(sync=True)  # the last failed button action ('' = none)

    def show(self, snapshot: Snapshot) -> None:
        """Take the status fields of `snapshot` (one state message)."""
        with self.hold_sync():
            self.step = int(snapshot.step)
            self.total_steps = int(snapshot.total_steps)
            self.status = str(snapshot.status)
            self.message = snapshot.message or ""
            for name, value in progress_texts(snapshot).items():
                setattr(self, name, value)
