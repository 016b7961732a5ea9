"""Jupyter widgets that follow a trainer's snapshots: loss curve, pool, scrubbers, controls."""

from nca_widgets.widgets.controls import Controls
from nca_widgets.widgets.dashboard import Dashboard
from nca_widgets.widgets.decimate import decimate_minmax
from nca_widgets.widgets.frame_scrubber import FrameScrubber
from nca_widgets.widgets.loss_plot import LossPlot
from nca_widgets.widgets.pool_view import PoolView
from nca_widgets.widgets.volume_scrubber import VolumeScrubber

__all__ = [
    "Controls",
    "Dashboard",
    "FrameScrubber",
    "LossPlot",
    "PoolView",
    "VolumeScrubber",
    "decimate_minmax",
]
