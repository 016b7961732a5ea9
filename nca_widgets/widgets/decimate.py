"""Min/max decimation of a curve per pixel column, so a long run draws as fast as a short one."""

from __future__ import annotations

import numpy as np


def minmax_indices(steps: np.ndarray, values: np.ndarray, n_columns: int) -> np.ndarray:
    """Indices (sorted, unique) of the points to keep when `values` are drawn `n_columns` wide.

    Args:
        steps: (n,) x positions (train steps), any order.
        values: (n,) y values; NaN marks a missing point.
        n_columns: how many pixel columns the x range [min(steps), max(steps)] spans.

    Returns:
        (k,) int64 indices: the first and last points (the curve's ends), and per column the
        first minimum and the first maximum of the finite values, plus the first NaN of a column
        that has one (so gaps survive decimation). The ends take the place of one column, so
        with finite data k <= 2 * n_columns.
    """
    steps = np.asarray(steps)
    values = np.asarray(values, np.float64)
    if steps.shape != values.shape or steps.ndim != 1:
        raise ValueError(f"steps and values must be equal 1-D shapes; got {steps.shape}, "
                         f"{values.shape}")
    if n_columns < 1:
        raise ValueError(f"n_columns must be >= 1; got {n_columns}")
    n = len(steps)
    if n <= 2 * n_columns:
        return np.arange(n, dtype=np.int64)
    x = steps.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo
    bins = max(1, n_columns - 1)  # one column's worth of points is left for the two ends
    if span > 0:
        col = np.minimum((x - lo) * (bins / span), bins - 1).astype(np.int64)
    else:
        col = np.zeros(n, np.int64)
    nan = np.isnan(values)
    ends = [int(np.argmin(x)), int(np.argmax(x))] if n_columns > 1 else []
    keep = [
        np.array(ends, np.int64),
        _first_per_group(col, np.where(nan, np.inf, values)),  # minimum
        _first_per_group(col, np.where(nan, np.inf, -values)),  # maximum
    ]
    if nan.any():
        nan_idx = np.flatnonzero(nan)
        _, first = np.unique(col[nan_idx], return_index=True)
        keep.append(nan_idx[first])
    return np.unique(np.concatenate(keep))


def _first_per_group(group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Index of the smallest `key` in each `group` (ties: the earliest index)."""
    if len(group) and np.all(group[1:] >= group[:-1]):  # sorted steps: O(n) by segments
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        lengths = np.diff(np.r_[starts, len(group)])
        smallest = np.repeat(np.minimum.reduceat(key, starts), lengths)
        hits = np.flatnonzero(key == smallest)
        segment = np.repeat(np.arange(len(starts)), lengths)[hits]
        return hits[np.r_[True, segment[1:] != segment[:-1]]]
    order = np.lexsort((key, group))  # stable: ties keep the earliest index
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    return order[starts]


def decimate_minmax(
    steps: np.ndarray, values: np.ndarray, n_columns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep per pixel column the min and max of a curve (and NaN markers); see minmax_indices.

    Args:
        steps: (n,) x positions.
        values: (n,) y values, NaN allowed.
        n_columns: pixel columns of the chart.

    Returns:
        (steps[idx], values[idx]) with idx sorted: at most 2 * n_columns points for finite data,
        the global min and max always among them.
    """
    idx = minmax_indices(steps, values, n_columns)
    return np.asarray(steps)[idx], np.asarray(values)[idx]
