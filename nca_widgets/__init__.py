"""nca_widgets: train and explore neural cellular automata live in JupyterLab."""


class NCAWidgetsWarning(UserWarning):
    """A warning raised by nca_widgets itself (tests turn these into errors)."""


__all__ = ["NCAWidgetsWarning"]
