"""What a trainer publishes: immutable, plain-numpy snapshots that widgets render.

Data flows one way: the training thread builds snapshots, the publisher hands the newest one to
subscribers (widgets), and widgets never reach back except through the trainer's controls.
Arrays in a snapshot are read-only; a part that did not change since the previous snapshot is
the *same object* (`new.pool is old.pool`), so a widget can skip re-sending it by identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATUSES = ("idle", "running", "paused", "finished", "stopped", "failed")


def frozen(array: np.ndarray) -> np.ndarray:
    """Return `array` (a fresh or owned numpy array) marked read-only."""
    array = np.asarray(array)
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class History:
    """The loss curve so far, one entry per train step: read-only views, oldest first."""

    step: np.ndarray  # (n,) int64: train step index (1-based: the step that produced the loss)
    loss: np.ndarray  # (n,) float32: training loss (NaN where a non-finite update was skipped)
    lr: np.ndarray  # (n,) float32: learning rate used by that step
    wall_s: np.ndarray  # (n,) float64: seconds since the trainer first started, at read-back

    def __len__(self) -> int:
        return len(self.step)


@dataclass(frozen=True)
class PoolView:
    """A fixed number of training samples, sorted by loss (`worst_first`)."""

    targets: np.ndarray  # (P, H, W) uint8: what each sample should become
    renders: np.ndarray  # (P, H, W) uint8: its current state, rendered (far side / estimate)
    losses: np.ndarray  # (P,) float32: per-sample loss
    digit_indices: np.ndarray  # (P,) int64: each sample's example, an index into `split`
    split: str  # 'train' (a pool) | 'test' (e.g. a fixed gallery of test examples)
    step: int = -1  # train step of the state it shows (views refresh a few times a second)
    inputs: np.ndarray | None = None  # (P, H, W) uint8: the picture each started from
    levels: np.ndarray | None = None  # (P,) float32: each sample's level (e.g. its noise)
    level_name: str = ""  # what a level is, e.g. 'noise level'


def worst_first(losses: np.ndarray) -> np.ndarray:
    """The order that sorts `losses` worst first, NaN (a diverged sample) before all."""
    return np.argsort(-np.nan_to_num(np.asarray(losses, np.float32), nan=np.inf), kind="stable")


@dataclass(frozen=True)
class EvalTrack:
    """Test error against train steps, measured live on a few fixed test digits.

    The phenomenon a system exists for (a digit rebuilt behind a bottleneck, a digit denoised,
    a picture grown), beside the score of a model that learned nothing, so a falling training
    loss cannot hide a far side that stays black.
    """

    name: str  # what `value` measures, e.g. 'test far-side MSE'
    step: np.ndarray  # (k,) int64: train step of each measurement
    value: np.ndarray  # (k,) float32: the error then (lower is better)
    baseline: float  # the same error for a baseline that learned nothing
    baseline_name: str  # e.g. 'mean digit', 'noisy input'


@dataclass(frozen=True)
class VolumeProbe:
    """A volume system's probe: one channel of an example's rollout over 2 * num_steps steps."""

    volume: np.ndarray  # (T, D, H, W) uint8: T = 2 * num_steps + 1 (the initial state first)
    channel: int  # which channel of the state the volume shows
    num_channels: int  # channels of the state (the channel selector's range)
    value_range: tuple[float, float]  # the float values that uint8 0 and 255 stand for
    digit: np.ndarray  # (H, W) uint8: the probe example's target
    probe_index: int  # index of the probe example in its split
    probe_split: str  # 'train' | 'test'
    step: int  # train step of the parameters that produced the rollout
    depth_labels: tuple[str, ...] = ()  # a name per depth ('' for none): input, bottleneck, ...
    edit_time: int = -1  # the time brush edits apply at (the volume is then the edited rollout)
    recovery: np.ndarray | None = None  # (2, T) float32: MSE vs target, untouched / edited


@dataclass(frozen=True)
class FrameProbe:
    """A frame system's probe: an example's rollout over 2 * num_steps steps, as pictures."""

    frames: np.ndarray  # (T, H, W) uint8: what each state shows (`System.render`)
    input: np.ndarray  # (H, W) uint8: the picture of the first state (e.g. a noisy digit)
    target: np.ndarray  # (H, W) uint8: what the frames should become
    psnr: np.ndarray  # (T,) float32: PSNR in dB of each frame against the target
    note: str  # how the rollout starts, e.g. 'noise level 0.50' ('' for nothing to say)
    labels: tuple[str, str, str]  # captions of the input, frame and target pictures
    probe_index: int  # index of the probe example in its split
    probe_split: str  # 'train' | 'test'
    step: int  # train step of the parameters that produced the rollout
    edit_time: int = -1  # the time brush edits apply at (the frames are then the edited rollout)
    recovery: np.ndarray | None = None  # (2, T) float32: MSE vs target, untouched / edited


@dataclass(frozen=True)
class Rollout:
    """An example rolled out with a run's parameters, as floats (`LiveTrainer.rollout`).

    Scrubbers take it whole and show it as the dashboard does: `VolumeScrubber(rollout)` opens on
    the picture channel, drawn in [0, 1], with the depths named; `FrameScrubber(rollout)` shows
    input | frame | target in [0, 1]. `np.asarray(rollout)` is `states`.
    """

    states: np.ndarray  # volume: (T, D, H, W, C) states; frame: (T, H, W) pictures in [0, 1]
    picture_kind: str  # 'frame' | 'volume'
    target: np.ndarray  # (H, W) in [0, 1]: what the rollout should show
    index: int  # the example's index in its split
    split: str  # 'train' | 'test'
    step: int  # train step of the parameters
    picture_channel: int = -1  # volume: the channel that is a picture in [0, 1] (non-negative)
    depth_labels: tuple[str, ...] = ()  # volume: a name per depth ('' for none)
    input: np.ndarray | None = None  # frame: (H, W) picture of the first state
    labels: tuple[str, str, str] = ("input", "frame", "target")  # frame: panel captions
    note: str = ""  # how the rollout starts, e.g. 'noise level 0.50'

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of `states`."""
        return self.states.shape

    def __len__(self) -> int:
        return len(self.states)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.array(self.states, dtype=dtype, copy=copy)


@dataclass(frozen=True)
class Snapshot:
    """Everything a widget needs, at one moment of a run."""

    system: str  # the system's name (`System.name`)
    title: str  # one line naming the system and its sizes, for headers
    picture_kind: str  # 'frame' | 'volume': which probe (and scrubber) the system has
    step: int  # train steps done
    total_steps: int  # num_train_steps of the run
    status: str  # one of STATUSES
    message: str | None  # the error or non-finite message, in full; None when all is well
    learning_rate: float  # current learning rate (schedule x live factor)
    steps_per_s: float  # recent training speed
    history: History
    pool: PoolView | None  # None until first computed
    probe: VolumeProbe | FrameProbe | None  # None until first computed
    evaluation: EvalTrack | None = None  # None until first computed
