"""The loss history of a run: growable per-step arrays, read as immutable views."""

from __future__ import annotations

import numpy as np

from nca_widgets.snapshot import History, frozen


class HistoryBuffer:
    """Growable per-step arrays; `view()` gives read-only views that later appends never touch."""

    _FIELDS = (("step", np.int64), ("loss", np.float32), ("lr", np.float32), ("wall_s", np.float64))

    def __init__(self, capacity: int = 1024):
        self._arrays = {name: np.empty(capacity, dtype) for name, dtype in self._FIELDS}
        self._n = 0

    def extend(self, **columns: np.ndarray) -> None:
        """Append equal-length columns `step`, `loss`, `lr`, `wall_s`."""
        k = len(columns["step"])
        if self._n + k > len(self._arrays["step"]):
            capacity = max(2 * len(self._arrays["step"]), self._n + k)
            for name, old in self._arrays.items():
                new = np.empty(capacity, old.dtype)
                new[: self._n] = old[: self._n]
                self._arrays[name] = new
        for name, array in self._arrays.items():
            array[self._n : self._n + k] = columns[name]
        self._n += k

    def view(self) -> History:
        """The history so far (safe to call while another thread extends it)."""
        n = self._n  # extend() fills the rows before it counts them
        return History(**{name: frozen(a[:n]) for name, a in self._arrays.items()})

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Copies, for a checkpoint."""
        return {f"history/{name}": a[: self._n].copy() for name, a in self._arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> HistoryBuffer:
        """The inverse of `to_arrays`."""
        buffer = cls(max(1024, len(arrays["history/step"])))
        buffer.extend(**{name: arrays[f"history/{name}"] for name, _ in cls._FIELDS})
        return buffer
