"""Systems by name: the built-in plug-ins, ones registered at run time, and `module:factory`.

A factory is a callable that returns a `System`, taking config fields as keyword overrides and,
if it has presets, a `preset` keyword ('seed', 'cpu', 'tiny', 'auto'). The CLI and
`LiveTrainer("name", ...)` build systems through `make_system`, and checkpoints record the name
they were built from, so `restore` can build the same system again.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from nca_widgets.config import ConfigError
from nca_widgets.system import System, check_system

# Built-in plug-ins, imported on first use.
BUILTIN: dict[str, str] = {
    "sa-nca": "nca_widgets.systems.sa_nca:SelfAutoencodingMNIST.from_preset",
    "rrcnn": "nca_widgets.systems.rrcnn:RecurrentResidualCNN.from_preset",
    "growing": "nca_widgets.systems.growing:GrowingGlyph.from_preset",
}
_REGISTERED: dict[str, Callable[..., System]] = {}


def register(name: str, factory: Callable[..., System]) -> None:
    """Make `factory` buildable as `name` (e.g. `LiveTrainer(name)`) in this process."""
    if not callable(factory):
        raise TypeError(f"register({name!r}, ...) needs a callable factory")
    _REGISTERED[name] = factory


def names() -> list[str]:
    """The names `make_system` knows without an import path."""
    return [*BUILTIN, *(n for n in _REGISTERED if n not in BUILTIN)]


def make_system(spec: str, preset: str = "auto", **overrides: Any) -> System:
    """The system named `spec` (a registered name or `package.module:factory`) at `preset`."""
    factory = _factory(spec)
    takes_preset = _accepts(factory, "preset")
    if takes_preset:
        system = factory(preset=preset, **overrides)
    elif preset in ("auto", None):
        system = factory(**overrides)
    else:
        raise ConfigError(f"{spec} has no presets; leave out preset={preset!r}")
    return check_system(system)


def make_config(spec: str, preset: str = "seed", **overrides: Any) -> Any:
    """The validated config of system `spec` at `preset` with field overrides."""
    return make_system(spec, preset, **overrides).config


def _factory(spec: str) -> Callable[..., System]:
    if spec in _REGISTERED:
        return _REGISTERED[spec]
    path = BUILTIN.get(spec, spec)
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"unknown system {spec!r}; choose one of {', '.join(names())}, or "
                          "name a factory as package.module:function")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import {module_name!r} for system {spec!r}: {error}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{module_name} has no {attr!r} (system {spec!r})")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{spec} is not callable; name a function that returns a System")
    return target


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)
