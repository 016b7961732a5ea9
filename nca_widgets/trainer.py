"""LiveTrainer: a training run in a background thread, steerable from any thread.

One worker thread owns every JAX call after construction. The public methods only post commands
to it (pause, resume, advance, stop, learning rate, probe, save) and, where they return a
result, wait for its answer. The worker dispatches train steps asynchronously and reads their
metrics back in batches; it builds snapshots at most `publish_hz` times a second, only while
someone subscribes, and a publisher thread hands the newest one to subscribers, so a slow
subscriber misses snapshots instead of slowing training.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import math
import os
import queue
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nca_widgets import NCAWidgetsWarning, checkpoint
from nca_widgets.config import Config, ConfigError, config_diff, config_to_dict, make_config
from nca_widgets.data import Digits, load_digits
from nca_widgets.snapshot import (
    EvalTrack,
    FrameProbe,
    History,
    PoolView,
    Snapshot,
    VolumeProbe,
    frozen,
    worst_first,
)
from nca_widgets.systems import make_task
from nca_widgets.training import (
    TrainState,
    init_train_state,
    make_train_step,
    num_params,
    split_model,
)
from nca_widgets.views import LIVE_EVAL_SIZE, PROBE_NOISE, Views, evaluate, psnr

log = logging.getLogger("nca_widgets")

# Trainers whose worker thread may still be inside JAX: closed at interpreter exit, since a
# daemon thread killed mid-computation aborts the process ("terminate called ...").
_LIVE: weakref.WeakSet[LiveTrainer] = weakref.WeakSet()


@atexit.register
def close_all(timeout: float | None = 30) -> None:
    """Close every LiveTrainer of this process, e.g. before re-running a notebook's first cell."""
    for trainer in list(_LIVE):
        trainer.close(timeout=timeout)

_READBACK_S = 0.1  # read metrics back once this much work is in flight


class TrainingError(RuntimeError):
    """Raised by `wait()` when the training thread failed; the cause is chained."""


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


