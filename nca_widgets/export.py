"""Export what the widgets show: rollout videos (GIF/MP4 via mediapy) and loss figures."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nca_widgets.numbers import axis_formatter
from nca_widgets.snapshot import History

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VIDEO_SUFFIXES = (".gif", ".mp4")


def save_video(
    frames: np.ndarray, path: str | Path, *, fps: float = 10.0, scale: int = 4
) -> Path:
    """Write frames as a GIF or MP4 (chosen by the suffix of `path`); returns the path.

    Args:
        frames: (T, H, W) grey or (T, H, W, 3) RGB, uint8.
        path: ends in .gif or .mp4.
        fps: frames per second.
        scale: integer nearest-neighbour upscaling, so small grids stay crisp.

    MP4 is H.264 in yuv420p (plays everywhere); odd sizes are padded by one edge pixel.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"unsupported video suffix {path.suffix!r} for {path.name}; use one of "
                         f"{', '.join(VIDEO_SUFFIXES)}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8; got {frames.dtype}")
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"frames must be (T, H, W) or (T, H, W, 3); got shape {frames.shape}")
    if not (isinstance(scale, int | np.integer) and scale >= 1):
        raise ValueError(f"scale must be an integer >= 1; got {scale!r}")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0; got {fps!r}")
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    codec = "gif" if suffix == ".gif" else "h264"
    if codec == "h264":
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    import mediapy

    mediapy.set_ffmpeg(ffmpeg_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {} if codec == "gif" else {"encoded_format": "yuv420p"}
    mediapy.write_video(path, frames, fps=float(fps), codec=codec, **kwargs)
    return path


# mediapy (1.2.7) passes `-vsync`, which ffmpeg 8 removed; `-fps_mode` is its replacement.
_VSYNC_SHIM = """#!/bin/sh
# Written by nca_widgets.export: runs {exe} with -vsync renamed -fps_mode (for mediapy).
for a do
  shift
  [ "$a" = -vsync ] && a=-fps_mode
  set -- "$@" "$a"
done
exec '{exe}' "$@"
"""


def ffmpeg_path() -> str:
    """The ffmpeg that mediapy should run: imageio-ffmpeg's binary.

    That binary is ffmpeg 8 or newer, which refuses mediapy's `-vsync` (so `mediapy.read_video`
    fails); on POSIX it is wrapped in a small script that renames the option to `-fps_mode`.
    """
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    match = re.match(r"\D*(\d+)\.", imageio_ffmpeg.get_ffmpeg_version())
    if os.name != "posix" or "'" in exe or (match and int(match.group(1)) < 8):
        return exe
    shim = Path(tempfile.gettempdir()) / f"nca_widgets-{os.getuid()}" / "ffmpeg"
    text = _VSYNC_SHIM.format(exe=exe)
    if not shim.is_file() or shim.read_text() != text:
        shim.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = shim.with_suffix(f".{os.getpid()}")
        partial.write_text(text)
        partial.chmod(0o755)
        partial.replace(shim)  # atomic: concurrent writers never leave half a script
    return str(shim)


def loss_figure(history: History | None, *, log_y: bool = True, smoothing: float = 0.9) -> Figure:
    """A matplotlib Figure of the loss per step (raw and EMA) and the learning rate (right axis).

    As the last expression of a notebook cell it shows as a picture; `fig.savefig(path)` writes
    it. NaN losses show as gaps with red ticks at the bottom.
    """
    import matplotlib.pyplot as plt  # in IPython this sets up the inline display of figures
    from matplotlib.ticker import NullFormatter

    fig = plt.figure(figsize=(8, 3.6), layout="constrained")
    plt.close(fig)  # pyplot keeps no reference, and the cell shows it once
    ax = fig.add_subplot()
    ax.set_xlabel("train step")
    ax.set_ylabel("loss")
    if history is None or len(history) == 0:
        ax.text(0.5, 0.5, "no steps yet", ha="center", va="center", transform=ax.transAxes)
        return fig
    steps = np.asarray(history.step)
    loss = np.asarray(history.loss, np.float64)
    ax.plot(steps, loss, color="#1f77b4", alpha=0.35, lw=1, label="loss")
    ax.plot(steps, ema(loss, smoothing), color="#1f77b4", lw=1.6, label=f"EMA {smoothing:g}")
    bad = np.isnan(loss)
    if bad.any():
        ax.plot(steps[bad], np.zeros(bad.sum()), "|", color="#d62728", ms=10,
                transform=ax.get_xaxis_transform(), label="NaN")
    if log_y and np.any(loss[np.isfinite(loss)] > 0):
        ax.set_yscale("log")
    lr_ax = ax.twinx()
    lr = np.asarray(history.lr, np.float64)
    lr_ax.plot(steps, lr, color="#ff7f0e", lw=1.2, label="lr")
    lr_ax.set_ylabel("learning rate", color="#ff7f0e")
    finite = lr[np.isfinite(lr) & (lr > 0)]
    if len(finite) and finite.max() > 10 * finite.min():  # as the live plot: log past a decade
        lr_ax.set_yscale("log")
    elif len(finite):  # a flat or gently decaying rate keeps a readable span, as the live plot
        lo, hi = finite.min(), finite.max()
        pad = max(hi - lo, 0.1 * hi) * 0.5
        lr_ax.set_ylim(max(lo - pad, 0.0), hi + pad)
    for axis in (ax.yaxis, lr_ax.yaxis):  # one way of writing numbers, as every view
        axis.set_major_formatter(axis_formatter())
        axis.set_minor_formatter(NullFormatter())
    lines = ax.get_lines() + lr_ax.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize=8)
    return fig


def ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """(n,) debiased exponential moving average of (n,) values; NaN entries keep the last value."""
    values = np.asarray(values, np.float64)
    out = np.empty_like(values)
    acc = weight = 0.0
    for i, v in enumerate(values):
        if np.isfinite(v):
            acc = acc * smoothing + (1 - smoothing) * v
            weight = weight * smoothing + (1 - smoothing)
        out[i] = acc / weight if weight > 0 else np.nan
    return out
