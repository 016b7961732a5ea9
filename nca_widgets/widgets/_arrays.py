"""Array helpers for the widgets: float-to-uint8 scaling, colour maps, and binary packing."""

from __future__ import annotations

import numpy as np

# RdBu-like anchors from the negative end to the centre (reversed for the positive side).
_NEG = np.array([[33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240]], np.float64)
_POS = np.array([[178, 24, 43], [214, 96, 77], [244, 165, 130], [253, 219, 199]], np.float64)
_MID = np.array([247, 247, 247], np.float64)


def is_numeric(array: np.ndarray) -> bool:
    """True for arrays of numbers or booleans (what the scrubbers can show)."""
    return array.dtype != object and (np.issubdtype(array.dtype, np.number) or array.dtype == bool)


def as_int(value: object, fallback: int) -> int:
    """An int from a front-end value (int, float, numeric string); `fallback` if it is none."""
    if isinstance(value, bool):
        return fallback
    try:
        out = float(value)
    except (TypeError, ValueError):
        return fallback
    return int(out) if np.isfinite(out) else fallback


class BoundedInts:
    """Mixin for widgets with int traits held in [low, high] (`_int_bounds()` names them).

    State from the front end is made ints and clamped before traitlets sees it: a value that
    is no number keeps the trait's current value. A subclass's validators call `_clamped` so
    values set from Python are clamped the same way. `high` below `low` (an empty axis) counts
    as `low`.
    """

    def _int_bounds(self) -> dict[str, tuple[int, int]]:
        raise NotImplementedError

    def set_state(self, sync_data: dict) -> None:
        """Apply state from the front end, its bounded ints clamped into range first."""
        out = dict(sync_data)
        for key, (low, high) in self._int_bounds().items():
            if key in out:
                out[key] = _clip(as_int(out[key], getattr(self, key)), low, high)
        super().set_state(out)

    def _clamped(self, proposal: dict) -> int:
        low, high = self._int_bounds()[proposal["trait"].name]
        return _clip(proposal["value"], low, high)


def _clip(value: int, low: int, high: int) -> int:
    return int(np.clip(value, low, max(low, high)))


def auto_range(values: np.ndarray) -> tuple[float, float]:
    """A value range for displaying `values` (any shape, float): what uint8 0 and 255 stand for.

    Data inside [0, 1] keep (0, 1); data of both signs get a range symmetric about 0 so a
    diverging map shows them evenly; otherwise the finite min and max (widened if equal).
    """
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        return (0.0, 1.0)
    if lo < 0.0 < hi:
        m = max(-lo, hi)
        return (-m, m)
    if lo == hi:
        return (lo - 0.5, hi + 0.5)
    return (lo, hi)


def zero_u8(value_range: tuple[float, float]) -> int:
    """The uint8 code of the float 0.0 under `value_range`, clipped to [0, 255]."""
    lo, hi = value_range
    if hi == lo:
        return 0
    return int(np.clip(round(255.0 * (0.0 - lo) / (hi - lo)), 0, 255))


def to_uint8(values: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Scale `values` (any shape) so `value_range` maps onto 0..255; NaN becomes the code of 0."""
    lo, hi = float(value_range[0]), float(value_range[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"value_range must be two finite numbers (lo < hi); got {value_range}")
    x = (np.asarray(values, np.float32) - lo) * np.float32(255.0 / (hi - lo))
    x = np.where(np.isnan(x), np.float32(zero_u8((lo, hi))), x)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def as_display_uint8(
    values: np.ndarray, value_range: tuple[float, float] | None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Return (uint8 array, value_range): uint8 input is kept (default range (0, 1))."""
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values, tuple(value_range) if value_range is not None else (0.0, 1.0)
    if values.dtype == bool:
        values = values.astype(np.float32)
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"expected a numeric array; got dtype {values.dtype}")
    if value_range is None:
        value_range = auto_range(values)
    value_range = (float(value_range[0]), float(value_range[1]))
    return to_uint8(values, value_range), value_range


def grey_lut() -> np.ndarray:
    """(256, 3) uint8: code v shows as grey level v."""
    ramp = np.arange(256, dtype=np.uint8)
    return np.stack([ramp, ramp, ramp], axis=1)


def diverging_lut(center: int) -> np.ndarray:
    """(256, 3) uint8: blue below `center` (the code of 0.0), near-white at it, red above."""
    codes = np.arange(256, dtype=np.float64)
    out = np.empty((256, 3), np.float64)
    below = codes <= center
    t_neg = (center - codes[below]) / max(center, 1)  # 0 at centre .. 1 at code 0
    t_pos = (codes[~below] - center) / max(255 - center, 1)  # 0 at centre .. 1 at 255
    out[below] = _ramp(t_neg, _NEG)
    out[~below] = _ramp(t_pos, _POS)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _ramp(t: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Interpolate from the centre colour (t=0) through anchors (reversed) to anchors[0] (t=1)."""
    stops = np.concatenate([_MID[None], anchors[::-1]], axis=0)  # centre .. far end
    xs = np.linspace(0.0, 1.0, len(stops))
    return np.stack([np.interp(t, xs, stops[:, k]) for k in range(3)], axis=-1)


def colour_lut(colormap: str, value_range: tuple[float, float]) -> np.ndarray:
    """(256, 3) uint8 for `colormap` 'grey' or 'diverging' (centred on the code of 0.0)."""
    if colormap == "grey":
        return grey_lut()
    if colormap == "diverging":
        return diverging_lut(zero_u8(value_range))
    raise ValueError(f"colormap must be 'grey' or 'diverging'; got {colormap!r}")


def tile_grid(count: int, tile_w: int, max_width: int = 440) -> tuple[int, int]:
    """(rows, cols) to lay `count` tiles of width `tile_w` (+1 px gap) within `max_width` px."""
    cols = max(1, min(count, (max_width + 1) // (tile_w + 1)))
    rows = -(-count // cols)
    return rows, cols


def montage(tiles: np.ndarray, rows: int, cols: int, fill: int = 0) -> np.ndarray:
    """(N, H, W[, 3]) tiles into one (rows*(H+1)-1, cols*(W+1)-1[, 3]) image, 1 px gaps."""
    n, h, w = tiles.shape[:3]
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, *tiles.shape[3:]), fill, tiles.dtype)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tiles[i]
    return out


def f32_bytes(values: np.ndarray) -> bytes:
    """Little-endian float32 bytes of `values` (any shape), for a binary trait or buffer."""
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def i32_bytes(values: np.ndarray) -> bytes:
    """Little-endian int32 bytes of `values` (any shape)."""
    return np.ascontiguousarray(values, dtype="<i4").tobytes()


def u8_bytes(values: np.ndarray) -> bytes:
    """Bytes of a uint8 array (any shape), C order."""
    return np.ascontiguousarray(values, dtype=np.uint8).tobytes()
