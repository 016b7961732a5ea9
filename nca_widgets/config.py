"""Configs of systems: presets as overrides of a frozen dataclass, and parsing of user overrides.

A system's config is a frozen dataclass with one comment per field and a `validate()` that raises
ConfigError naming the first bad field; its presets are `dataclasses.replace` overrides of the
defaults (for the built-in systems, exactly the reference notebooks' values). Nothing here knows
any particular system.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A config value, preset or override key that cannot be used; the message says why."""


PRESETS = ("seed", "cpu", "tiny", "auto")


def resolve_preset(preset: str) -> str:
    """Return the concrete preset: `auto` is `seed` on a GPU/TPU backend and `cpu` otherwise."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if preset != "auto":
        return preset
    import jax

    return "cpu" if jax.default_backend() == "cpu" else "seed"


def build_config(cls: type, presets: dict[str, dict[str, Any]], preset: str = "seed",
                 **overrides: Any) -> Any:
    """`cls()` with the preset's and then the caller's field overrides, validated.

    `presets` maps concrete preset names to field overrides; `overrides` may be strings (from
    `--set`) and are coerced to the field's type.
    """
    concrete = resolve_preset(preset)
    if concrete not in presets:
        raise ConfigError(f"no preset {concrete!r} for {cls.__name__}; it has "
                          f"{', '.join(presets)}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]!r} for {cls.__name__}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    hints = get_type_hints(cls)
    values = {**presets[concrete]}
    for name, value in overrides.items():
        values[name] = _coerce(name, value, hints[name])
    config = dataclasses.replace(cls(), **values)
    if hasattr(config, "validate"):
        config.validate()
    return config


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """Split `KEY=VALUE` strings (from `--set`) into a dict; values are coerced by make_config."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes KEY=VALUE (e.g. num_steps=24); got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def config_to_dict(config: Any) -> dict[str, Any]:
    """The config as JSON-ready values (tuples become lists)."""
    items = dataclasses.asdict(config).items()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in items}


def config_diff(a: Any, b: Any) -> list[str]:
    """Names of the fields whose values differ between two configs (all of them if types differ)."""
    if type(a) is not type(b):
        return [f.name for f in dataclasses.fields(a)]
    return [f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Turn a string or Python value into the field's type, or raise ConfigError naming it."""
    if get_origin(hint) in (Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    try:
        if get_origin(hint) is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(_strict_int(v) for v in items if str(v).strip() != "")
        if hint is bool:
            return _strict_bool(value)
        if hint is int:
            return _strict_int(value)
        if hint is float:
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
            return out
    except (TypeError, ValueError):
        kinds = {bool: "true or false", int: "int", float: "float"}
        kind = kinds.get(hint, "comma-separated integers")
        raise ConfigError(f"{name} must be {kind}; got {value!r}") from None
    return value


def _strict_bool(value: Any) -> bool:
    """Bool from a bool or 'true'/'false' (any case); refuses everything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(value)


def _strict_int(value: Any) -> int:
    """Int from an int or an integral string/float; refuses 2.5 and True."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, str):
        value = value.strip()
        return int(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(value)
    return int(value)


def check_int(config: Any, name: str, low: int, high: int | None = None) -> None:
    """Raise ConfigError unless `config.<name>` is an int in [low, high]."""
    value = getattr(config, name)
    if not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be an integer {allowed}; got {value!r}")


def check_dims(dims: tuple[int, ...], ndim: int, names: str, min_last: int = 1) -> None:
    """Raise ConfigError unless `dims` are `ndim` positive ints, the last at least `min_last`."""
    ok = len(dims) == ndim and all(isinstance(d, int) and d >= 1 for d in dims)
    if not ok or dims[-1] < min_last:
        extra = f", the last at least {min_last}" if min_last > 1 else ""
        raise ConfigError(
            f"spatial_dims must be {ndim} positive integers {names}{extra}; got {dims}"
        )


def check_training(config: Any) -> None:
    """Checks of the fields most systems share: dropout, learning rate, schedule, batch, steps."""
    if not 0.0 <= getattr(config, "cell_dropout_rate", 0.0) < 1.0:
        raise ConfigError(
            f"cell_dropout_rate must be in [0, 1); got {config.cell_dropout_rate!r}"
        )
    if not config.learning_rate > 0:
        raise ConfigError(f"learning_rate must be > 0; got {config.learning_rate!r}")
    if not config.lr_end_factor > 0:
        raise ConfigError(f"lr_end_factor must be > 0; got {config.lr_end_factor!r}")
    check_int(config, "lr_transition_steps", 1)
    check_int(config, "batch_size", 1)
    check_int(config, "num_train_steps", 1)
