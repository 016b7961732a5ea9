"""Building a trainer's snapshots: the run's status plus pictures from the device, throttled.

The pool view, the probe rollout and the live evaluation cost device time, so each runs when its
`When` says (a few seconds apart, at most a small share of wall time) or when training rests.
Parts that did not change are passed on as the same objects, so widgets can skip them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from nca_widgets.periodic import When
from nca_widgets.snapshot import (
    EvalTrack,
    FrameProbe,
    PoolView,
    Rollout,
    Snapshot,
    VolumeProbe,
    frozen,
    worst_first,
)
from nca_widgets.system import EDIT_MODES, Edit, Examples, System
from nca_widgets.training import TrainState
from nca_widgets.views import Views, to_uint8

SPLITS = ("train", "test")


def describe(system: System) -> str:
    """One line naming the system and its main sizes, for headers."""
    config = system.config
    parts = [system.name]
    if dims := getattr(config, "spatial_dims", None):
        parts.append(f"{'x'.join(str(d) for d in dims)} cells")
    if channels := getattr(config, "channel_size", None):
        parts.append(f"{channels} channels")
    parts.append(f"{config.num_steps} steps per rollout")
    return " · ".join(parts)


@dataclasses.dataclass
class _Probe:
    """Which example the probe rolls out, and the device rollout for the current parameters."""

    index: int
    split: str
    channel: int
    level: float | None  # where the system has levels: the one the rollout starts at
    states: Any = None  # device rollout: every state (T, *state)
    target: Any = None  # device (H, W): what the rollout should show
    step: int = -1  # train step of `states`
    view: VolumeProbe | FrameProbe | None = None
    edit: Edit | None = None  # brush strokes (host masks over the cells), or None
    edit_time: int = -1  # the time index the strokes apply to
    edited: Any = None  # device: the rollout edited at `edit_time`, its target, the recovery


class SnapshotBuilder:
    """Turns a training state into snapshots for one trainer (worker thread only)."""

    def __init__(self, system: System, views: Views, examples: Examples, device: Examples,
                 probe_index: int, state_shape: tuple[int, ...]):
        self.system, self.views, self.examples, self.device = system, views, examples, device
        self.title, self.state_shape = describe(system), tuple(state_shape)
        self.num_channels = num_channels = self.state_shape[-1]
        self.probe = _Probe(probe_index, "test", system.picture_channel % num_channels,
                            system.probe_level if system.level_name else None)
        self.pool: PoolView | None = None
        self.pool_step = -1  # train step of `pool`
        self.evaluation: EvalTrack | None = None
        self._eval_points: list[tuple[int, float]] = []  # (step, error), while someone watched
        # Rollouts for the pool view and the probe, and the live evaluation, cost device time:
        # together they may take at most 2.5% of it, so that watching does not slow training.
        self.pool_when = When(every_secs=0.5, share=0.005)
        self.probe_when = When(every_secs=2.0, share=0.01)
        self.eval_when = When(every_secs=5.0, share=0.01)

    def examples_of(self, split: str, device: bool = False) -> Any:
        """The examples of `split`: on the host, or with `device` the trainer's device copy."""
        examples = self.device if device else self.examples
        return examples.train if split == "train" else examples.test

    def check_probe(self, index: int | None, split: str | None, channel: int | None,
                    level: float | None = None) -> None:
        """Raise ValueError for a probe choice that does not exist (caller's thread)."""
        if level is not None:
            if not self.system.level_name:
                raise ValueError(f"{self.system.name} has no levels; leave level out")
            if isinstance(level, bool) or not np.isfinite(level):
                raise ValueError(f"{self.system.level_name} must be a finite number; got "
                                 f"{level!r}")
        if index is not None:
            if split not in SPLITS:
                raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
            n = len(self.examples_of(split))
            if isinstance(index, bool) or not 0 <= index < n:
                raise ValueError(f"probe index must be in [0, {n}) for {split}; got {index}")
        if channel is not None and not 0 <= channel < self.num_channels:
            raise ValueError(f"channel must be in [0, {self.num_channels}); got {channel}")

    def set_probe(self, index: int | None, split: str | None, channel: int | None,
                  level: float | None = None) -> None:
        """From the next snapshot on, roll out another example or level and/or show a channel."""
        p = self.probe
        if index is not None and (index, split) != (p.index, p.split):
            p.index, p.split, p.step, p.edit = index, split, -1, None
        if level is not None and float(level) != p.level:
            p.level, p.step, p.edit = float(level), -1, None
        p.channel = p.channel if channel is None else channel

    def check_stroke(self, mask: np.ndarray, mode: str, time: int, depth: int | None) -> None:
        """Raise ValueError for a brush stroke that does not fit the probe (caller's thread)."""
        if mode not in EDIT_MODES:
            raise ValueError(f"mode must be one of {', '.join(EDIT_MODES)}; got {mode!r}")
        volume = self.system.picture_kind == "volume"
        height, width = self.state_shape[:2]
        if np.shape(mask) != (height, width):
            raise ValueError(f"a stroke mask must be (H, W) = ({height}, {width}); got "
                             f"{np.shape(mask)}")
        steps = 2 * self.system.config.num_steps
        if isinstance(time, bool) or not 0 <= time <= steps:
            raise ValueError(f"time must be in [0, {steps}]; got {time}")
        depths = self.state_shape[2] if volume else 0
        if volume and (depth is None or not 0 <= depth < depths):
            raise ValueError(f"depth must be in [0, {depths}) for a volume; got {depth}")
        if not volume and depth is not None:
            raise ValueError("depth is for volume systems; leave it out")

    def add_stroke(self, mask: np.ndarray, mode: str, time: int, depth: int | None) -> None:
        """Add a brush stroke at `time` (and `depth`); a stroke at another time starts afresh.

        The probe is rolled out again at the next snapshot, edited from `time` on.
        """
        p = self.probe
        if p.edit is None or time != p.edit_time:
            cells = self.state_shape[:-1]
            p.edit = Edit(*(np.zeros(cells, bool) for _ in Edit._fields))
            p.edit_time = time
        cells = getattr(p.edit, mode).copy()  # a new array: the old one may be on its way in
        if depth is None:
            cells |= mask
        else:
            cells[:, :, depth] |= mask
        p.edit, p.step = p.edit._replace(**{mode: cells}), -1

    def prepare_edits(self, state: TrainState) -> None:
        """Compile the edited rollout with an empty edit (the probe is rolled out if need be)."""
        p = self.probe
        if p.states is None:
            self._rollout(state, -1)
        empty = Edit(*(np.zeros(self.state_shape[:-1], bool) for _ in Edit._fields))
        jax.block_until_ready(self.views.edited(state, p.states, p.target, np.int32(0), empty))

    def clear_edits(self) -> None:
        """Back to the untouched rollout."""
        p = self.probe
        if p.edit is not None:
            p.edit, p.step = None, -1

    def build(self, shell: Snapshot, state: TrainState, resting: bool, probe: bool) -> Snapshot:
        """`shell` with the pictures brought up to date where stale and due.

        Everything is brought up to date when training rests (paused, finished, ...); `probe`
        forces a fresh probe rollout. A view that raised is tried again only when its `When`
        says, even at rest, so a broken view costs little.
        """
        step = shell.step

        def now(when: When, forced: bool) -> bool:
            return when.due() or (forced and not when.failed)

        if self.pool_step != step and now(self.pool_when, resting):
            self.pool = self.pool_when.run(lambda: self._pool_view(state, step))
            self.pool_step = step
        if self.system.live_eval_names and self._last_eval_step() != step and \
                now(self.eval_when, resting):
            self.eval_when.run(lambda: self._evaluate(state, step))
        p = self.probe
        if p.step != step and now(self.probe_when, probe or resting):
            self.probe_when.run(lambda: self._rollout(state, step))
        elif isinstance(p.view, VolumeProbe) and p.view.channel != p.channel:
            self._refresh_probe_view()
        return self.with_views(shell)

    def with_views(self, shell: Snapshot) -> Snapshot:
        """`shell` with the pictures as they are (no device work)."""
        return dataclasses.replace(shell, pool=self.pool, probe=self.probe.view,
                                   evaluation=self.evaluation)

    def rollout(self, state: TrainState, step: int, index: int, split: str,
                level: float | None) -> Rollout:
        """A float rollout for the API (see `Rollout`), at `level` or the probe's."""
        level = self.probe.level if level is None else level
        states, target = self.views.probe(state, self.examples_of(split, device=True)[index],
                                          np.float32(level or 0.0))
        system = self.system
        common = dict(picture_kind=system.picture_kind, index=index, split=split, step=step,
                      note=system.probe_note(level))
        if system.picture_kind == "volume":
            states, target = jax.device_get((states, target))
            return Rollout(states=np.moveaxis(states, 3, 1), target=target,
                           picture_channel=system.picture_channel % states.shape[-1],
                           depth_labels=tuple(system.depth_labels), **common)
        frames, first, _, target = jax.device_get((*self.views.frames(states, target), target))
        return Rollout(states=frames, target=target, input=first,
                       labels=tuple(system.frame_labels), **common)

    def _last_eval_step(self) -> int:
        return self._eval_points[-1][0] if self._eval_points else -1

    def _pool_view(self, state: TrainState, step: int) -> PoolView:
        pictures = jax.device_get(
            self.views.pool_view(state, self.device.train, self.device.test))
        order = worst_first(pictures.losses)

        def sorted_or_none(values, dtype):
            return None if values is None else frozen(np.asarray(values, dtype)[order])

        return PoolView(
            targets=frozen(pictures.targets[order]), renders=frozen(pictures.renders[order]),
            losses=frozen(pictures.losses[order]),
            digit_indices=frozen(pictures.indices[order].astype(np.int64)),
            split=self.system.pool_split if jax.tree.leaves(state.pool) else "test",
            step=step, inputs=sorted_or_none(pictures.inputs, np.uint8),
            levels=sorted_or_none(pictures.levels, np.float32),
            level_name=self.system.level_name,
        )

    def _evaluate(self, state: TrainState, step: int) -> None:
        """Add a point to the live evaluation track (see `System.live_eval`)."""
        error, baseline = jax.device_get(
            self.views.live_eval(state, self.device.train, self.device.test))
        self._eval_points.append((step, float(error)))
        steps, values = zip(*self._eval_points, strict=True)
        name, baseline_name = self.system.live_eval_names
        self.evaluation = EvalTrack(
            name=name, step=frozen(np.array(steps, np.int64)),
            value=frozen(np.array(values, np.float32)), baseline=float(baseline),
            baseline_name=baseline_name,
        )

    def _rollout(self, state: TrainState, step: int) -> None:
        p = self.probe
        example = self.examples_of(p.split, device=True)[p.index]
        p.states, p.target = self.views.probe(state, example, np.float32(p.level or 0.0))
        p.edited = None if p.edit is None else self.views.edited(
            state, p.states, p.target, np.int32(p.edit_time), p.edit)
        p.step = step
        self._refresh_probe_view()

    def _refresh_probe_view(self) -> None:
        """Turn the device rollout into the snapshot's probe (uint8 on the host).

        With edits, the probe shows the edited rollout and carries the recovery curve.
        """
        p = self.probe
        states, target, recovery = p.states, p.target, None
        if p.edited is not None:
            states, target, recovery = p.edited
        edits = dict(edit_time=p.edit_time if p.edited is not None else -1,
                     recovery=None if recovery is None else frozen(
                         np.asarray(jax.device_get(recovery), np.float32)))
        if self.system.picture_kind == "volume":
            volume, low, high, target = jax.device_get(
                (*self.views.channel_volume(states, p.channel), to_uint8(target)))
            p.view = VolumeProbe(
                volume=frozen(volume), channel=p.channel, num_channels=self.num_channels,
                value_range=(float(low), float(high)), digit=frozen(target),
                probe_index=p.index, probe_split=p.split, step=p.step,
                depth_labels=tuple(self.system.depth_labels), **edits,
            )
        else:
            frames, first, psnr = self.views.frames(states, target)
            frames, first, psnr, target = jax.device_get(
                (to_uint8(frames), to_uint8(first), psnr, to_uint8(target)))
            p.view = FrameProbe(
                frames=frozen(frames), input=frozen(first), target=frozen(target),
                psnr=frozen(np.asarray(psnr, np.float32)), note=self.system.probe_note(p.level),
                labels=tuple(self.system.frame_labels),
                probe_index=p.index, probe_split=p.split, step=p.step, **edits,
            )
