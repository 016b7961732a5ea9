"""FrameScrubber: a 2-D rollout: its input, the picture at a scrubbed time, and the target."""

from __future__ import annotations

import pathlib
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from nca_widgets import snapshot as snap
from nca_widgets.widgets._arrays import (
    BoundedInts,
    as_display_uint8,
    auto_range,
    f32_bytes,
    is_numeric,
    u8_bytes,
)
from nca_widgets.widgets._edits import Edits
from nca_widgets.widgets._protocol import Feed, TrainerLike, close_feed, is_trainer
from nca_widgets.widgets._static import STATIC, view_module


class FrameScrubber(Edits, BoundedInts, anywidget.AnyWidget):
    """A rollout of a frame system, frame by frame; the time slider and playback run in the browser.

    Binary traits: `_frames` (T, H, W) uint8 with `_shape` = [T, H, W]; `_input` and `_target`
    (H, W) uint8 (empty when absent); `_psnr` (T,) float32 (empty when unknown). They travel
    only when the snapshot's `probe` is a new object. `time` comes back at most 4 times a
    second and is clamped to [0, T-1].

    Args:
        source: a trainer of a frame system (e.g. a denoiser), a `Rollout` of one
            (`trainer.rollout(i)`: its input, target and captions come with it, in [0, 1]), or
            frames (T, H, W), float or uint8.
        input, target: (H, W) panels shown beside the frames (arrays only; optional).
        psnr: (T,) PSNR in dB per frame (arrays only); computed from `target` when omitted.
        labels: captions of the input, frame and target panels (a trainer's probe brings its
            own).
        value_range: floats that uint8 0 and 255 stand for (floats: computed when None).
        time: first frame shown (default: the last); scale: CSS px per pixel; fps: playback.
    """

    _esm = view_module("frame_scrubber.js")
    _css = STATIC / "frame_scrubber.css"

    step = t.Int(0).tag(sync=True)  # snapshot step (data-step); 0 for an array
    time = t.Int(0).tag(sync=True)  # frame shown, clamped to [0, T-1]
    fps = t.Int(10).tag(sync=True)  # playback frames per second, 1..60
    scale = t.Int(6).tag(sync=True)  # CSS px per pixel
    note = t.Unicode("").tag(sync=True)  # how the rollout starts, e.g. 'noise level 0.50'
    labels = t.List(t.Unicode(), default_value=["input", "frame", "target"]).tag(sync=True)
    probe_index = t.Int(-1).tag(sync=True)  # probe digit, -1 for an array
    probe_split = t.Unicode("").tag(sync=True)
    probe_step = t.Int(0).tag(sync=True)  # train step of the parameters of the rollout
    _shape = t.List(t.Int(), default_value=[0, 0, 0]).tag(sync=True)  # [T, H, W]
    _frames = t.Bytes(b"").tag(sync=True)  # (T, H, W) uint8
    _input = t.Bytes(b"").tag(sync=True)  # (H, W) uint8 or empty
    _target = t.Bytes(b"").tag(sync=True)  # (H, W) uint8 or empty
    _psnr = t.Bytes(b"").tag(sync=True)  # (T,) float32 or empty

    def __init__(
        self,
        source: TrainerLike | np.ndarray,
        *,
        input: np.ndarray | None = None,  # noqa: A002 - the input panel, as in the view
        target: np.ndarray | None = None,
        psnr: np.ndarray | None = None,
        labels: tuple[str, str, str] = ("input", "frame", "target"),
        value_range: tuple[float, float] | None = None,
        time: int | None = None,
        scale: int = 6,
        fps: int = 10,
        **kwargs: Any,
    ) -> None:
        self._trainer: TrainerLike | None = None
        self._first_time = time
        self._frames_u8: np.ndarray | None = None
        self._input_u8: np.ndarray | None = None
        self._target_u8: np.ndarray | None = None
        self._probe: snap.FrameProbe | None = None
        arrays = None
        if isinstance(source, snap.Rollout):
            input = source.input if input is None else input  # noqa: A001
            target = source.target if target is None else target
            labels, value_range = source.labels, value_range or (0.0, 1.0)
            kwargs = dict(note=source.note, probe_index=source.index, probe_split=source.split,
                          probe_step=source.step, **kwargs)
            source = source.states
        if is_trainer(source):
            if input is not None or target is not None or psnr is not None:
                raise ValueError(
                    "input, target and psnr are for arrays; a trainer's probe brings its own"
                )
            self._trainer = source
        else:
            arrays = _frame_arrays(source, input, target, psnr, value_range)
        super().__init__(scale=scale, fps=fps, labels=list(labels), **kwargs)
        if arrays is not None:
            with self.hold_sync():
                self._set_frames(*arrays)
        else:
            self._feed = Feed(self._trainer, self._apply)
            self._listen_for_edits(self._trainer)
            kind = self._feed.first.picture_kind
            if kind != "frame":
                close_feed(self)
                raise ValueError(f"FrameScrubber shows 2-D frames; this trainer's system has "
                                 f"{kind} pictures (use VolumeScrubber)")

    def _int_bounds(self) -> dict[str, tuple[int, int]]:
        return {"time": (0, self._shape[0] - 1), "fps": (1, 60), "scale": (1, 32)}

    @t.validate("time", "fps", "scale")
    def _clamp(self, proposal: dict) -> int:
        return self._clamped(proposal)

    def _apply(self, snapshot: snap.Snapshot) -> None:
        with self.hold_sync():
            self.step = int(snapshot.step)
            probe = snapshot.probe
            if not isinstance(probe, snap.FrameProbe) or probe is self._probe:
                return
            self._probe = probe
            self._set_frames(probe.frames, probe.input, probe.target, probe.psnr)
            self._show_edits(probe)
            self.note = probe.note
            self.labels = list(probe.labels)
            self.probe_index = int(probe.probe_index)
            self.probe_split = str(probe.probe_split)
            self.probe_step = int(probe.step)

    def _set_frames(self, frames: np.ndarray, first_picture: np.ndarray | None,
                    target: np.ndarray | None, psnr: np.ndarray | None) -> None:
        """Show frames (T, H, W) uint8 with optional (H, W) panels and (T,) PSNR."""
        first = self._frames_u8 is None
        self._frames_u8, self._input_u8, self._target_u8 = frames, first_picture, target
        self._shape = [int(s) for s in frames.shape]
        self._frames = u8_bytes(frames)
        self._input = b"" if first_picture is None else u8_bytes(first_picture)
        self._target = b"" if target is None else u8_bytes(target)
        self._psnr = b"" if psnr is None else f32_bytes(psnr)
        if first:
            self.time = frames.shape[0] - 1 if self._first_time is None else self._first_time
        else:
            self.time = self.time

    @property
    def frames(self) -> np.ndarray | None:
        """(T, H, W) uint8: the rollout shown now (None before the first probe)."""
        return self._frames_u8

    def video_frames(self, panels: bool = True) -> np.ndarray:
        """(T, H, w) uint8 grey frames for a video of the rollout.

        With `panels`: input | frame | target side by side (those known), 1 px grey gaps;
        else the frames alone.
        """
        if self._frames_u8 is None:
            raise ValueError("no frames yet: the trainer has not published a probe rollout")
        frames = self._frames_u8
        if not panels:
            return frames
        n_time, h, _ = frames.shape
        gap = np.full((n_time, h, 1), 128, np.uint8)
        parts = []
        if self._input_u8 is not None:
            parts += [np.broadcast_to(self._input_u8, frames.shape), gap]
        parts.append(frames)
        if self._target_u8 is not None:
            parts += [gap, np.broadcast_to(self._target_u8, frames.shape)]
        return np.concatenate(parts, axis=2)

    def save_video(self, path: str | pathlib.Path, *, panels: bool = True, fps: float = 10.0,
                   scale: int = 4) -> pathlib.Path:
        """Write the rollout (see `video_frames`) as a GIF or MP4 (by suffix); returns the path."""
        from nca_widgets.export import save_video

        return save_video(self.video_frames(panels), path, fps=fps, scale=scale)

    def _cell_size(self) -> tuple[int, int]:
        return int(self._shape[1]), int(self._shape[2])

    def close(self) -> None:
        """Unsubscribe from the trainer (if any) and close the widget."""
        close_feed(self)
        super().close()