class _Throttle:
    """When an expensive view is due: at most every `min_s`, and at most `share` of wall time.

    The wait after a run is its cost / share (capped at a minute), so a view that got slower
    runs less often; the first run's cost, mostly compiling, is not counted.
    """

    def __init__(self, min_s: float, share: float):
        self.min_s, self.share = min_s, share
        self.next, self.runs = 0.0, 0

    def due(self) -> bool:
        return time.perf_counter() >= self.next

    def run(self, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:  # a run that raised waits too, so a failing view is not retried at once
            now = time.perf_counter()
            cost = now - started if self.runs else 0.0
            self.runs += 1
            self.next = now + min(60.0, max(self.min_s, cost / self.share))


class _Publisher:
    """Hands the newest snapshot to subscribers on its own thread; older ones are dropped."""

    def __init__(self):
        self._subscribers: dict[int, Callable[[Snapshot], None]] = {}
        self._next_id = 0
        self._latest: Snapshot | None = None
        self._closed = False
        self._cond = threading.Condition()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._loop, name="nca-publisher", daemon=True)
        self.thread.start()

    def subscribe(self, fn: Callable[[Snapshot], None]) -> Callable[[], None]:
        with self._cond:
            sid, self._next_id = self._next_id, self._next_id + 1
            self._subscribers[sid] = fn
        return lambda: self._subscribers.pop(sid, None)

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def offer(self, snapshot: Snapshot) -> None:
        with self._cond:
            self._latest = snapshot
            self._cond.notify()

    def close(self) -> None:
        """End the thread once the snapshot on offer (if any) is delivered."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._latest is None and not self._closed:
                    self._cond.wait()
                if self._latest is None:
                    return
                snapshot, self._latest = self._latest, None
                subscribers = list(self._subscribers.items())
            for sid, fn in subscribers:
                try:
                    fn(snapshot)
                except Exception:  # reported, unsubscribed; training goes on
                    message = f"subscriber {fn!r} raised and was unsubscribed:\n"
                    self.errors.append(message + traceback.format_exc())
                    log.exception("subscriber %r raised and was unsubscribed", fn)
                    self._subscribers.pop(sid, None)


@dataclasses.dataclass
class _Probe:
    """Which digit the probe rolls out, and the device rollout for the current parameters."""

    index: int
    split: str
    channel: int
    states: Any = None  # device rollout (sa-nca: all states; rrcnn: estimates)
    seed_picture: Any = None
    step: int = -1  # train step of `states`
    view: VolumeProbe | FrameProbe | None = None


class LiveTrainer:
    """A training run of `sa-nca` or `rrcnn` that trains in a background thread.

    Example:
        trainer = LiveTrainer("sa-nca", preset="cpu", seed=0)
        trainer.start()          # returns at once
        trainer.pause(); trainer.advance(3); trainer.learning_rate = 3e-4; trainer.resume()
        trainer.wait()           # re-raises a training error
    """

    def __init__(
        self,
        system: str = "sa-nca",
        preset: str = "auto",
        *,
        seed: int = 0,
        run_dir: str | os.PathLike | None = None,
        data: str = "auto",
        digits: Digits | None = None,
        publish_hz: float = 4.0,
        checkpoint_every: int | None = None,
        keep_checkpoints: int = 3,
        probe_index: int = 0,
        **overrides: Any,
    ):
        """Build a run (status 'idle'); `overrides` are config fields, e.g. `num_steps=24`.

        Args:
            system: 'sa-nca' or 'rrcnn'.
            preset: 'seed' (the notebook), 'cpu', 'tiny' or 'auto' (seed on a GPU, else cpu).
            seed: draws the parameters, pool and every train step's randomness.
            run_dir: where checkpoints and `metrics.jsonl` go; None keeps nothing on disk.
            data: 'auto', 'bundled' or 'mnist' (downloaded if missing; see
                `nca_widgets.data.load_digits`).
            digits: use these digits instead of loading `data`.
            publish_hz: most snapshots per second handed to subscribers.
            checkpoint_every: also save every this many steps (needs `run_dir`).
            keep_checkpoints: how many checkpoints to keep in `run_dir`.
            probe_index: the test digit the probe rollout shows at first.
            **overrides: config fields.
        """
        restored = overrides.pop("_restored", None)  # (state, history, lr_scale) from restore()
        self.config: Config = make_config(system, preset, **overrides)
        self.system, self.preset, self.seed = system, preset, seed
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.data_source = data
        # 'mnist' asks for full MNIST: fetched through torchvision when it is not on disk.
        self.digits = digits or load_digits(data, size=self.config.spatial_dims[:2],
                                            download=data == "mnist")
        size = tuple(self.config.spatial_dims[:2])
        if self.digits.train_images.shape[1:] != size:
            raise ValueError(
                f"the digits are {self.digits.train_images.shape[1:]} images but the config's "
                f"cells are {size}; load them with load_digits(size={size})"
            )
        self.publish_hz, self.checkpoint_every = publish_hz, checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        if checkpoint_every is not None and self.run_dir is None:
            raise ValueError("checkpoint_every needs a run_dir to write checkpoints to")
        if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) \
                or keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be at least 1; got {keep_checkpoints!r}")

        self.task = make_task(self.config)
        self._images = jnp.asarray(self.digits.train_images)
        self._test_images = jnp.asarray(self.digits.test_images)
        if restored is None:
            graphdef, self._state = init_train_state(self.task, seed, self._images)
            self._history, self._lr_scale = HistoryBuffer(), 1.0
        else:
            graphdef = split_model(self.task, self.task.build_model(nnx.Rngs(0)))[0]
            self._state, self._history, self._lr_scale = restored
        self._train_step = make_train_step(self.task, graphdef)
        self._views = Views(self.task, graphdef)
        n_test = len(self.digits.test_images)
        if not 0 <= probe_index < n_test:
            raise ValueError(f"probe_index must be in [0, {n_test}); got {probe_index}")
        self._probe = _Probe(probe_index, "test", self.config.channel_size - 1)

        self._step = int(self._state.step)
        self._status = "idle" if restored is None else "paused"
        self._message: str | None = None
        self._error: BaseException | None = None
        self._traceback: str | None = None
        self._budget = 0  # steps left to run: num_train_steps - step while running, n in advance
        self._steps_per_s = 0.0
        self._wall0: float | None = None
        self._wall_offset = float(self._history.view().wall_s[-1]) if self._step else 0.0
        self._pool_view: PoolView | None = None
        self._pool_step = -1  # train step of `_pool_view`
        self._next_publish = 0.0
        # Rollouts for the pool view (rrcnn) and the probe cost device time: together they may
        # take at most 1.5% of it, so that watching a run does not slow it down.
        self._pool_timer, self._probe_timer = _Throttle(0.5, 0.005), _Throttle(2.0, 0.01)
        # The live evaluation adds its own 1%: a few points a minute on the loss plot.
        self._eval_timer = _Throttle(5.0, 0.01)
        self._eval_points: list[tuple[int, float]] = []  # (step, error) while someone watched
        self._eval_track: EvalTrack | None = None
        self._mean_digit = jnp.mean(self._images, axis=0)
        self._settled = threading.Condition()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False  # set by the worker, under _post_lock, when it handles "close"
        self._post_lock = threading.Lock()
        self._publisher = _Publisher()
        self._worker = threading.Thread(target=self._loop, name="nca-trainer", daemon=True)
        self._worker.start()
        _LIVE.add(self)

    # ----------------------------------------------------------------- public API

    @property
    def status(self) -> str:
        """'idle' | 'running' | 'paused' | 'finished' | 'stopped' | 'failed'."""
        return self._status

    @property
    def step(self) -> int:
        """Train steps done (read back from the device)."""
        return self._step

    @property
    def steps_per_s(self) -> float:
        """Recent training speed (a moving average over read-backs)."""
        return self._steps_per_s

    @property
    def message(self) -> str | None:
        """Why the trainer paused or failed, in full; None when all is well."""
        return self._message

    @property
    def error(self) -> BaseException | None:
        """The exception that failed the training thread, if any."""
        return self._error

    @property
    def learning_rate(self) -> float:
        """The learning rate of the next step: the notebook schedule times a live factor."""
        return self._scheduled_lr(self._step) * self._lr_scale

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        value = float(value)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"learning_rate must be a positive number; got {value!r}")
        # From here on the schedule keeps its shape, scaled so that the next step uses `value`.
        self._lr_scale = value / self._scheduled_lr(self._step)

    def _scheduled_lr(self, step: int) -> float:
        """The notebook schedule at `step`, in plain Python (as `training.lr_schedule`)."""
        cfg = self.config
        end = cfg.learning_rate * cfg.lr_end_factor
        frac = 1.0 - min(step, cfg.lr_transition_steps) / cfg.lr_transition_steps
        return (cfg.learning_rate - end) * frac + end

    @property
    def history(self) -> History:
        """Step, loss, learning rate and wall time of every train step so far."""
        return self._history.view()

    @property
    def subscriber_errors(self) -> list[str]:
        """Tracebacks of subscribers that raised and were unsubscribed."""
        return list(self._publisher.errors)

    def start(self) -> None:
        """Start training (from 'idle' or 'paused'); returns at once."""
        if self._status in ("finished", "stopped", "failed"):
            raise RuntimeError(
                f"this trainer is {self._status}; build a new LiveTrainer or restore a checkpoint"
            )
        others = [t for t in _LIVE if t is not self and t.status == "running"]
        if others:
            warnings.warn(
                f"{len(others)} other trainer(s) still train in this process and share its "
                f"device: {', '.join(map(repr, others))}. Close them with their close(), or "
                "all at once with nca_widgets.close_all() before building this one.",
                NCAWidgetsWarning, stacklevel=2,
            )
        self._post("run")

    def resume(self) -> None:
        """Continue after a pause; returns at once. Does nothing once the run has ended."""
        if self._status not in ("finished", "stopped", "failed"):
            self._post("run")

    def pause(self, wait: bool = True, timeout: float | None = None) -> None:
        """Pause at the next train-step boundary; with `wait`, return once paused."""
        if wait:
            self._ask("pause", timeout=timeout)
        else:
            self._post("pause")

    def advance(self, n: int = 1, wait: bool = False, timeout: float | None = None) -> None:
        """While paused (or idle): run exactly `n` more train steps, then pause again."""
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"advance takes a positive whole number of steps; got {n!r}")
        target = self._step + n
        self._post("advance", n)
        if wait:
            self._wait_for(lambda: self._step >= target or self._status not in
                           ("running", "paused", "idle"), timeout)

    def stop(self) -> None:
        """Finish the current step, then stop for good; idempotent."""
        self._post("stop")

    def wait(self, timeout: float | None = None) -> str:
        """Block until finished, stopped or failed; re-raise a training error; return the status."""
        self._wait_for(lambda: self._status in ("finished", "stopped", "failed"), timeout)
        if self._status == "failed":
            raise TrainingError(f"training failed at step {self._step}:\n{self._traceback}") \
                from self._error
        return self._status

    def subscribe(self, fn: Callable[[Snapshot], None]) -> Callable[[], None]:
        """Call `fn(snapshot)` (on a publisher thread) for new snapshots; returns unsubscribe."""
        unsubscribe = self._publisher.subscribe(fn)
        self._post("publish")
        return unsubscribe

    def snapshot(self, timeout: float | None = 60) -> Snapshot:
        """The latest snapshot, computed now if none is fresh."""
        return self._ask("snapshot", timeout=timeout)

    def set_probe(self, index: int | None = None, split: str | None = "test",
                  channel: int | None = None) -> None:
        """Roll out digit `index` of `split` ('test' or 'train') and/or show `channel`.

        Either part may be left out (None) to keep it; a snapshot with the new probe follows.
        """
        if index is not None:
            images = self.digits.train_images if split == "train" else self.digits.test_images
            if split not in ("train", "test"):
                raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
            if not 0 <= index < len(images):
                raise ValueError(
                    f"probe index must be in [0, {len(images)}) for {split}; got {index}"
                )
        if channel is not None and not 0 <= channel < self.config.channel_size:
            raise ValueError(f"channel must be in [0, {self.config.channel_size}); got {channel}")
        self._post("probe", (index, split, channel))

    def save(self, path: str | os.PathLike | None = None, timeout: float | None = 600) -> Path:
        """Write a checkpoint (to `run_dir` when `path` is None) at a step boundary."""
        target = Path(path) if path is not None else self.run_dir
        if target is None:
            raise ValueError("save() needs a path, or a LiveTrainer built with run_dir=...")
        return self._ask("save", target, timeout=timeout)

    @property
    def num_params(self) -> int:
        """All parameters of the model (trained or not)."""
        return num_params(self._state.params) + num_params(self._state.frozen)

    @property
    def num_trainable_params(self) -> int:
        """The parameters the optimizer trains."""
        return num_params(self._state.params)

    def rollout(self, index: int = 0, split: str = "test", timeout: float | None = None):
        """A digit rolled out for 2 * num_steps with the current parameters, as float32 numpy.

        sa-nca: `(T, D, H, W, C)` states, ready for `VolumeScrubber`; rrcnn: `(T, H, W)`
        estimates, the noisy input first, ready for `FrameScrubber`. T = 2 * num_steps + 1.
        """
        images = self.digits.train_images if split == "train" else self.digits.test_images
        if split not in ("train", "test") or not 0 <= index < len(images):
            raise ValueError(f"rollout takes split 'train' or 'test' and an index in "
                             f"[0, {len(images)}); got {split!r}, {index!r}")
        return self._ask("rollout", (index, split), timeout=timeout)

    def evaluate(self, num_test_digits: int = 128, timeout: float | None = None) -> dict:
        """Test-set metrics of the current parameters (see `nca_widgets.views.evaluate`)."""
        if isinstance(num_test_digits, bool) or not isinstance(num_test_digits, int) \
                or num_test_digits < 1:
            raise ValueError(f"evaluate takes a positive number of test digits (at most "
                             f"{len(self.digits.test_images)} are used); got {num_test_digits!r}")
        return self._ask("evaluate", num_test_digits, timeout=timeout)

    @classmethod
    def restore(cls, path: str | os.PathLike, **kwargs: Any) -> LiveTrainer:
        """A paused trainer from a checkpoint (or a run directory's newest one).

        Config overrides in `kwargs` must match the checkpoint's config; a mismatch is refused
        with the names of the differing fields. Other keyword arguments are as for `__init__`.
        """
        arrays, meta = checkpoint.load(path)
        system, saved = meta["system"], meta["config"]
        config = make_config(system, "seed", **saved)
        asked = {k: kwargs.pop(k) for k in list(kwargs) if hasattr(config, k)}
        preset = kwargs.pop("preset", None)
        if asked or preset:
            # A preset stands for its whole config; bare overrides are checked field by field.
            base = {} if preset else saved
            wanted = make_config(system, preset or "seed", **{**base, **asked})
            differ = config_diff(config, wanted)
            if differ:
                raise ConfigError(
                    f"checkpoint {path} was trained with a different config: "
                    + ", ".join(f"{k} ({getattr(config, k)!r} there, {getattr(wanted, k)!r} "
                                f"asked)" for k in differ)
                )
        kwargs.setdefault("seed", meta["seed"])
        kwargs.setdefault("data", meta["data"])
        task = make_task(config)
        template = jax.eval_shape(
            lambda: init_train_state(task, 0, jnp.zeros((1, *config.spatial_dims[:2])))[1]
        )
        state = _unflatten_state(template, arrays, path)
        history = HistoryBuffer.from_arrays(arrays)
        restored = (state, history, float(meta["lr_scale"]))
        return cls(system, meta["preset"], _restored=restored, **saved, **kwargs)

    def close(self, timeout: float | None = 60) -> None:
        """Stop training and end its threads; widgets show it stopped. Idempotent.

        A closed trainer refuses further commands; requests still queued get an error.
        """
        if self._worker.is_alive():
            self._post("close")
            self._worker.join(timeout)
        _LIVE.discard(self)

    def __repr__(self) -> str:
        return (f"LiveTrainer({self.system!r}, preset={self.preset!r}, status={self._status!r}, "
                f"step={self._step}/{self.config.num_train_steps})")

    # ----------------------------------------------------------------- caller side

    def _post(self, kind: str, arg: Any = None, reply: Future | None = None) -> None:
        with self._post_lock:
            if self._closed and kind != "close":
                raise RuntimeError("this trainer is closed; build a new LiveTrainer or "
                                   "restore a checkpoint")
            self._commands.put((kind, arg, reply))

    def _ask(self, kind: str, arg: Any = None, timeout: float | None = None) -> Any:
        reply: Future = Future()
        self._post(kind, arg, reply)
        return reply.result(timeout)

    def _wait_for(self, done: Callable[[], bool], timeout: float | None) -> None:
        with self._settled:
            if not self._settled.wait_for(done, timeout):
                raise TimeoutError(f"timed out after {timeout} s; status {self._status!r}")

    # ----------------------------------------------------------------- worker side

    def _set(self, **fields: Any) -> None:
        """Change status fields and wake waiters (worker thread only)."""
        with self._settled:
            for name, value in fields.items():
                setattr(self, name, value)
            self._settled.notify_all()

    def _loop(self) -> None:
        while True:
            training = self._budget > 0 and self._status == "running"
            try:
                kind, arg, reply = self._commands.get(block=not training, timeout=None)
            except queue.Empty:
                kind, arg, reply = None, None, None
            if kind == "close":
                self._shut_down()
                return
            try:
                if kind is not None:
                    self._handle(kind, arg, reply)
                elif self._status == "running":
                    self._train()
                self._maybe_publish()
            except Exception as e:  # surfaced by wait() and in snapshots, never swallowed
                if reply is not None and not reply.done():  # the caller gets it; training goes on
                    reply.set_exception(e)
                else:
                    self._fail(e)

    def _shut_down(self) -> None:
        """Stop for good: answer what is still queued, show the end, end the publisher."""
        with self._post_lock:
            self._closed = True
        self._set(_budget=0, _status=_after_stop(self._status))
        while True:
            try:
                _, _, reply = self._commands.get_nowait()
            except queue.Empty:
                break
            if reply is not None:
                reply.set_exception(RuntimeError("the trainer was closed before answering"))
        if self._publisher.active:
            self._publisher.offer(self._shell_with_views())
        self._publisher.close()

    def _handle(self, kind: str, arg: Any, reply: Future | None) -> None:
        terminal = self._status in ("finished", "stopped", "failed")
        if kind in ("run", "advance") and not terminal:
            self._clear_halt()
            left = self.config.num_train_steps - self._step
            budget = left if kind == "run" else min(arg, left)
            status = "running" if budget > 0 else "finished"
            self._set(_status=status, _message=None, _budget=budget)
            self._publish_now()
        elif kind == "pause":
            pausing = self._status in ("running", "idle")
            if pausing:
                self._set(_status="paused", _budget=0)
            if reply is not None:  # paused now: the caller need not wait for the views below
                reply.set_result(None)
            if pausing:
                self._publish_now()
        elif kind == "stop" and not terminal:
            self._set(_status="stopped", _budget=0)
            self._publish_now()
        elif kind == "publish":
            self._publish_now()
        elif kind == "probe":
            index, split, channel = arg
            p = self._probe
            if index is not None and (index, split) != (p.index, p.split):
                p.index, p.split, p.step = index, split, -1
            p.channel = p.channel if channel is None else channel
            self._publish_now(probe=True)
        elif kind == "snapshot":
            reply.set_result(self._make_snapshot(probe=self._probe.view is None))
        elif kind == "save":
            reply.set_result(self._save(arg))
        elif kind == "rollout":
            index, split = arg
            images = self._images if split == "train" else self._test_images
            states = np.asarray(jax.device_get(self._views.probe(self._state, images[index])[0]))
            reply.set_result(np.moveaxis(states, 3, 1) if self.system == "sa-nca" else states)
        elif kind == "evaluate":
            n = min(arg, len(self.digits.test_images))
            reply.set_result(evaluate(self._views, self._state, self._test_images[:n],
                                      self._mean_digit))

    def _train(self) -> None:
        """Dispatch steps until ~_READBACK_S of work is in flight, then read the metrics back."""
        started = time.perf_counter()
        if self._wall0 is None:
            self._wall0 = started - self._wall_offset
        pending = []
        lr_scale = jnp.float32(self._lr_scale)
        n = max(1, min(self._budget, round(_READBACK_S * self._steps_per_s)))
        for _ in range(n):
            self._state, metrics = self._train_step(self._state, self._images, lr_scale)
            pending.append(metrics)
        metrics = jax.device_get(pending)
        now = time.perf_counter()
        done = [m for m in metrics if m.step >= 0]
        steps = np.array([m.step for m in done], np.int64)
        losses = np.array([m.loss for m in done], np.float32)
        self._history.extend(step=steps, loss=losses, lr=np.array([m.lr for m in done]),
                             wall_s=np.full(len(done), now - self._wall0))
        rate = len(metrics) / max(now - started, 1e-9)
        self._steps_per_s = rate if not self._steps_per_s else 0.7 * self._steps_per_s + 0.3 * rate
        self._write_metrics(steps, losses, done, now)
        halted_at = int(self._state.halted_at)
        step = int(steps[-1]) if len(steps) else self._step
        budget = self._budget - len(done)
        if halted_at >= 0:
            self._set(_step=step, _budget=0, _status="paused", _message=(
                f"non-finite loss or gradient at step {halted_at}: that update was skipped and "
                f"the parameters kept from step {halted_at - 1}. Training is paused; lower the "
                f"learning rate (now {self.learning_rate:.3g}) and resume."))
            self._publish_now()
        elif step >= self.config.num_train_steps:
            self._step = step
            if self.run_dir is not None:  # before 'finished', which releases wait()
                self._save(self.run_dir)
            self._set(_budget=0, _status="finished")
            self._publish_now()
        elif budget <= 0:
            self._set(_step=step, _budget=0, _status="paused")
            self._publish_now()
        else:
            self._set(_step=step, _budget=budget)
        if self.checkpoint_every and step // self.checkpoint_every > \
                (step - len(done)) // self.checkpoint_every and self._status == "running":
            self._save(self.run_dir)

    def _clear_halt(self) -> None:
        if int(self._state.halted_at) >= 0:
            self._state = self._state._replace(halted_at=jnp.full((), -1, jnp.int32))

    def _fail(self, error: BaseException) -> None:
        tb = "".join(traceback.format_exception(error))
        self._set(_status="failed", _budget=0, _error=error, _traceback=tb,
                  _message=f"training failed at step {self._step}: "
                           f"{type(error).__name__}: {error}\n\n{tb}")
        log.error("nca_widgets training failed at step %d:\n%s", self._step, tb)
        self._publish_now()

    def _write_metrics(self, steps, losses, done, now) -> None:
        if self.run_dir is None or not len(steps):
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            for s, loss, m in zip(steps, losses, done, strict=True):
                row = {"step": int(s), "loss": float(loss) if np.isfinite(loss) else None,
                       "lr": float(m.lr), "wall_s": round(now - self._wall0, 4)}
                f.write(json.dumps(row) + "\n")

    def _save(self, target: Path) -> Path:
        if self._status == "failed":
            raise RuntimeError(
                f"the trainer failed at step {self._step}; its state may be incomplete, so it "
                "is not saved. Restore the last checkpoint instead."
            )
        arrays = {**_flatten_state(jax.device_get(self._state)), **self._history.to_arrays()}
        meta = {
            "system": self.system, "preset": self.preset, "seed": self.seed,
            "data": self.data_source, "config": config_to_dict(self.config),
            "lr_scale": self._lr_scale, "status": self._status,
        }
        return checkpoint.save(target, self._step, arrays, meta, keep=self.keep_checkpoints)

    # ----------------------------------------------------------------- snapshots

    def _maybe_publish(self) -> None:
        if self._publisher.active and time.perf_counter() >= self._next_publish:
            self._publish_now()

    def _publish_now(self, probe: bool = False) -> None:
        """Offer a snapshot to subscribers, if any; `probe` forces a fresh probe rollout.

        If the pool view or probe cannot be brought up to date, the snapshot keeps the last
        ones and its message says why; training goes on.
        """
        if not self._publisher.active:
            return
        try:
            snapshot = self._make_snapshot(probe)
        except Exception as error:
            text = f"the live views could not be updated: {type(error).__name__}: {error}"
            if self._message != text:
                log.exception("nca_widgets: %s", text)
            if self._status != "failed":  # a training failure's message stays
                self._set(_message=text)
            snapshot = self._shell_with_views()
        self._publisher.offer(snapshot)

    def _shell_with_views(self) -> Snapshot:
        """A snapshot of the status with the pool view and probe as they are (no rollouts)."""
        return dataclasses.replace(self._snapshot_shell(), pool=self._pool_view,
                                   probe=self._probe.view, evaluation=self._eval_track)

    def _make_snapshot(self, probe: bool) -> Snapshot:
        """Build a snapshot, recomputing the pool view and probe when stale and due.

        Both are brought up to date whenever training rests (paused, finished, ...); `probe`
        forces the probe.
        """
        self._next_publish = time.perf_counter() + 1.0 / self.publish_hz
        resting = self._status != "running"
        if self._pool_view is None or (
            self._pool_step != self._step and (resting or self._pool_timer.due())
        ):
            self._pool_view = self._pool_timer.run(self._compute_pool_view)
            self._pool_step = self._step
        last_eval = self._eval_points[-1][0] if self._eval_points else -1
        if last_eval != self._step and (resting or self._eval_timer.due()):
            self._eval_timer.run(self._compute_eval)
        p = self._probe
        if p.view is None or (
            p.step != self._step and (probe or resting or self._probe_timer.due())
        ):
            self._probe_timer.run(self._compute_probe)
        elif isinstance(p.view, VolumeProbe) and p.view.channel != p.channel:
            self._refresh_probe_view()
        return self._shell_with_views()

    def _snapshot_shell(self) -> Snapshot:
        return Snapshot(
            system=self.system, step=self._step, total_steps=self.config.num_train_steps,
            status=self._status, message=self._message, learning_rate=self.learning_rate,
            steps_per_s=self._steps_per_s, history=self._history.view(), pool=None, probe=None,
        )

    def _compute_pool_view(self) -> PoolView:
        targets, renders, losses, digits = jax.device_get(
            self._views.pool_view(self._state, self._images, self._test_images)
        )
        order = worst_first(losses)
        return PoolView(
            targets=frozen(targets[order]), renders=frozen(renders[order]),
            losses=frozen(losses[order]), digit_indices=frozen(digits[order].astype(np.int64)),
            split="train" if self.system == "sa-nca" else "test",
        )

    def _compute_eval(self) -> None:
        """Add a point to the live evaluation track (see `Views.live_eval`)."""
        error, baseline = jax.device_get(self._views.live_eval(
            self._state, self._test_images[:LIVE_EVAL_SIZE], self._mean_digit))
        self._eval_points.append((self._step, float(error)))
        steps, values = zip(*self._eval_points, strict=True)
        name, baseline_name = self._views.live_eval_names
        self._eval_track = EvalTrack(
            name=name, step=frozen(np.array(steps, np.int64)),
            value=frozen(np.array(values, np.float32)), baseline=float(baseline),
            baseline_name=baseline_name,
        )

    def _compute_probe(self) -> None:
        p = self._probe
        images = self._images if p.split == "train" else self._test_images
        p.states, p.seed_picture = self._views.probe(self._state, images[p.index])
        p.step = self._step
        self._refresh_probe_view()

    def _refresh_probe_view(self) -> None:
        """Turn the device rollout into the snapshot's probe (uint8 on the host)."""
        p = self._probe
        images = self.digits.train_images if p.split == "train" else self.digits.test_images
        target = _uint8(images[p.index])
        if self.system == "sa-nca":
            volume, low, high = jax.device_get(self._views.channel_volume(p.states, p.channel))
            p.view = VolumeProbe(
                volume=frozen(volume), channel=p.channel, value_range=(float(low), float(high)),
                digit=frozen(target), probe_index=p.index, probe_split=p.split, step=p.step,
                depth_labels=self._views.depth_labels,
            )
        else:
            frames, noisy = jax.device_get((p.states, p.seed_picture))
            p.view = FrameProbe(
                frames=frozen(_uint8(frames)), noisy=frozen(_uint8(noisy)), target=frozen(target),
                psnr=frozen(np.asarray(psnr(frames, images[p.index]), np.float32)),
                noise_level=PROBE_NOISE, probe_index=p.index, probe_split=p.split, step=p.step,
            )


def _after_stop(status: str) -> str:
    return status if status in ("finished", "failed") else "stopped"


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)


def _flatten_state(state: TrainState) -> dict[str, np.ndarray]:
    """`{'state/<path>': array}` for every leaf; PRNG keys as their raw key data."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    out = {}
    for path, leaf in leaves:
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out["state/" + jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def _unflatten_state(template: TrainState, arrays: dict[str, np.ndarray], path) -> TrainState:
    """Rebuild a TrainState from `_flatten_state` output, checking names, shapes and dtypes."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for key_path, spec in paths:
        name = "state/" + jax.tree_util.keystr(key_path)
        if name not in arrays:
            raise checkpoint.CheckpointError(f"checkpoint {path} lacks {name}; was it written "
                                             "by another version of nca_widgets?")
        value = arrays[name]
        if jax.dtypes.issubdtype(spec.dtype, jax.dtypes.prng_key):
            leaves.append(jax.random.wrap_key_data(jnp.asarray(value)))
            continue
        if value.shape != spec.shape or value.dtype != spec.dtype:
            raise checkpoint.CheckpointError(
                f"checkpoint {path}: {name} is {value.dtype}{list(value.shape)}, expected "
                f"{spec.dtype}{list(spec.shape)}"
            )
        leaves.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, leaves)
