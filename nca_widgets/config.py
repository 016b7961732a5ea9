"""Configurations of the two systems, their presets, and the parsing of user overrides.

A config is a frozen dataclass with one comment per field; presets are `dataclasses.replace`
overrides of the seed values, which are exactly those of the reference notebooks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import warnings
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A config value, preset or override key that cannot be used; the message says why."""


@dataclass(frozen=True)
class SANCAConfig:
    """Self-autoencoding MNIST 3-D NCA (reference notebook 000)."""

    spatial_dims: tuple[int, ...] = (28, 28, 42)  # (H, W, D) cells; the digit enters at depth 0
    channel_size: int = 16  # channels per cell; the last one carries the digit
    num_kernels: int = 4  # perceive kernels per channel: identity, then Sobel d/dH, d/dW, d/dD
    hidden_size: int = 256  # hidden units of the per-cell update MLP
    cell_dropout_rate: float = 0.5  # probability that a cell skips its update in a step
    alive_threshold: float = 0.1  # a cell lives if its 3x3x3 neighbourhood's last channel is above
    num_steps: int = 96  # NCA steps per train step; the loss is scored at a step in [n/2, n)
    pool_size: int = 1_024  # states kept in the sample pool
    batch_size: int = 8  # pool samples per train step
    learning_rate: float = 1e-3  # Adam learning rate at step 0
    lr_end_factor: float = 0.5  # the learning rate falls linearly to this fraction of its start
    lr_transition_steps: int = 2_000  # ... over this many train steps
    num_train_steps: int = 16_384  # train steps of a full run
    check_reach: bool = True  # refuse rollouts too short to carry the digit to the far side

    @property
    def path_length(self) -> int:
        """The fewest NCA steps from depth 0 through the open cell to the far side.

        A 3x3x3 neighbourhood moves information one cell per step in every axis at once, so the
        path is the farthest input cell's distance to the open cell plus the open cell's distance
        to the farthest far-side cell, in max-norm: 28 at 28x28x8, 41 at the seed's 28x28x42.
        """
        h, w, d = self.spatial_dims
        in_plane = max(h // 2, h - 1 - h // 2, w // 2, w - 1 - w // 2)  # corner to centre
        return max(in_plane, d // 2) + max(in_plane, d - 1 - d // 2)

    @property
    def perception_size(self) -> int:
        """Features per cell after perception: `channel_size * num_kernels`."""
        return self.channel_size * self.num_kernels

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of its allowed range."""
        _check_dims(self.spatial_dims, 3, "(H, W, D)", min_last=3)
        _check_int(self, "channel_size", 1)
        _check_int(self, "num_kernels", 1, 4)
        _check_int(self, "hidden_size", 1)
        _check_common(self)
        _check_int(self, "num_steps", 2)
        _check_int(self, "pool_size", 1)
        if self.check_reach:
            self._check_reach()
        if self.batch_size > self.pool_size:
            raise ConfigError(
                f"batch_size must be at most pool_size ({self.pool_size}); got {self.batch_size}"
            )


    def _check_reach(self) -> None:
        """Refuse a rollout that cannot reach the far side; warn if early scored steps cannot."""
        path, dims = self.path_length, ",".join(map(str, self.spatial_dims))
        if self.num_steps <= path:
            raise ConfigError(
                f"num_steps={self.num_steps} cannot carry a digit to the far side: at "
                f"spatial_dims={dims} the path through the open cell is {path} steps, so "
                f"num_steps must be at least {path + 1} (at least {2 * path} to score only "
                "reachable steps), or use smaller spatial_dims"
            )
        if self.num_steps // 2 < path:
            from nca_widgets import NCAWidgetsWarning

            warnings.warn(
                f"num_steps={self.num_steps} scores steps from {self.num_steps // 2} on, but at "
                f"spatial_dims={dims} the digit needs {path} steps to reach the far side, so "
                f"early scored steps cannot rebuild it; num_steps >= {2 * path} scores only "
                "reachable steps",
                NCAWidgetsWarning, stacklevel=4,
            )


@dataclass(frozen=True)
class RRCNNConfig:
    """Recurrent residual CNN denoiser (reference notebook 001)."""

    spatial_dims: tuple[int, ...] = (28, 28)  # (H, W) cells
    channel_size: int = 64  # channels per cell; the last one carries the (noisy) digit
    perception_size: int = 64  # outputs of the dense 3x3 perceive convolution (not trained)
    update_hidden_layer_sizes: tuple[int, ...] = (128, 128)  # hidden layers of the update MLP
    cell_dropout_rate: float = 0.5  # probability that a cell skips its update in a step
    num_steps: int = 64  # recurrent steps; the loss is scored after the last one
    batch_size: int = 8  # fresh noisy digits per train step
    learning_rate: float = 1e-3  # Adam learning rate at step 0
    lr_end_factor: float = 0.1  # the learning rate falls linearly to this fraction of its start
    lr_transition_steps: int = 2_000  # ... over this many train steps
    num_train_steps: int = 8_192  # train steps of a full run

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of its allowed range."""
        _check_dims(self.spatial_dims, 2, "(H, W)")
        _check_int(self, "channel_size", 1)
        _check_int(self, "perception_size", 1)
        hidden = self.update_hidden_layer_sizes
        if not all(isinstance(h, int) and h >= 1 for h in hidden):
            raise ConfigError(
                f"update_hidden_layer_sizes must be positive integers (e.g. 128,128); got {hidden}"
            )
        _check_common(self)
        _check_int(self, "num_steps", 1)


Config = SANCAConfig | RRCNNConfig

SYSTEMS: dict[str, type[SANCAConfig] | type[RRCNNConfig]] = {
    "sa-nca": SANCAConfig,
    "rrcnn": RRCNNConfig,
}

# Presets as overrides of the seed (notebook) values. `cpu` is sized so that a 2-core laptop shows
# the phenomenon within minutes (sa-nca: digits rebuilt at the far side); `tiny` runs a test in
# seconds.
_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "sa-nca": {
        "seed": {},
        # Chosen with benchmarks/autoencode_sweep.py: 12x12 digits in 4 depths (a path of 12
        # steps through the open cell), 40 steps, batch 2 and a faster learning rate put
        # recognisable digits on the far side within 10 minutes on a 2-core CPU.
        "cpu": dict(
            spatial_dims=(12, 12, 4), num_steps=40, pool_size=256, batch_size=2,
            learning_rate=2e-3, lr_end_factor=0.1, lr_transition_steps=4_000,
            num_train_steps=6_000,
        ),
        "tiny": dict(
            spatial_dims=(12, 12, 6), channel_size=8, hidden_size=32, num_steps=8, pool_size=16,
            batch_size=2, num_train_steps=50, check_reach=False,  # a test of the code, not of reach
        ),
    },
    "rrcnn": {
        "seed": {},
        "cpu": dict(num_steps=16, batch_size=8, lr_transition_steps=1_000, num_train_steps=2_000),
        "tiny": dict(
            spatial_dims=(12, 12), channel_size=8, perception_size=8,
            update_hidden_layer_sizes=(16,), num_steps=4, batch_size=2, num_train_steps=50,
        ),
    },
}
PRESETS = ("seed", "cpu", "tiny", "auto")


def resolve_preset(preset: str) -> str:
    """Return the concrete preset: `auto` is `seed` on a GPU/TPU backend and `cpu` otherwise."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if preset != "auto":
        return preset
    import jax

    return "cpu" if jax.default_backend() == "cpu" else "seed"


def make_config(system: str, preset: str = "seed", **overrides: Any) -> Config:
    """Build and validate the config of `system` at `preset`, with field overrides applied."""
    if system not in SYSTEMS:
        raise ConfigError(f"unknown system {system!r}; choose one of {', '.join(SYSTEMS)}")
    cls = SYSTEMS[system]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]!r} for {system}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    hints = get_type_hints(cls)
    values = {**_PRESETS[system][resolve_preset(preset)]}
    for name, value in overrides.items():
        values[name] = _coerce(name, value, hints[name])
    config = dataclasses.replace(cls(), **values)
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


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as JSON-ready values (tuples become lists)."""
    items = dataclasses.asdict(config).items()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in items}