def _frame_arrays(
    source: Any, first: Any, target: Any, psnr: Any, value_range: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Validate and scale a user's (T, H, W) frames and optional panels to uint8."""
    frames = np.asarray(source)
    if not is_numeric(frames):
        raise ValueError(f"FrameScrubber needs a trainer or a numeric (T, H, W) array; got "
                         f"{type(source).__name__} with dtype {frames.dtype}")
    if frames.ndim != 3 or 0 in frames.shape:
        raise ValueError(f"FrameScrubber needs a non-empty array of shape (T, H, W); got shape "
                         f"{frames.shape}")
    if value_range is None and frames.dtype != np.uint8:
        # One range for frames and panels, so the same value looks the same everywhere.
        parts = [np.asarray(p, np.float64).ravel() for p in (source, first, target)
                 if p is not None]
        value_range = auto_range(np.concatenate(parts))
    frames_u8, value_range = as_display_uint8(frames, value_range)
    panels = []
    for name, panel in (("input", first), ("target", target)):
        if panel is None:
            panels.append(None)
            continue
        panel = np.asarray(panel)
        if panel.shape != frames.shape[1:]:
            raise ValueError(
                f"{name} must have shape (H, W) = {frames.shape[1:]}; got {panel.shape}"
            )
        panels.append(as_display_uint8(panel, value_range)[0])
    if psnr is not None:
        psnr = np.asarray(psnr, np.float32)
        if psnr.shape != (frames.shape[0],):
            raise ValueError(f"psnr must have shape (T,) = ({frames.shape[0]},); got {psnr.shape}")
    elif panels[1] is not None:
        psnr = psnr_db(frames_u8, panels[1])
    return frames_u8, panels[0], panels[1], psnr


def psnr_db(frames: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(T,) float32 PSNR in dB of uint8 frames (T, H, W) against a uint8 target (H, W).

    Computed on the [0, 1] scale; identical frames give +inf.
    """
    diff = frames.astype(np.float64) / 255.0 - target.astype(np.float64)[None] / 255.0
    mse = np.mean(diff * diff, axis=(1, 2))
    with np.errstate(divide="ignore"):
        return (-10.0 * np.log10(mse)).astype(np.float32)
