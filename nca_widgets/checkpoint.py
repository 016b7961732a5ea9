"""Atomic, rotating checkpoints of a run: arrays in one `.npz`, everything else in JSON.

A checkpoint is a directory `ckpt-<step>` under the run directory, which holds one run: every
checkpoint records its run's `run_id`, and a save of another run into it is refused, so rotation
never deletes one run's checkpoints to make room for another's. It is written under a hidden
temporary name, flushed to disk, and renamed into place, so a reader sees a complete checkpoint
or none: a process killed mid-write leaves only a `.tmp-*` directory, which is ignored and
cleaned up by the next save. We use plain numpy rather than orbax: the state is one host copy of
a few arrays, the format is readable with numpy alone, and nothing runs in the background.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{8,})$")
_OLD = ".tmp-old-"  # prefix of a checkpoint being replaced by a new save of the same step
RUN_FILE = "run.json"  # the id of the run a directory belongs to
METRICS_FILE = "metrics.jsonl"  # one JSON row per train step, written by process 0


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message says what to do."""


def save(run_dir: str | os.PathLike, step: int, arrays: dict[str, np.ndarray],
         meta: dict[str, Any], keep: int = 3) -> Path:
    """Write `ckpt-<step>` atomically under `run_dir`, keep the newest `keep`, return its path.

    `meta["run_id"]`, if given, names the run; a `run_dir` holding another run is refused.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a whole number of checkpoints, at least 1; got {keep!r}")
    run_dir = Path(run_dir)
    if meta.get("run_id"):
        claim_run_dir(run_dir, meta["run_id"])
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


def run_id_of(run_dir: str | os.PathLike) -> str | None:
    """The run `run_dir` belongs to ('' for checkpoints too old to say), or None if to none."""
    try:
        return json.loads((Path(run_dir) / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        pass
    for ckpt in reversed(checkpoints(run_dir)):
        try:
            return json.loads((ckpt / "meta.json").read_text()).get("run_id", "")
        except (OSError, ValueError):
            continue
    return None


def check_run_dir(run_dir: str | os.PathLike, run_id: str | None) -> None:
    """Raise CheckpointError if `run_dir` holds another run than `run_id` (None: any run).

    The message says how to continue that run or where to put this one.
    """
    run_dir = Path(run_dir)
    there = run_id_of(run_dir)
    if there is None and not (run_dir / METRICS_FILE).exists():
        return
    if there is not None and there == run_id:
        return
    found = checkpoints(run_dir)
    held = f"checkpoints up to {found[-1].name}" if found else "a metrics.jsonl"
    raise CheckpointError(
        f"{run_dir} holds another run ({held}); continue it with "
        f"LiveTrainer.restore({str(run_dir)!r}), or give this run a directory of its own "
        f"(nca_widgets.new_run_dir({str(run_dir.parent)!r}) makes a fresh one)"
    )


def claim_run_dir(run_dir: str | os.PathLike, run_id: str | None) -> None:
    """Make `run_dir` the directory of run `run_id` (see `check_run_dir`), creating it."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir, run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    if run_id and not (run_dir / RUN_FILE).exists():
        tmp = run_dir / f".tmp-run-{os.getpid()}"
        tmp.write_text(json.dumps({"run_id": run_id}))
        os.replace(tmp, run_dir / RUN_FILE)


def set_aside(run_dir: str | os.PathLike, step: int) -> tuple[Path, int, int] | None:
    """Move what `run_dir` holds past `step` into `run_dir/abandoned-<time>/`; nothing is deleted.

    A run continued from an older checkpoint of its own directory starts a new branch there.
    The old branch's later checkpoints would pass for the newest (a restore would pick them,
    rotation would delete the new ones first) and its metrics rows would repeat steps. Returns
    (the folder, checkpoints moved, metrics rows moved), or None when nothing was past `step`.
    """
    run_dir = Path(run_dir)
    later = [p for p in run_dir.iterdir()  # complete or not, under either name (see save)
             if (name := _NAME.match(p.name.removeprefix(_OLD))) and int(name.group(1)) > step]
    metrics = run_dir / METRICS_FILE
    kept, moved = [], []
    if metrics.exists():
        for line in metrics.read_text().splitlines(keepends=True):
            (kept if _row_step(line) <= step else moved).append(line)
    if not later and not moved:
        return None
    aside = new_run_dir(run_dir, "abandoned")
    aside.mkdir()
    for ckpt in later:
        os.rename(ckpt, aside / ckpt.name)
    if moved:
        _write_synced(aside / METRICS_FILE, "".join(moved))
        tmp = run_dir / f".tmp-metrics-{os.getpid()}"
        _write_synced(tmp, "".join(kept))
        os.replace(tmp, metrics)
    _fsync_dir(aside)
    _fsync_dir(run_dir)
    return aside, len(later), len(moved)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _row_step(line: str) -> float:
    """The step of a metrics row; a damaged row (a cut-off write) counts as past every step."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def new_run_dir(parent: str | os.PathLike = "runs", name: str = "run") -> Path:
    """A directory for a new run under `parent`: `<name>-<date>-<time>`, made unique."""
    stamp = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = Path(parent)
    path, n = parent / stamp, 1
    while path.exists():
        n += 1
        path = parent / f"{stamp}-{n}"
    return path


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