def config_diff(a: Config, b: Config) -> list[str]:
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


def _check_int(config: Config, name: str, low: int, high: int | None = None) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} must be an integer {allowed}; got {value!r}")


def _check_dims(dims: tuple[int, ...], ndim: int, names: str, min_last: int = 1) -> None:
    ok = len(dims) == ndim and all(isinstance(d, int) and d >= 1 for d in dims)
    if not ok or dims[-1] < min_last:
        extra = f", the last at least {min_last}" if min_last > 1 else ""
        raise ConfigError(
            f"spatial_dims must be {ndim} positive integers {names}{extra}; got {dims}"
        )


def _check_common(config: Config) -> None:
    """Checks shared by both systems: dropout, learning rate and its schedule, batch, steps."""
    if not 0.0 <= config.cell_dropout_rate < 1.0:
        raise ConfigError(
            f"cell_dropout_rate must be in [0, 1); got {config.cell_dropout_rate!r}"
        )
    if not config.learning_rate > 0:
        raise ConfigError(f"learning_rate must be > 0; got {config.learning_rate!r}")
    if not config.lr_end_factor > 0:
        raise ConfigError(f"lr_end_factor must be > 0; got {config.lr_end_factor!r}")
    _check_int(config, "lr_transition_steps", 1)
    _check_int(config, "batch_size", 1)
    _check_int(config, "num_train_steps", 1)
