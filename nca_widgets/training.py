"""The pure training step of any system: explicit state in, explicit state out.

Everything that changes (parameters, optimizer state, pool, PRNG key, step) lives in a
`TrainState`; the examples and the live learning-rate factor are arguments, never closed over,
so one compiled step serves a whole run whatever the learning rate does. The optimizer and the
learning-rate schedule are the caller's (defaults: the reference notebooks' recipe).

The step is data parallel over a mesh (`nca_widgets.parallel`): the pool and the batch are split
along their sample axis, the rest is replicated, and XLA partitions the one program. The
recipe's steps over the batch stay global: the batch is drawn from the whole pool, sorted worst
first and its worst sample replaced, once per step, whatever the number of devices.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from nca_widgets import parallel
from nca_widgets.system import System

# How often each system's train step has been traced (compiled): tests assert it stays at one.
TRACE_COUNTS: collections.Counter[str] = collections.Counter()


class TrainState(NamedTuple):
    """The whole state of a run; a pytree of arrays."""

    params: nnx.State  # trainable parameters
    frozen: nnx.State  # the model's variables that are never trained (may be empty)
    opt_state: optax.OptState  # the optimizer's state, e.g. Adam moments
    pool: Any  # the system's sample pool, or () for a system without one
    key: jax.Array  # typed PRNG key for the next train step
    step: jax.Array  # () int32: train steps done
    halted_at: jax.Array  # () int32: -1, or the step whose non-finite update was skipped


class StepMetrics(NamedTuple):
    """What one train step reports back to the host."""

    step: jax.Array  # () int32: the step just done, or -1 if the state was halted (no-op)
    loss: jax.Array  # () float32
    lr: jax.Array  # () float32: the learning rate the step used


DEFAULT_LEARNING_RATE = 1e-3  # for a config without a learning_rate field


def lr_schedule(config: Any) -> optax.Schedule:
    """The notebooks' schedule: linear from `learning_rate` to `lr_end_factor` of it.

    Reads those fields and `lr_transition_steps` where the config has them; a config without
    them gets a constant DEFAULT_LEARNING_RATE.
    """
    start = getattr(config, "learning_rate", DEFAULT_LEARNING_RATE)
    end = start * getattr(config, "lr_end_factor", 1.0)
    return optax.linear_schedule(start, end, max(1, getattr(config, "lr_transition_steps", 1)))


def optimizer() -> optax.GradientTransformation:
    """Global-norm clipping at 1.0, then Adam's scaling; the learning rate is applied outside.

    A custom optimizer must leave the learning rate out too (end in a `scale_by_*`), since the
    schedule and the live learning-rate factor multiply its updates.
    """
    return optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam())


def num_params(tree: Any) -> int:
    """How many numbers the arrays of `tree` hold (parameters, for a model's state)."""
    return sum(x.size for x in jax.tree.leaves(tree))


def split_model(system: System, model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """`(graphdef, trainable, frozen)` of a model."""
    return nnx.split(model, system.trainable, ...)


def init_train_state(
    system: System, seed: int, train: jax.Array,
    tx: optax.GradientTransformation | None = None,
) -> tuple[nnx.GraphDef, TrainState]:
    """A fresh run: model, optimizer state, pool and key all drawn from `seed`."""
    model_key, pool_key, train_key = jax.random.split(jax.random.key(seed), 3)
    graphdef, params, frozen = split_model(system, system.build_model(nnx.Rngs(model_key)))
    state = TrainState(
        params=params,
        frozen=frozen,
        opt_state=(tx or optimizer()).init(params),
        pool=system.init_pool(pool_key, train),
        key=train_key,
        step=jnp.zeros((), jnp.int32),
        halted_at=jnp.full((), -1, jnp.int32),
    )
    return graphdef, state


def state_shardings(mesh: Mesh) -> TrainState:
    """Where each part of a TrainState lives on `mesh` (a prefix of its tree of shardings).

    The pool is split along its sample axis; everything else is replicated.
    """
    whole = parallel.replicated(mesh)
    return TrainState(params=whole, frozen=whole, opt_state=whole, pool=parallel.split(mesh),
                      key=whole, step=whole, halted_at=whole)


def place(system: System, state: TrainState, train: Any, mesh: Mesh) -> TrainState:
    """`state` laid out on `mesh` (see `state_shardings`).

    Raises ValueError, saying what to set, unless the pool and the batches of `system` split
    evenly over the mesh's devices.
    """
    parallel.check_splits(state.pool, mesh, "the pool", "pool_size")
    batch = jax.eval_shape(system.make_batch, state.pool, train, state.key)
    parallel.check_splits(batch, mesh, "the batch", "batch_size")
    return parallel.put(state, state_shardings(mesh))


def make_train_step(
    system: System, graphdef: nnx.GraphDef, tx: optax.GradientTransformation | None = None,
    schedule: optax.Schedule | None = None, mesh: Mesh | None = None,
):
    """The jitted `train_step(state, train, lr_scale) -> (state, StepMetrics)`.

    `train`: the training examples; `lr_scale` multiplies the schedule (the live learning
    rate). `tx` and `schedule` default to `optimizer()` and `lr_schedule(system.config)`.
    A non-finite loss or gradient skips the update (parameters, optimizer state and pool stay as
    they were; the key and step move on) and halts the state: later steps are no-ops until the
    host clears `halted_at`. The state argument is donated.

    The step is data parallel over `mesh` (default: every local device): the state laid out as
    `state_shardings` says, the batch split along its sample axis, the rest replicated.
    """
    tx = tx or optimizer()
    schedule = schedule or lr_schedule(system.config)
    mesh = mesh or parallel.make_mesh()
    whole = parallel.replicated(mesh)

    def run(state: TrainState, train: jax.Array, lr_scale: jax.Array):
        key, batch_key, loss_key = jax.random.split(state.key, 3)
        batch = parallel.split_samples(system.make_batch(state.pool, train, batch_key), mesh,
                                       "the batch", "batch_size")

        def loss_fn(params):
            return system.loss(nnx.merge(graphdef, params, state.frozen), batch, train, loss_key)

        (loss, scored), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        lr = (schedule(state.step) * lr_scale).astype(jnp.float32)
        finite = jnp.isfinite(loss) & all_finite(grads)
        step = state.step + 1

        def apply():
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, jax.tree.map(lambda u: -lr * u, updates))
            pool = system.write_back(state.pool, batch, scored)
            return state._replace(params=params, opt_state=opt_state, pool=pool)

        def skip():
            return state._replace(halted_at=step)

        new = jax.lax.cond(finite, apply, skip)._replace(key=key, step=step)
        return new, StepMetrics(step, loss.astype(jnp.float32), lr)

    def hold(state: TrainState, train: jax.Array, lr_scale: jax.Array):
        return state, StepMetrics(jnp.int32(-1), jnp.float32(jnp.nan), jnp.float32(jnp.nan))

    shardings = state_shardings(mesh)

    @functools.partial(jax.jit, donate_argnums=0, in_shardings=(shardings, whole, whole),
                       out_shardings=(shardings, whole))
    def step(state: TrainState, train: jax.Array, lr_scale: jax.Array):
        TRACE_COUNTS[system.name] += 1
        return jax.lax.cond(state.halted_at >= 0, hold, run, state, train, lr_scale)

    def train_step(state: TrainState, train: jax.Array, lr_scale: jax.Array):
        # A state from the host (a fresh one, a restored one, one the host changed) is laid
        # out first, so every call has the same input layout and the step compiles once.
        return step(parallel.put(state, shardings), train, lr_scale)

    return train_step


def time_steps(train_step, state: TrainState, train: jax.Array,
               steps: int) -> tuple[float, list[float]]:
    """`(seconds of a first step, which compiles, [seconds of each of `steps` more])`.

    Each step is waited for, at the learning rate of the schedule (benchmarks).
    """
    import time

    lr_scale = jnp.float32(1.0)
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        state, metrics = train_step(state, train, lr_scale)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - started)
    return times[0], times[1:]


def all_finite(tree: Any) -> jax.Array:
    """() bool: every element of every leaf is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
