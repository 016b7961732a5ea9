"""LiveTrainer: a training run in a background thread, steerable from any thread.

One worker thread owns every JAX call after construction. The public methods only post commands
to it (run, pause, advance, stop, learning rate, probe, save, ...) and, where they return a
result, wait for its answer. The worker dispatches train steps asynchronously and reads their
metrics back in batches; it builds snapshots (`snapshots.SnapshotBuilder`) at most `publish_hz`
times a second, only while someone subscribes, and a `Publisher` thread hands the newest one to
subscribers, so a slow subscriber misses snapshots instead of slowing training.

Across processes (`nca_widgets.parallel`) every process runs a trainer, and they must run the
same train steps and collectives in the same order. Process 0's trainer leads: at each chunk
boundary (and every `_POLL_S` while paused) it broadcasts the commands it was given, and the
size of the next chunk, to the others, which apply them at the same point and take no commands
of their own but queries (`_LOCAL`). So a notebook attached to process 0 steers the whole run.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import queue
import threading
import time
import traceback
import uuid
import warnings
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nca_widgets import NCAWidgetsWarning, checkpoint, parallel, pretrained, training
from nca_widgets.config import ConfigError, config_diff, config_to_dict, resolve_preset
from nca_widgets.data import Digits
from nca_widgets.history import HistoryBuffer
from nca_widgets.periodic import When
from nca_widgets.publisher import Publisher
from nca_widgets.registry import make_system, names
from nca_widgets.snapshot import History, Rollout, Snapshot
from nca_widgets.snapshots import SnapshotBuilder
from nca_widgets.state_io import flatten_state, unflatten_state
from nca_widgets.system import INJECT_COUNT, Examples, System, check_system
from nca_widgets.training import (
    TrainState,
    init_train_state,
    lr_schedule,
    make_train_step,
    num_params,
    place,
    split_model,
)
from nca_widgets.views import Views, evaluate

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
_POLL_S = 0.1  # across processes: how often a paused process 0 tells the others what to do
# Commands that only answer this process's caller; every other one changes the run, so across
# processes only process 0 takes them, and every process applies them at the same step.
_LOCAL = frozenset({"publish", "snapshot", "rollout", "evaluate", "params", "prepare_edits"})
_INJECT_SEED = 4322  # keys of injected edits (the noise brush): fixed, so runs repeat
_TERMINAL = ("finished", "stopped", "failed")


class TrainingError(RuntimeError):
    """Raised by `wait()` when the training thread failed; the cause is chained."""


class LiveTrainer:
    """A training run of any system that trains in a background thread.

    Example:
        trainer = LiveTrainer("sa-nca", preset="cpu", seed=0)   # or LiveTrainer(MySystem(...))
        trainer.start()          # returns at once
        trainer.pause(); trainer.advance(3); trainer.learning_rate = 3e-4; trainer.resume()
        trainer.wait()           # re-raises a training error
    """

    def __init__(
        self,
        system: str | System,
        preset: str = "auto",
        *,
        seed: int = 0,
        run_dir: str | os.PathLike | None = None,
        data: str = "auto",
        examples: Examples | Digits | None = None,
        optimizer: optax.GradientTransformation | None = None,
        schedule: optax.Schedule | None = None,
        publish_hz: float = 4.0,
        checkpoint_every: int | None = None,
        keep_checkpoints: int = 3,
        probe_index: int = 0,
        devices: int | None = None,
        init: str = "random",
        **overrides: Any,
    ):
        """Build a fresh run (status 'idle').

        Args:
            system: a registered name ('sa-nca', 'rrcnn', 'growing', or one given to
                `nca_widgets.registry.register`), `package.module:factory`, or a `System`.
            preset: for a named system: 'seed' (the reference), 'cpu', 'tiny' or 'auto' (seed
                on a GPU, else cpu).
            seed: draws the parameters, pool and every train step's randomness.
            run_dir: where checkpoints and `metrics.jsonl` go; None keeps nothing on disk. It
                must not hold another run (`nca_widgets.new_run_dir()` makes a fresh one).
            data: the examples' source, for systems that load their own (MNIST: 'auto',
                'bundled' or 'mnist', downloaded if missing; see `nca_widgets.load_digits`).
            examples: train on these instead (`Examples(train, test)`, or `Digits`).
            optimizer: an optax transformation without the learning rate (default: clipping
                and Adam, as the notebooks).
            schedule: the learning rate per step (default: the config's linear decay).
            publish_hz: most snapshots per second handed to subscribers.
            checkpoint_every: also save every this many steps (needs `run_dir`).
            keep_checkpoints: how many checkpoints to keep in `run_dir`.
            probe_index: the test example the probe rollout shows at first.
            devices: train data parallel on this many local devices (default: all of them;
                see `nca_widgets.parallel`); the pool and batch sizes must be multiples of
                the number of devices in all processes.
            init: 'random' (drawn from `seed`) or 'pretrained': start from the parameters
                shipped for this system and preset (`nca_widgets.pretrained`), at the learning
                rate its schedule ends with.
            **overrides: config fields of a named system, e.g. `num_steps=24`.
        """
        if init not in ("random", "pretrained"):
            raise ValueError(f"init must be 'random' or 'pretrained'; got {init!r}")
        spec, system = _build_system(system, preset, overrides)
        examples = _examples(system, data, examples)
        tx = optimizer or training.optimizer()
        if run_dir is not None:  # a fresh run never writes into another run's directory
            checkpoint.check_run_dir(run_dir, None)
        graphdef, state = init_train_state(system, seed, jnp.asarray(examples.train), tx)
        lr_scale = 1.0
        if init == "pretrained":
            params = pretrained.load(system, resolve_preset(preset), state.params)[0]
            state = state._replace(params=params, opt_state=tx.init(params))
            lr_scale = getattr(system.config, "lr_end_factor", 1.0)
        self._setup(
            system, spec, preset, seed, data, examples, graphdef, state, HistoryBuffer(), lr_scale,
            tx, schedule, "idle", run_dir, publish_hz, checkpoint_every, keep_checkpoints,
            probe_index, uuid.uuid4().hex, devices,
        )

    @classmethod
    def restore(cls, path: str | os.PathLike, *, system: System | None = None,
                data: str | None = None, examples: Examples | Digits | None = None,
                optimizer: optax.GradientTransformation | None = None,
                schedule: optax.Schedule | None = None, publish_hz: float = 4.0,
                checkpoint_every: int | None = None, keep_checkpoints: int = 3,
                probe_index: int = 0, run_dir: str | os.PathLike | None = None,
                preset: str | None = None, devices: int | None = None,
                **overrides: Any) -> LiveTrainer:
        """A paused trainer from a checkpoint (or a run directory's newest one).

        A named system is built again from the checkpoint's config; pass `system` for one that
        was given as an object. The examples come from the checkpoint's data source unless
        `data` or `examples` says otherwise. Config overrides (or a `preset`) must match the
        checkpoint's config; a mismatch is refused with the names of the differing fields.
        It trains on `devices` local devices (default: all), however many saved it.
        """
        arrays, meta = checkpoint.load(path)
        saved = meta["config"]
        spec = meta.get("spec", meta["system"] if meta["system"] in names() else None)
        if system is None:
            if spec is None:
                raise ValueError(f"checkpoint {path} holds a {meta['system']!r} run built from a "
                                 "System object; pass that system: restore(path, system=...)")
            system = make_system(spec, "auto", **saved)
            if overrides or preset:
                # A preset stands for its whole config; bare overrides are checked field by field.
                asked = {**({} if preset else saved), **overrides}
                wanted = make_system(spec, preset or "auto", **asked).config
                _refuse_other_config(path, system.config, wanted)
        else:
            check_system(system)
            differ = sorted(k for k, v in config_to_dict(system.config).items()
                            if saved.get(k) != v)
            if differ or system.name != meta["system"]:
                raise ConfigError(f"checkpoint {path} holds a {meta['system']!r} run with a "
                                  f"different config: {', '.join(differ) or 'its name'}")
        data = data or meta["data"]
        examples = _examples(system, data, examples)
        tx = optimizer or training.optimizer()
        graphdef = split_model(system, system.build_model(nnx.Rngs(0)))[0]
        template = jax.eval_shape(
            lambda: init_train_state(system, 0, jnp.asarray(examples.train), tx)[1])
        state = unflatten_state(template, arrays, path)
        run_id = meta.get("run_id") or uuid.uuid4().hex
        if run_dir is not None:  # its own directory, or a fresh one
            checkpoint.check_run_dir(run_dir, run_id)
        self = cls.__new__(cls)
        self._setup(
            system, spec, meta["preset"], meta["seed"], data, examples, graphdef,
            state, HistoryBuffer.from_arrays(arrays), float(meta["lr_scale"]), tx, schedule,
            "paused", run_dir, publish_hz, checkpoint_every, keep_checkpoints, probe_index,
            run_id, devices,
        )
        return self

    def _setup(self, system: System, spec: str | None, preset: str, seed: int, data: str,
               examples: Examples, graphdef: nnx.GraphDef, state: TrainState,
               history: HistoryBuffer, lr_scale: float, tx: optax.GradientTransformation,
               schedule: optax.Schedule | None, status: str, run_dir: Any, publish_hz: float,
               checkpoint_every: int | None, keep_checkpoints: int, probe_index: int,
               run_id: str, devices: int | None) -> None:
        """What both constructors share: the run's parts, then the worker thread."""
        self.system, self.spec, self.config, self.run_id = system, spec, system.config, run_id
        self.preset, self.seed, self.data_source, self.examples = preset, seed, data, examples
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if checkpoint_every is not None and (
            isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
            or checkpoint_every < 1
        ):
            raise ValueError(f"checkpoint_every must be a positive number of steps; got "
                             f"{checkpoint_every!r}")
        if checkpoint_every is not None and self.run_dir is None:
            raise ValueError("checkpoint_every needs a run_dir to write checkpoints to")
        if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) \
                or keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be at least 1; got {keep_checkpoints!r}")
        n_test = len(examples.test)
        if isinstance(probe_index, bool) or not 0 <= probe_index < n_test:
            raise ValueError(f"probe_index must be in [0, {n_test}); got {probe_index}")
        self._claimed = False  # whether run_dir is known to be this run's (metrics go there)
        self._start_step = int(state.step)  # where this trainer's branch of the run begins
        self.publish_hz, self.checkpoint_every = publish_hz, checkpoint_every
        self.keep_checkpoints = keep_checkpoints

        self._schedule = schedule or lr_schedule(system.config)
        self._mesh = parallel.make_mesh(devices)
        self._lockstep = jax.process_count() > 1
        self._follows = self._lockstep and not parallel.is_main_process()
        if self._lockstep and any(not other.closed for other in _LIVE):
            raise RuntimeError("a run across processes has one trainer per process, whose "
                               "collectives must not interleave with another's: close the "
                               "other one first (its close(), or nca_widgets.close_all())")
        parallel.check_same_everywhere((examples.train, examples.test), "examples")
        self._device = Examples(*parallel.put((examples.train, examples.test),
                                              parallel.replicated(self._mesh)))
        self._state = place(system, state, self._device.train, self._mesh)
        self._history, self._lr_scale = history, lr_scale
        self._train_step = make_train_step(system, graphdef, tx, self._schedule, self._mesh)
        self._views = Views(system, graphdef)
        self._inject_fn = jax.jit(system.inject, static_argnums=3, donate_argnums=0)
        state_shape = jax.eval_shape(system.seed_at, self._device.test[0],
                                     jax.random.key(0), None).shape
        self._snapshots = SnapshotBuilder(system, self._views, examples,
                                          parallel.local(self._device), probe_index, state_shape)

        self._step = int(state.step)
        self._lr = self._scheduled_lr(self._step) * lr_scale  # the next step's learning rate
        self._status = status
        self._message: str | None = None
        self._error: BaseException | None = None
        self._traceback: str | None = None
        self._budget = 0  # steps left to run: num_train_steps - step while running, n in advance
        self._advanced: Future | None = None  # answered when an advance(n, wait=True) is done
        self._steps_per_s = 0.0
        self._wall0: float | None = None
        self._wall_offset = float(history.view().wall_s[-1]) if len(history.view()) else 0.0
        self._publish_when = When(every_secs=1.0 / publish_hz)
        self._checkpoint_when = When(every_steps=checkpoint_every, start_step=self._step) \
            if checkpoint_every else None
        self._settled = threading.Condition()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False  # set by the worker, under _post_lock, when it handles "close"
        self._post_lock = threading.Lock()
        self._publisher = Publisher()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="nca-checkpoint-writer")
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
        """The learning rate of the next step: the schedule times a live factor."""
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.set_learning_rate(value, wait=True)

    def set_learning_rate(self, value: float, wait: bool = True,
                          timeout: float | None = None) -> None:
        """From the next step on, keep the schedule's shape, scaled so the next step uses `value`.

        The worker applies it between steps; with `wait`, return once it has.
        """
        value = float(value)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"learning_rate must be a positive number; got {value!r}")
        if wait:
            self._ask("set_lr", value, timeout=timeout)
        else:
            self._post("set_lr", value)

    @property
    def history(self) -> History:
        """Step, loss, learning rate and wall time of every train step so far."""
        return self._history.view()

    @property
    def subscriber_errors(self) -> list[str]:
        """Tracebacks of subscribers that raised and were unsubscribed."""
        return list(self._publisher.errors)

    @property
    def can_inject(self) -> bool:
        """Whether edits can go into the training pool (`inject`): the system has a pool."""
        pool = self._state.pool
        return bool(jax.tree.leaves(pool)) and self.system.can_inject(pool)

    @property
    def num_params(self) -> int:
        """All parameters of the model (trained or not)."""
        return num_params(self._state.params) + num_params(self._state.frozen)

    @property
    def num_trainable_params(self) -> int:
        """The parameters the optimizer trains."""
        return num_params(self._state.params)

    @property
    def num_devices(self) -> int:
        """The devices it trains on, in all processes together."""
        return self._mesh.size

    @property
    def closed(self) -> bool:
        """Whether the trainer is closed: its training thread has ended (see `close`)."""
        return not self._worker.is_alive()

    def params(self, timeout: float | None = None) -> nnx.State:
        """The trained parameters as numpy arrays, at the next train-step boundary.

        A closed trainer gives its final parameters.
        """
        if self._closed:  # no thread changes them any more
            return parallel.fetch(self._state.params)
        return self._ask("params", timeout=timeout)

    def start(self) -> None:
        """Start training (from 'idle' or 'paused'); returns at once."""
        if self._status in _TERMINAL:
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
        if self._status not in _TERMINAL:
            self._post("run")

    def pause(self, wait: bool = True, timeout: float | None = None) -> None:
        """Pause at the next train-step boundary; with `wait`, return once paused."""
        if wait:
            self._ask("pause", timeout=timeout)
        else:
            self._post("pause")

    def advance(self, n: int = 1, wait: bool = False, timeout: float | None = None) -> None:
        """While paused (or idle): run exactly `n` more train steps, then pause again.

        With `wait`, return once those steps are done (or the run ended first).
        """
        if isinstance(n, bool) or not (isinstance(n, int) and n >= 1):
            raise ValueError(f"advance takes a positive whole number of steps; got {n!r}")
        if wait:
            self._ask("advance", n, timeout=timeout)
        else:
            self._post("advance", n)

    def stop(self) -> None:
        """Finish the current step, then stop for good; idempotent."""
        self._post("stop")

    def wait(self, timeout: float | None = None) -> str:
        """Block until finished, stopped or failed; re-raise a training error; return the status."""
        self._wait_for(lambda: self._status in _TERMINAL, timeout)
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
        """A snapshot with pictures brought up to date now (a round trip to the training thread).

        If a picture cannot be computed, the snapshot keeps the last one and its message says
        why.
        """
        return self._ask("snapshot", timeout=timeout)

    def latest(self) -> Snapshot:
        """The run's status now, with the pictures last computed (None before the first).

        No round trip: what widgets show while they are built, whatever the training thread
        is doing; their subscription brings fresh pictures.
        """
        return self._snapshots.with_views(self._shell())

    def set_probe(self, index: int | None = None, split: str | None = "test",
                  channel: int | None = None, level: float | None = None) -> None:
        """Roll out example `index` of `split` ('test' or 'train') and/or show `channel`.

        `level`: where the system has levels (e.g. rrcnn's noise level), start from that one.
        Any part may be left out (None) to keep it; a snapshot with the new probe follows.
        """
        self._snapshots.check_probe(index, split, channel, level)
        self._post("probe", (index, split, channel, level))

    def edit(self, mask: Any, mode: str = "erase", time: int = 0,
             depth: int | None = None) -> None:
        """Brush the probe rollout: apply `mode` to the cells of `mask` at `time` (and `depth`).

        `mask`: (H, W) bool, one stroke; `mode`: 'erase', 'draw' or 'noise' (see
        `System.edit`); `time`: the rollout's time index; `depth`: for volume systems. The
        probe is rolled out again from the edited state (snapshots then show the edited rollout
        and its recovery curve beside the untouched one's), and again with new parameters while
        training runs. Strokes at one time add up; a stroke at another time starts afresh.
        """
        mask = np.asarray(mask, bool)
        self._snapshots.check_stroke(mask, mode, time, depth)
        self._post("edit", (mask, mode, int(time), None if depth is None else int(depth)))

    def clear_edits(self) -> None:
        """Show the untouched probe rollout again."""
        self._post("clear_edits")

    def prepare_edits(self) -> Future:
        """Compile the edited rollout now, so that the first brush stroke answers fast.

        Returns a Future that is done once it is compiled.
        """
        ready: Future = Future()
        self._post("prepare_edits", None, ready)
        return ready

    def inject(self, count: int = INJECT_COUNT, wait: bool = True,
               timeout: float | None = 60) -> int | Future:
        """Put the probe's edit into the training pool; returns the step it was applied at.

        At the next train-step boundary the edit (`System.inject`) is applied to `count` pool
        samples, so training teaches the automaton to repair that damage. Deterministic: the
        same injections at the same steps give bit-identical runs. With `wait=False`, returns
        a Future of that step at once.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive number of pool samples; got {count!r}")
        applied: Future = Future()
        self._post("inject", count, applied)
        return applied.result(timeout) if wait else applied

    def save(self, path: str | os.PathLike | None = None, wait: bool = True,
             timeout: float | None = 600) -> Path | Future:
        """Checkpoint the state at the next step boundary (into `run_dir` when `path` is None).

        Training goes on while the bytes are written: the training thread only copies the state
        on the device, a writer thread fetches and writes it (atomically, see `checkpoint`).
        With `wait`, return the checkpoint's path once it is on disk; else a Future of it.
        """
        target = Path(path) if path is not None else self.run_dir
        if target is None:
            raise ValueError("save() needs a path, or a LiveTrainer built with run_dir=...")
        written: Future = Future()
        self._post("save", target, written)
        return written.result(timeout) if wait else written

    def rollout(self, index: int = 0, split: str = "test", level: float | None = None,
                timeout: float | None = None) -> Rollout:
        """An example rolled out for 2 * num_steps with the current parameters (a `Rollout`).

        Its `states` are floats: volume systems `(T, D, H, W, C)` states, frame systems
        `(T, H, W)` pictures, the input first; T = 2 * num_steps + 1. `VolumeScrubber(rollout)`
        or `FrameScrubber(rollout)` shows it as the dashboard does. `level`: see `set_probe`.
        """
        self._snapshots.check_probe(index, split, None, level)
        return self._ask("rollout", (index, split, level), timeout=timeout)

    def evaluate(self, num_test_examples: int = 128, timeout: float | None = None) -> dict:
        """The system's test metrics with the current parameters, over the first test examples.

        See the system's `evaluate` (e.g. far-side MSE beside its baselines for sa-nca).
        """
        if isinstance(num_test_examples, bool) or not isinstance(num_test_examples, int) \
                or num_test_examples < 1:
            raise ValueError(f"evaluate takes a positive number of test examples (at most "
                             f"{len(self.examples.test)} are used); got {num_test_examples!r}")
        return self._ask("evaluate", num_test_examples, timeout=timeout)

    def close(self, timeout: float | None = 60) -> None:
        """Stop training and end its threads; widgets show it stopped. Idempotent.

        A closed trainer refuses further commands; requests still queued get an error. Across
        processes, closing process 0's trainer closes them all; the others' `close` waits for
        that (at most `timeout` seconds).
        """
        if self._worker.is_alive():
            if not self._follows:
                self._post("close")
            self._worker.join(timeout)
        _LIVE.discard(self)

    def __repr__(self) -> str:
        return (f"LiveTrainer({self.system.name!r}, preset={self.preset!r}, "
                f"status={self._status!r}, step={self._step}/{self.config.num_train_steps})")

    # ----------------------------------------------------------------- caller side

    def _post(self, kind: str, arg: Any = None, reply: Future | None = None) -> None:
        with self._post_lock:
            if self._closed and kind != "close":
                raise RuntimeError("this trainer is closed; build a new LiveTrainer or "
                                   "restore a checkpoint")
            if self._follows and kind not in _LOCAL:
                raise RuntimeError(
                    f"this is process {jax.process_index()} of a run across "
                    f"{jax.process_count()} processes, which follows process 0: steer the run "
                    "there (e.g. attach a notebook to its run directory)")
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
        if self._advanced is not None and (self._budget == 0 or self._status in _TERMINAL):
            self._advanced.set_result(None)  # the advance the caller waits for is over
            self._advanced = None

    def _loop(self) -> None:
        while True:
            training = self._budget > 0 and self._status == "running"
            mine = self._queued(wait=not training and not self._follows,
                                timeout=_POLL_S if self._lockstep else None)
            try:
                commands, pace = self._exchange(mine)
            except Exception as e:  # the processes lost one another: the run cannot go on
                self._fail(e)
                self._shut_down(mine)
                return
            for i, (kind, arg, reply) in enumerate(commands):
                if kind == "close":
                    self._shut_down(commands[i + 1:])
                    return
                self._guarded(functools.partial(self._COMMANDS[kind], self, arg, reply), reply)
            if self._status == "running":
                self._guarded(functools.partial(self._train, pace))
            if self._publisher.active and self._publish_when.due():
                self._guarded(self._publish_now)

    def _guarded(self, work: Callable[[], None], reply: Future | None = None) -> None:
        """Do `work`; an error goes to the caller waiting on `reply`, else fails the run."""
        try:
            work()
        except Exception as e:  # surfaced by wait() and in snapshots, never swallowed
            if reply is not None and not reply.done():  # the caller gets it; training goes on
                reply.set_exception(e)
            else:
                self._fail(e)

    def _exchange(self, mine: list) -> tuple[list[tuple[str, Any, Future | None]], float]:
        """The commands to apply now, in order, and the pace (steps/s) that sizes the next chunk.

        `mine`: the commands queued in this process. In one process, those. Across processes
        (see the module docstring) a collective: process 0's commands, its pace and whether it
        failed reach every process; each then adds its own queries. The other processes apply
        process 0's commands with a reply of their own where process 0 has one (an error then
        goes there, as on process 0), and fail when process 0 has failed, so that no process
        trains on alone.
        """
        if not self._lockstep:
            return mine, self._steps_per_s
        shared = [(kind, arg, reply is not None) for kind, arg, reply in mine
                  if kind not in _LOCAL]
        failed = self._message.splitlines()[0] if self._status == "failed" else None
        shared, pace, failed = parallel.broadcast((shared, self._steps_per_s, failed))
        if not self._follows:
            return mine, pace
        if failed and self._status != "failed":
            self._fail(RuntimeError(f"process 0 failed: {failed}"))
        return [(kind, arg, Future() if replied else None)
                for kind, arg, replied in shared] + mine, pace

    def _queued(self, wait: bool, timeout: float | None) -> list[tuple[str, Any, Future | None]]:
        """Every queued command, waiting up to `timeout` for a first one if `wait`."""
        commands = []
        try:
            commands.append(self._commands.get(block=wait, timeout=timeout))
            while True:
                commands.append(self._commands.get_nowait())
        except queue.Empty:
            return commands

    def _shut_down(self, unanswered: list = ()) -> None:
        """Stop for good: finish writing checkpoints, answer what is queued, end the publisher."""
        with self._post_lock:
            self._closed = True
        self._writer.shutdown(wait=True)
        self._set(_budget=0, _status=_after_stop(self._status))
        for _, _, reply in [*unanswered, *self._queued(wait=False, timeout=None)]:
            if reply is not None and not reply.done():
                reply.set_exception(RuntimeError("the trainer was closed before answering"))
        if self._publisher.active:
            self._publisher.offer(self._snapshots.with_views(self._shell()))
        self._publisher.close()

    # --- commands (worker thread) ----------------------------------------------------------

    def _run(self, arg: Any, reply: Future | None, n: int | None = None) -> None:
        if self._status in _TERMINAL:
            if reply is not None:
                reply.set_result(None)
            return
        self._clear_halt()
        left = self.config.num_train_steps - self._step
        budget = left if n is None else min(n, left)
        if self._advanced is not None:  # a new run or advance replaces the one waited for
            self._advanced.set_result(None)
        self._advanced = reply
        self._set(_status="running" if budget > 0 else "finished", _message=None, _budget=budget)
        self._publish_now()

    def _advance(self, n: int, reply: Future | None) -> None:
        self._run(None, reply, n)

    def _pause(self, arg: Any, reply: Future | None) -> None:
        pausing = self._status in ("running", "idle")
        if pausing:
            self._set(_status="paused", _budget=0)
        if reply is not None:  # paused now: the caller need not wait for the views below
            reply.set_result(None)
        if pausing:
            self._publish_now()

    def _stop(self, arg: Any, reply: Future | None) -> None:
        if self._status not in _TERMINAL:
            self._set(_status="stopped", _budget=0)
            self._publish_now()

    def _set_lr(self, value: float, reply: Future | None) -> None:
        self._lr_scale = value / self._scheduled_lr(self._step)
        self._lr = value
        if reply is not None:
            reply.set_result(None)
        self._publish_now()

    def _probe(self, arg: tuple, reply: Future | None) -> None:
        self._snapshots.set_probe(*arg)
        self._publish_now(probe=True)

    def _edit(self, arg: tuple, reply: Future | None) -> None:
        self._snapshots.add_stroke(*arg)
        self._publish_now(probe=True)

    def _clear_edits(self, arg: Any, reply: Future | None) -> None:
        self._snapshots.clear_edits()
        self._publish_now(probe=True)

    def _prepare_edits(self, arg: Any, reply: Future) -> None:
        self._snapshots.prepare_edits(parallel.local(self._state))
        reply.set_result(None)

    def _inject(self, count: int, reply: Future) -> None:
        edit = self._snapshots.probe.edit
        pool = self._state.pool
        if edit is None:
            raise ValueError("nothing to inject: brush the probe rollout first (edit)")
        if not self.can_inject:
            raise ValueError(f"{self.system.name} has no pool to inject into")
        size = jax.tree.leaves(pool)[0].shape[0]
        if count > size:
            raise ValueError(f"count must be at most the pool size, {size}; got {count}")
        key = jax.random.fold_in(jax.random.key(_INJECT_SEED), self._step)
        self._state = self._state._replace(pool=self._inject_fn(pool, edit, key, count))
        self._snapshots.pool_step = -1  # the next snapshot shows the pool as it is now
        reply.set_result(self._step)
        self._publish_now()

    def _answer_snapshot(self, arg: Any, reply: Future) -> None:
        reply.set_result(self._build_snapshot(probe=self._snapshots.probe.view is None))

    def _answer_save(self, target: Path, reply: Future) -> None:
        """Start the write; `reply` gets its path (or error) when the writer is done."""
        def answer(written: Future) -> None:
            error = written.exception()
            if error is None:
                reply.set_result(written.result())
            else:
                reply.set_exception(error)

        self._save(target).add_done_callback(answer)

    def _answer_rollout(self, arg: tuple[int, str, float | None], reply: Future) -> None:
        reply.set_result(self._snapshots.rollout(parallel.local(self._state), self._step, *arg))

    def _answer_evaluate(self, n: int, reply: Future) -> None:
        n = min(n, len(self.examples.test))
        train, test = parallel.local((self._device.train, self._device.test))
        subset = Examples(train, test[:n], self.examples.source)
        reply.set_result(evaluate(self._views, parallel.local(self._state), subset))

    def _answer_params(self, arg: Any, reply: Future) -> None:
        reply.set_result(parallel.fetch(self._state.params))

    _COMMANDS: dict[str, Callable[[LiveTrainer, Any, Future | None], None]] = {
        "run": _run, "advance": _advance, "pause": _pause, "stop": _stop, "set_lr": _set_lr,
        "probe": _probe, "publish": lambda self, arg, reply: self._publish_now(),
        "snapshot": _answer_snapshot, "save": _answer_save, "rollout": _answer_rollout,
        "evaluate": _answer_evaluate, "edit": _edit, "clear_edits": _clear_edits,
        "prepare_edits": _prepare_edits, "inject": _inject, "params": _answer_params,
    }

    # --- training (worker thread) ----------------------------------------------------------

    def _train(self, pace: float) -> None:
        """Dispatch ~_READBACK_S of steps at `pace` steps/s, then read their metrics back."""
        started = time.perf_counter()
        if self._wall0 is None:
            self._wall0 = started - self._wall_offset
        pending = []
        lr_scale = jnp.float32(self._lr_scale)
        n = max(1, min(self._budget, round(_READBACK_S * pace)))
        if self._checkpoint_when:  # periodic checkpoints fall on their steps, in every process
            n = min(n, self.checkpoint_every - self._step % self.checkpoint_every)
        for _ in range(n):
            self._state, metrics = self._train_step(self._state, self._device.train, lr_scale)
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
        halted_at = int(self._state.halted_at)
        step = int(steps[-1]) if len(steps) else self._step
        self._lr = self._scheduled_lr(step) * self._lr_scale
        budget = self._budget - len(done)
        if halted_at >= 0:
            self._set(_step=step, _budget=0, _status="paused", _message=(
                f"non-finite loss or gradient at step {halted_at}: that update was skipped and "
                f"the parameters kept from step {halted_at - 1}. Training is paused; lower the "
                f"learning rate (now {self.learning_rate:.3g}) and resume."))
            self._publish_now()
        elif step >= self.config.num_train_steps:
            self._step = step
            if self.run_dir is not None:  # on disk before 'finished', which releases wait()
                self._save(self.run_dir).result()
            self._set(_budget=0, _status="finished")
            self._publish_now()
        elif budget <= 0:
            self._set(_step=step, _budget=0, _status="paused")
            self._publish_now()
        else:
            self._set(_step=step, _budget=budget)
        self._write_metrics(steps, losses, done, now)
        if self._checkpoint_when and self._status == "running" and \
                self._checkpoint_when.due(step):
            written = self._checkpoint_when.run(lambda: self._save(self.run_dir), step)
            written.add_done_callback(self._report_failed_save)

    def _scheduled_lr(self, step: int) -> float:
        """The schedule's learning rate at `step` (the same optax schedule the step uses)."""
        return float(self._schedule(step))

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
        if self.run_dir is None or not len(steps) or not parallel.is_main_process():
            return
        self._claim_run_dir()
        with open(self.run_dir / checkpoint.METRICS_FILE, "a") as f:
            for s, loss, m in zip(steps, losses, done, strict=True):
                row = {"step": int(s), "loss": float(loss) if np.isfinite(loss) else None,
                       "lr": float(m.lr), "wall_s": round(now - self._wall0, 4)}
                f.write(json.dumps(row) + "\n")

    def _claim_run_dir(self) -> None:
        """Make run_dir this run's before this trainer first writes into it.

        A run continued from an older checkpoint sets aside what its directory held past that
        checkpoint (`checkpoint.set_aside`).
        """
        if self._claimed:
            return
        checkpoint.claim_run_dir(self.run_dir, self.run_id)
        aside = checkpoint.set_aside(self.run_dir, self._start_step)
        if aside is not None:
            log.warning("nca_widgets: this run continues from step %d in %s; its %d later "
                        "checkpoint(s) and %d metrics row(s) from before are in %s",
                        self._start_step, self.run_dir, aside[1], aside[2], aside[0])
        self._claimed = True

    def _save(self, target: Path) -> Future:
        """Start writing a checkpoint of this step; returns the Future of its path.

        The state is copied on the device here (the next train step donates the original), and
        fetched and written by the writer thread, one checkpoint at a time, in order. The pool
        is part of every checkpoint: without it a resume would not be bit-identical. Across
        processes every process saves at the same step: the pool is gathered here from all of
        them (`parallel.detach`), and process 0 alone writes.
        """
        if self._status == "failed":
            raise RuntimeError(
                f"the trainer failed at step {self._step}; its state may be incomplete, so it "
                "is not saved. Restore the last checkpoint instead."
            )
        state = parallel.detach(self._state)
        history = self._history.to_arrays()
        meta = {
            "run_id": self.run_id, "system": self.system.name, "spec": self.spec,
            "preset": self.preset, "seed": self.seed, "data": self.data_source,
            "config": config_to_dict(self.config), "lr_scale": self._lr_scale,
            "status": self._status,
        }
        step, keep = self._step, self.keep_checkpoints
        if self.run_dir is not None and target.resolve() == self.run_dir.resolve() and \
                parallel.is_main_process():
            self._claim_run_dir()

        def write() -> Path:
            if not parallel.is_main_process():
                return checkpoint.path_for(target, step)
            arrays = {**flatten_state(parallel.fetch(state)), **history}
            return checkpoint.save(target, step, arrays, meta, keep=keep)

        return self._writer.submit(write)

    def _report_failed_save(self, written: Future) -> None:
        """A periodic checkpoint that could not be written: said in the status, training goes on."""
        error = written.exception()
        if error is not None:
            log.error("nca_widgets: a checkpoint could not be written: %s", error)
            self._message = f"a checkpoint could not be written: {type(error).__name__}: {error}"

    # --- snapshots (worker thread) ---------------------------------------------------------

    def _publish_now(self, probe: bool = False) -> None:
        """Offer a snapshot to subscribers, if any; `probe` forces a fresh probe rollout.

        If the pictures cannot be brought up to date, the snapshot keeps the last ones and its
        message says why; training goes on.
        """
        if self._publisher.active:
            self._publisher.offer(self._publish_when.run(lambda: self._build_snapshot(probe)))

    def _build_snapshot(self, probe: bool) -> Snapshot:
        """A snapshot with pictures brought up to date where due.

        A failing picture keeps the last one (or none), and the message says why; training goes
        on either way.
        """
        try:
            return self._snapshots.build(self._shell(), parallel.local(self._state),
                                         resting=self._status != "running", probe=probe)
        except Exception as error:
            text = f"the live views could not be updated: {type(error).__name__}: {error}"
            if self._message != text:
                log.exception("nca_widgets: %s", text)
            if self._status != "failed":  # a training failure's message stays
                self._set(_message=text)
            return self._snapshots.with_views(self._shell())

    def _shell(self) -> Snapshot:
        """The run's status as a snapshot, without pictures."""
        return Snapshot(
            system=self.system.name, title=self._snapshots.title,
            picture_kind=self.system.picture_kind, step=self._step,
            total_steps=self.config.num_train_steps, status=self._status, message=self._message,
            learning_rate=self._lr, steps_per_s=self._steps_per_s, history=self._history.view(),
            pool=None, probe=None,
        )


