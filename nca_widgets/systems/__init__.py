"""The two systems of the reference notebooks, each as a model and a training task."""

from __future__ import annotations

from nca_widgets.config import Config, RRCNNConfig, SANCAConfig
from nca_widgets.systems.rrcnn import RRCNNTask
from nca_widgets.systems.sa_nca import SANCATask

Task = SANCATask | RRCNNTask


def make_task(config: Config) -> Task:
    """The training task for a config."""
    if isinstance(config, SANCAConfig):
        return SANCATask(config)
    if isinstance(config, RRCNNConfig):
        return RRCNNTask(config)
    raise TypeError(f"no system for config type {type(config).__name__}")
