"""The two reference systems by config, for the benchmarks that compare them with CAX."""

from __future__ import annotations

from nca_widgets.system import System
from nca_widgets.systems.rrcnn import RecurrentResidualCNN, RRCNNConfig
from nca_widgets.systems.sa_nca import SANCAConfig, SelfAutoencodingMNIST

Config = SANCAConfig | RRCNNConfig


def system_for(config: Config) -> System:
    """The plug-in system of a reference config."""
    if isinstance(config, SANCAConfig):
        return SelfAutoencodingMNIST(config)
    return RecurrentResidualCNN(config)