def _after_stop(status: str) -> str:
    return status if status in ("finished", "failed") else "stopped"


def _build_system(system: str | System, preset: str,
                  overrides: dict[str, Any]) -> tuple[str | None, System]:
    """`(spec, system)`: a name is built through the registry, an object is checked."""
    if isinstance(system, str):
        return system, make_system(system, preset, **overrides)
    if overrides:
        raise ValueError(f"config overrides ({', '.join(overrides)}) are for a system given by "
                         "name; build the System object with the config you want instead")
    return None, check_system(system)


def _examples(system: System, data: str, examples: Examples | Digits | None) -> Examples:
    """The examples to train on: given, or loaded by the system; checked to fit it."""
    if isinstance(examples, Digits):
        examples = examples.examples()
    if examples is None:
        examples = system.load_examples(data)
    elif not isinstance(examples, Examples):
        raise TypeError(f"examples must be nca_widgets.Examples(train, test) or Digits; got "
                        f"{type(examples).__name__}")
    system.check_examples(examples)
    return examples


def _refuse_other_config(path: Any, saved: Any, wanted: Any) -> None:
    differ = config_diff(saved, wanted)
    if differ:
        raise ConfigError(
            f"checkpoint {path} was trained with a different config: "
            + ", ".join(f"{k} ({getattr(saved, k)!r} there, {getattr(wanted, k)!r} asked)"
                        for k in differ)
        )
