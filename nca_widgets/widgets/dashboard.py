"""Dashboard: the controls, loss curve, pool and the system's scrubber in one notebook cell."""

from __future__ import annotations

import weakref
from typing import Any

import ipywidgets as w

from nca_widgets.snapshot import Snapshot
from nca_widgets.widgets._protocol import Feed, TrainerLike, close_feed
from nca_widgets.widgets.controls import Controls
from nca_widgets.widgets.frame_scrubber import FrameScrubber
from nca_widgets.widgets.loss_plot import LossPlot
from nca_widgets.widgets.pool_view import PoolView
from nca_widgets.widgets.status_bar import StatusBar
from nca_widgets.widgets.volume_scrubber import VolumeScrubber

# The open dashboard of each trainer: a new one replaces it, so re-running a notebook cell that
# shows a dashboard does not add another set of subscribers that serialise every snapshot.
_OPEN: weakref.WeakKeyDictionary[Any, Dashboard] = weakref.WeakKeyDictionary()


class Dashboard(w.VBox):
    """Controls, LossPlot beside PoolView, then the scrubber for the system's kind of pictures.

    A system with 3-D states gets a VolumeScrubber, one with 2-D states a FrameScrubber (as its
    snapshots say). At most 1000 px wide; every part follows the trainer's snapshots on its
    own, so the dashboard keeps working when the run finishes, fails or is restored. A trainer
    has one dashboard: building another (re-running its cell) closes the previous one.
    """

    def __init__(self, trainer: TrainerLike, **kwargs: Any) -> None:
        previous = _OPEN.get(trainer)
        if previous is not None:
            previous.close()
        self.trainer = trainer
        first = trainer.latest()
        self.header = StatusBar(nw="dashboard", host_class="nw-dashboard", mode="title",
                                title=first.title)
        self.controls = Controls(trainer)
        self.loss_plot = LossPlot(trainer, layout=w.Layout(flex="1 1 460px", min_width="0"))
        self.pool_view = PoolView(trainer, layout=w.Layout(flex="0 1 400px", min_width="0"))
        scrubbers = {"volume": VolumeScrubber, "frame": FrameScrubber}
        if first.picture_kind not in scrubbers:
            raise ValueError(f"no scrubber for {first.picture_kind!r} pictures; expected one of "
                             f"{', '.join(scrubbers)}")
        self.scrubber: VolumeScrubber | FrameScrubber = scrubbers[first.picture_kind](trainer)
        middle = w.HBox([self.loss_plot, self.pool_view],
                        layout=w.Layout(width="100%", align_items="flex-start", grid_gap="12px"))
        layout = kwargs.pop("layout", None) or w.Layout(width="100%", max_width="1000px")
        super().__init__([self.header, self.controls, middle, self.scrubber], layout=layout,
                         **kwargs)
        self.add_class("nw-dashboard")
        self._feed = Feed(trainer, self._apply)
        _OPEN[trainer] = self

    def _apply(self, snapshot: Snapshot) -> None:
        self.header.show(snapshot)

    def close(self) -> None:
        """Unsubscribe and close every part."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and _OPEN.get(trainer) is self:
            del _OPEN[trainer]
        close_feed(self)
        names = ("header", "controls", "loss_plot", "pool_view", "scrubber")
        for part in [getattr(self, name, None) for name in names] + list(self.children):
            if part is not None:
                part.close()
        super().close()
