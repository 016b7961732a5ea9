"""nca_widgets: train and explore neural cellular automata live in JupyterLab.

Example:
    >>> import nca_widgets as nw
    >>> trainer = nw.LiveTrainer("sa-nca", preset="auto")
    >>> nw.Dashboard(trainer)  # its Start button, or trainer.start(), trains in the background
"""


class NCAWidgetsWarning(UserWarning):
    """A warning raised by nca_widgets itself (tests turn these into errors)."""


# Imported after the warning class, which the modules below import from here.
from nca_widgets.attach import AttachedRun, attach  # noqa: E402
from nca_widgets.checkpoint import CheckpointError, new_run_dir  # noqa: E402
from nca_widgets.config import ConfigError  # noqa: E402
from nca_widgets.data import DataError, Digits, load_digits  # noqa: E402
from nca_widgets.export import loss_figure, save_video  # noqa: E402
from nca_widgets.registry import make_config, make_system, register  # noqa: E402
from nca_widgets.snapshot import Rollout, Snapshot  # noqa: E402
from nca_widgets.system import Examples, PoolPictures, System, final_state, rollout  # noqa: E402
from nca_widgets.trainer import LiveTrainer, TrainingError, close_all  # noqa: E402
from nca_widgets.widgets import (  # noqa: E402
    Controls,
    Dashboard,
    FrameScrubber,
    LossPlot,
    PoolView,
    VolumeScrubber,
)

__all__ = [
    "AttachedRun",
    "CheckpointError",
    "ConfigError",
    "Controls",
    "Dashboard",
    "DataError",
    "Digits",
    "Examples",
    "FrameScrubber",
    "LiveTrainer",
    "LossPlot",
    "NCAWidgetsWarning",
    "PoolPictures",
    "PoolView",
    "Rollout",
    "Snapshot",
    "System",
    "TrainingError",
    "VolumeScrubber",
    "attach",
    "close_all",
    "final_state",
    "load_digits",
    "loss_figure",
    "make_config",
    "make_system",
    "new_run_dir",
    "register",
    "rollout",
    "save_video",
]
