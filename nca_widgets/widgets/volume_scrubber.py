"""VolumeScrubber: scrub the (time, depth) slices of one channel of a 3-D rollout."""

from __future__ import annotations

import pathlib
import threading
from typing import Any

import anywidget
import numpy as np
import traitlets as t

from nca_widgets import snapshot as snap
from nca_widgets.widgets._arrays import (
    BoundedInts,
    as_display_uint8,
    colour_lut,
    is_numeric,
    montage,
    tile_grid,
    u8_bytes,
)
from nca_widgets.widgets._edits import Edits
from nca_widgets.widgets._protocol import Feed, TrainerLike, close_feed, is_trainer
from nca_widgets.widgets._static import STATIC, view_module

COLORMAPS = ("auto", "grey", "diverging")


class VolumeScrubber(Edits, BoundedInts, anywidget.AnyWidget):
    """One channel of a (T, D, H, W) volume; depth and time sliders move entirely in the browser.

    The whole volume of the selected channel lives in the browser as one binary trait
    (`_volume`: T*D*H*W uint8 bytes, `_shape` = [T, D, H, W]), with a 256-entry colour table
    (`_lut`: (256, 3) uint8 bytes): grey for a picture channel, a diverging map centred on the
    code of 0.0 for hidden ones. Moving a slider only redraws; `time` and
    `depth` come back to Python at most 4 times a second. Changing `channel` asks the trainer
    for that channel (`trainer.set_probe(channel=c)`) or, for an array, slices it here.

    Args:
        source: a trainer of a volume system (e.g. a 3-D autoencoder), a `Rollout` of one
            (`trainer.rollout(i)`), or an array (T, D, H, W) or (T, D, H, W, C), float or uint8.
        channel: channel to show first (default: the probe's, a rollout's picture channel, or
            the last one of an array).
        value_range: the floats that uint8 0 and 255 stand for; when None, (0, 1) for a
            rollout's picture channel and for uint8 arrays, else computed per channel. Ignored
            for a trainer (the probe says).
        time: first time index (default: the last); depth: first depth (default: the last
            one if anything shows there at the last time, else the first one that shows
            something, so the view never opens on a black square).
        depth_labels: a name per depth ('' for none), e.g. ('input', '', 'bottleneck', 'far
            side'); a trainer's probe brings its own.
        colormap: 'auto' (grey for a value range from 0 up, such as a picture channel's;
            diverging about 0 otherwise), 'grey', 'diverging'.
        scale: CSS pixels per cell in the main view; fps: playback speed.
    """

    _esm = view_module("volume_scrubber.js")
    _css = STATIC / "volume_scrubber.css"

    step = t.Int(0).tag(sync=True)  # snapshot step (data-step); 0 for an array
    time = t.Int(0).tag(sync=True)  # time index shown, clamped to [0, T-1]
    depth = t.Int(0).tag(sync=True)  # depth index shown, clamped to [0, D-1]
    channel = t.Int(0).tag(sync=True)  # selected channel
    num_channels = t.Int(1).tag(sync=True)  # C
    colormap = t.Unicode("auto").tag(sync=True)  # 'auto' | 'grey' | 'diverging'
    value_range = t.List(t.Float(), default_value=[0.0, 1.0]).tag(sync=True)  # [lo, hi]
    fps = t.Int(10).tag(sync=True)  # playback frames per second, 1..60
    scale = t.Int(8).tag(sync=True)  # CSS px per cell of the main slice
    loading = t.Bool(False).tag(sync=True)  # a requested channel has not arrived yet
    error = t.Unicode("").tag(sync=True)  # why the last channel request failed ('' = ok)
    probe_index = t.Int(-1).tag(sync=True)  # probe digit of the rollout, -1 for an array
    probe_split = t.Unicode("").tag(sync=True)
    probe_step = t.Int(0).tag(sync=True)  # train step of the parameters of the rollout
    depth_labels = t.List(t.Unicode()).tag(sync=True)  # a name per depth, '' for none
    _shape = t.List(t.Int(), default_value=[0, 0, 0, 0]).tag(sync=True)  # [T, D, H, W]
    _volume = t.Bytes(b"").tag(sync=True)  # (T, D, H, W) uint8 of `_volume_channel`
    _volume_channel = t.Int(-1).tag(sync=True)  # the channel `_volume` holds
    _lut = t.Bytes(b"").tag(sync=True)  # (256, 3) uint8 colour of each code

    def __init__(
        self,
        source: TrainerLike | np.ndarray,
        *,
        channel: int | None = None,
        value_range: tuple[float, float] | None = None,
        time: int | None = None,
        depth: int | None = None,
        colormap: str = "auto",
        scale: int = 8,
        fps: int = 10,
        depth_labels: tuple[str, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        self._ready = False
        # Held by snapshot updates (publisher thread) and by channel changes (kernel thread),
        # so an update never sees a channel choice half made.
        self._lock = threading.RLock()
        if colormap not in COLORMAPS:
            raise ValueError(f"colormap must be one of {', '.join(COLORMAPS)}; got {colormap!r}")
        self._trainer: TrainerLike | None = None
        self._array: np.ndarray | None = None
        self._picture_channel: int | None = None  # a channel whose values are a picture
        if isinstance(source, snap.Rollout):
            self._picture_channel = source.picture_channel
            channel = source.picture_channel if channel is None else channel
            depth_labels = source.depth_labels if depth_labels is None else depth_labels
            kwargs = dict(probe_index=source.index, probe_split=source.split,
                          probe_step=source.step, **kwargs)
            source = source.states
        if is_trainer(source):
            self._trainer = source
            num_channels = 1  # until the first probe says
        else:
            self._array = _volume_array(source)
            num_channels = self._array.shape[-1]
            if channel is not None:
                _check_channel(channel, num_channels)
        if value_range is not None:
            lo, hi = (float(v) for v in value_range)
            if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
                raise ValueError(f"value_range must be finite with lo < hi; got {value_range}")
            value_range = (lo, hi)
        self._user_range = value_range
        self._first_time, self._first_depth = time, depth
        self._volume_u8: np.ndarray | None = None
        self._probe: snap.VolumeProbe | None = None
        start = num_channels - 1 if channel is None or self._trainer else int(channel)
        super().__init__(
            num_channels=num_channels, channel=start, colormap=colormap, scale=scale, fps=fps,
            depth_labels=[str(name) for name in depth_labels or ()], **kwargs,
        )
        self._ready = True
        if self._array is not None:
            self._show_array_channel(start)
        else:
            self._feed = Feed(self._trainer, self._apply, lock=self._lock)
            self._listen_for_edits(self._trainer)
            kind = self._feed.first.picture_kind
            if kind != "volume":
                close_feed(self)
                raise ValueError(f"VolumeScrubber shows 3-D volumes; this trainer's system has "
                                 f"{kind} pictures (use FrameScrubber)")
            if channel is not None:
                _check_channel(channel, self.num_channels)
                if self._volume_channel != channel:
                    self.channel = int(channel)

    # --- validation: Python callers get errors, front-end values get clamped -----------------

    def _int_bounds(self) -> dict[str, tuple[int, int]]:
        return {"time": (0, self._shape[0] - 1), "depth": (0, self._shape[1] - 1),
                "channel": (0, self.num_channels - 1), "fps": (1, 60), "scale": (1, 32)}

    def set_state(self, sync_data: dict) -> None:
        """Apply state from the front end (clamped: BoundedInts) as one step under the lock."""
        with self._lock:
            super().set_state(sync_data)

    @t.validate("time", "depth", "fps", "scale")
    def _clamp(self, proposal: dict) -> int:
        return self._clamped(proposal)

    @t.validate("channel")
    def _validate_channel(self, proposal: dict) -> int:
        _check_channel(proposal["value"], self.num_channels)
        return int(proposal["value"])

    @t.validate("colormap")
    def _check_colormap(self, proposal: dict) -> str:
        if proposal["value"] not in COLORMAPS:
            raise ValueError(f"colormap must be one of {', '.join(COLORMAPS)}")
        return proposal["value"]

    # --- reactions ------------------------------------------------------------------------------

    @t.observe("channel")
    def _on_channel(self, change: dict) -> None:
        if not self._ready:
            return
        channel = change["new"]
        with self._lock:
            if self._array is not None:
                self._show_array_channel(channel)
            elif channel != self._volume_channel:
                self._request_channel(int(channel))
            else:
                self.loading = False

    def _request_channel(self, channel: int) -> None:
        """Ask the trainer for `channel`; a later snapshot brings its volume."""
        self.loading = True
        try:
            self._trainer.set_probe(channel=channel)
        except Exception as error:  # shown in the widget; the kernel log is out of sight
            self.loading = False
            self.error = f"could not fetch channel {channel}: {error}"
            if self._volume_channel >= 0:
                self.channel = self._volume_channel  # the selector goes back to what is shown
            return
        self.error = ""

    @t.observe("colormap")
    def _on_colormap(self, _change: dict) -> None:
        if self._ready and self._volume_u8 is not None:
            self._lut = self._lut_for(self._volume_channel).tobytes()

    def _apply(self, snapshot: snap.Snapshot) -> None:
        with self.hold_sync():
            self.step = int(snapshot.step)
            probe = snapshot.probe
            if not isinstance(probe, snap.VolumeProbe) or probe is self._probe:
                return
            self._probe = probe
            self.num_channels = int(probe.num_channels)
            self.depth_labels = list(probe.depth_labels)
            self._set_volume(probe.volume, int(probe.channel), tuple(probe.value_range))
            self._show_edits(probe)
            self.probe_index = int(probe.probe_index)
            self.probe_split = str(probe.probe_split)
            self.probe_step = int(probe.step)
            if probe.channel == self.channel:
                self.loading = False
            elif not self.loading:
                self.channel = int(probe.channel)  # follow the trainer's probe (no new request)

    def _show_array_channel(self, channel: int) -> None:
        value_range = self._user_range
        if value_range is None and channel == self._picture_channel:
            value_range = (0.0, 1.0)
        volume, value_range = as_display_uint8(self._array[..., channel], value_range)
        with self.hold_sync():
            self._set_volume(volume, channel, value_range)
            self.loading = False

    def _set_volume(self, volume: np.ndarray, channel: int, value_range: tuple) -> None:
        """Show `volume` (T, D, H, W) uint8 of `channel`; called inside hold_sync."""
        first = self._volume_u8 is None
        self._volume_u8 = volume
        self._shape = [int(s) for s in volume.shape]
        self._volume = u8_bytes(volume)
        self._volume_channel = channel
        self.value_range = [float(value_range[0]), float(value_range[1])]
        self._lut = self._lut_for(channel).tobytes()
        n_time, n_depth = volume.shape[:2]
        if first:
            self.time = n_time - 1 if self._first_time is None else self._first_time
            self.depth = _visible_depth(volume[self.time]) if self._first_depth is None \
                else self._first_depth
        else:  # re-clamp into a possibly smaller volume
            self.time = self.time
            self.depth = self.depth

    def _lut_for(self, channel: int) -> np.ndarray:
        name = self.colormap
        if name == "auto":  # a range from 0 up is a picture; one around 0 a hidden channel
            name = "grey" if self.value_range[0] >= 0 else "diverging"
        return colour_lut(name, tuple(self.value_range))

    # --- export ---------------------------------------------------------------------------------

    @property
    def volume(self) -> np.ndarray | None:
        """(T, D, H, W) uint8: the volume shown now (None before the first probe)."""
        return self._volume_u8

    def frames(self, depth: int | None = None) -> np.ndarray:
        """(T, h, w, 3) uint8 colour frames of the rollout, as the view colours them.

        With `depth=None` each frame is a montage of all depth slices (row-major, depth 0 top
        left, 1 px gaps, the same grid as the depth strip), so the digit entering at depth 0,
        the bottleneck in the middle and the reconstruction at the far side show together;
        with a depth index, that one slice over time.
        """
        if self._volume_u8 is None:
            raise ValueError("no volume yet: the trainer has not published a probe rollout")
        lut = self._lut_for(self._volume_channel)
        volume = self._volume_u8
        if depth is not None:
            _check_index("depth", depth, volume.shape[1])
            return lut[volume[:, depth]]
        n_time, n_depth, h, w = volume.shape
        rows, cols = tile_grid(n_depth, w)
        coloured = lut[volume]  # (T, D, H, W, 3)
        return np.stack([montage(coloured[i], rows, cols, fill=40) for i in range(n_time)])

    def save_video(
        self, path: str | pathlib.Path, *, depth: int | None = None, fps: float = 10.0,
        scale: int = 4,
    ) -> pathlib.Path:
        """Write the rollout (see `frames`) as a GIF or MP4 (by suffix); returns the path."""
        from nca_widgets.export import save_video

        return save_video(self.frames(depth), path, fps=fps, scale=scale)

    def _cell_size(self) -> tuple[int, int]:
        return int(self._shape[2]), int(self._shape[3])

    def close(self) -> None:
        """Unsubscribe from the trainer (if any) and close the widget."""
        close_feed(self)
        super().close()


def _volume_array(source: Any) -> np.ndarray:
    """(T, D, H, W, C) view of a user's array, or ValueError saying what shape is expected."""
    try:
        array = np.asarray(source)
    except Exception as error:  # any failure means "not an array"
        raise ValueError(
            f"VolumeScrubber needs a trainer or an array; got {type(source).__name__}"
        ) from error
    if not is_numeric(array):
        raise ValueError(
            f"VolumeScrubber needs a trainer or a numeric array (T, D, H, W) or (T, D, H, W, C); "
            f"got {type(source).__name__} with dtype {array.dtype}"
        )
    if array.ndim == 4:
        array = array[..., None]
    if array.ndim != 5:
        raise ValueError(
            f"VolumeScrubber needs an array of shape (T, D, H, W) or (T, D, H, W, C); got shape "
            f"{tuple(np.shape(source))} ({np.ndim(source)}-D)"
        )
    if 0 in array.shape:
        raise ValueError(f"VolumeScrubber needs a non-empty array; got shape {array.shape}")
    return array


def _visible_depth(frame: np.ndarray) -> int:
    """The last depth of `frame: (D, H, W)` uint8 if it shows anything, else the first that does.

    "Shows" means a spread of codes: a blank slice is one flat colour (black for the digit
    channel, mid-grey for a hidden channel's zero).
    """
    spread = frame.max(axis=(1, 2)).astype(int) - frame.min(axis=(1, 2))
    visible = np.flatnonzero(spread >= 16)
    if not len(visible) or visible[-1] == len(frame) - 1:
        return len(frame) - 1
    return int(visible[0])


def _check_channel(channel: Any, num_channels: int) -> None:
    _check_index("channel", channel, num_channels)


def _check_index(name: str, value: Any, size: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer in 0..{size - 1}; got {value!r}")
    if not 0 <= value < size:
        raise ValueError(f"{name} {value} is out of range: this volume has {size} "
                         f"{name}s (0..{size - 1})")
