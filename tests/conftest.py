"""Shared fixtures: real bundled MNIST digits, cached once per test session."""

from __future__ import annotations

import pytest

from nca_widgets.data import Digits, load_digits
from nca_widgets.registry import make_config


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("digit-cache")


@pytest.fixture(scope="session")
def tiny_digits(data_cache) -> dict[str, Digits]:
    """Bundled digits at the `tiny` presets' sizes, by system."""
    return {
        system: load_digits(
            "bundled", size=make_config(system, "tiny").spatial_dims[:2], cache_dir=data_cache
        )
        for system in ("sa-nca", "rrcnn")
    }


@pytest.fixture(autouse=True, scope="session")
def _cache_env(data_cache):
    """Keep the package's data cache out of $HOME for everything the tests start."""
    import os

    old = os.environ.get("NCA_WIDGETS_CACHE")
    os.environ["NCA_WIDGETS_CACHE"] = str(data_cache)
    yield
    if old is None:
        os.environ.pop("NCA_WIDGETS_CACHE", None)
    else:
        os.environ["NCA_WIDGETS_CACHE"] = old


@pytest.fixture(autouse=True)
def _close_trainers():
    """No test's trainer keeps training (and sharing the CPU) into the next test."""
    yield
    from nca_widgets.trainer import close_all

    close_all()
