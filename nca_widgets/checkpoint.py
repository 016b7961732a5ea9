"""Atomic, rotating checkpoints of a run: arrays in one `.npz`, everything else in JSON.

A checkpoint is a directory `ckpt-<step>` under the run directory. It is written under a hidden
temporary name, flushed to disk, and renamed into place, so a reader sees a complete checkpoint
or none: a process killed mid-write leaves only a `.tmp-*` directory, which is ignored and
cleaned up by the next save. We use plain numpy rather than orbax: the state is one host copy of
a few arrays, the format is readable with numpy alone, and nothing runs in the background.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{8,})$")
_OLD = ".tmp-old-"  # prefix of a checkpoint being replaced by a new save of the same step


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message says what to do."""


def save(run_dir: str | os.PathLike, step: int, arrays: dict[str, np.ndarray],
         meta: dict[str, Any], keep: int = 3) -> Path:
    """Write `ckpt-<step>` atomically under `run_dir`, keep the newest `keep`, return its path."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a whole number of checkpoints, at least 1; got {keep!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = path_for(run_dir, step)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=run_dir))
    try:
        with open(tmp / "arrays.npz", "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        meta = {"format_version": FORMAT_VERSION, "step": step, **meta}
        with open(tmp / "meta.json", "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():  # the same step saved again: swap it out. Should we die between
            # the two renames, checkpoints() finds the old copy under its temporary name.
            old = final.with_name(f"{_OLD}{final.name}")
            shutil.rmtree(old, ignore_errors=True)  # a leftover of an earlier cut-off swap
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _rotate(run_dir, keep)
    return final


def path_for(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the checkpoint of `step` lives in `run_dir`."""
    return Path(run_dir) / f"ckpt-{step:08d}"


def load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint directory, or the newest readable checkpoint in a run directory.

    A damaged checkpoint (a truncated or empty `arrays.npz`, say) named directly raises a
    CheckpointError naming the file; asked for a run directory's newest, a damaged one is
    skipped with a warning that names it and says which checkpoint is read instead.
    """
    path = Path(path)
    if (path / "meta.json").exists() or path.name.startswith("ckpt-"):
        return _read(path)
    found = checkpoints(path)
    if not found:
        raise CheckpointError(
            f"no checkpoint in {path}: expected a ckpt-<step> directory (written by "
            "trainer.save() or `nca-widgets train --run-dir`)"
        )
    damaged = []
    for candidate in reversed(found):
        try:
            loaded = _read(candidate)
        except CheckpointError as error:
            damaged.append(str(error))
            continue
        if damaged:
            from nca_widgets import NCAWidgetsWarning

            warnings.warn(f"{'; '.join(damaged)}; read the newest readable one instead, "
                          f"{candidate}", NCAWidgetsWarning, stacklevel=2)
        return loaded
    raise CheckpointError(f"no readable checkpoint in {path}: {'; '.join(damaged)}")


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """One checkpoint directory, or a CheckpointError that names the damaged file."""
    for name in ("meta.json", "arrays.npz"):
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name} is missing: not a complete checkpoint")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / 'meta.json'} is damaged ({e})") from e
    try:
        with np.load(path / "arrays.npz") as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path / 'arrays.npz'} is damaged ({type(e).__name__}: {e})") \
            from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {meta.get('format_version')}; this nca_widgets reads "
            f"version {FORMAT_VERSION}"
        )
    return arrays, meta


def checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `run_dir`, oldest first.

    A checkpoint whose re-save was cut off between its two renames counts under its old name.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = {}
    for p in run_dir.iterdir():
        name = p.name.removeprefix(_OLD)
        complete = _NAME.match(name) and (p / "meta.json").exists()
        if complete and (p.name == name or name not in found):
            found[name] = p
    return [found[name] for name in sorted(found)]


def _rotate(run_dir: Path, keep: int) -> None:
    for ckpt in checkpoints(run_dir):  # restore a re-save that was cut off
        if ckpt.name.startswith(_OLD):
            os.rename(ckpt, ckpt.with_name(ckpt.name.removeprefix(_OLD)))
    for old in checkpoints(run_dir)[:-keep]:
        doomed = old.with_name(f".tmp-del-{old.name}")
        os.rename(old, doomed)  # gone in one step, then deleted at leisure
        shutil.rmtree(doomed, ignore_errors=True)
    for stale in run_dir.glob(".tmp-*"):  # left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
