"""Device-side views of a training state, for snapshots and evaluation, from any system.

The functions are pure and jitted once per trainer; they return small arrays (uint8 where they
are pictures) so that little travels from the device to the host. Which pictures a system gets
follows its `picture_kind` (frames or volumes), never its name.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from nca_widgets.system import Edit, Examples, System, psnr, rollout_with_keys
from nca_widgets.training import TrainState

_VIEW_SEED = 1234  # keys of probe rollouts: fixed, so views compare over a run
_EDIT_SEED = 4321  # keys of the noise brush: fixed, so an edit is repeatable


def to_uint8(x: jax.Array, low: float | jax.Array = 0.0, high: float | jax.Array = 1.0):
    """Map `[low, high]` to 0..255, clipped: the picture format of snapshots."""
    scaled = (x - low) / jnp.maximum(high - low, 1e-12)
    return jnp.round(jnp.clip(scaled, 0.0, 1.0) * 255).astype(jnp.uint8)


class Views:
    """The jitted views of one trainer's system."""

    def __init__(self, system: System, graphdef: nnx.GraphDef):
        self.system, self.graphdef, self.config = system, graphdef, system.config
        self.pool_view = jax.jit(self._pool_view)
        self.probe = jax.jit(self._probe)
        self.edited = jax.jit(self._edited)
        self.channel_volume = jax.jit(self._channel_volume)
        self.frames = jax.jit(self._frames)
        self.live_eval = jax.jit(self._live_eval)

    def model(self, state: TrainState) -> nnx.Module:
        """The model with the state's parameters."""
        return nnx.merge(self.graphdef, state.params, state.frozen)

    def _pool_view(self, state: TrainState, train: jax.Array, test: jax.Array):
        """`PoolPictures` with the pictures as uint8."""
        key = jax.random.key(_VIEW_SEED)
        pictures = self.system.pool_pictures(self.model(state), state.pool,
                                             Examples(train, test), key)
        inputs = None if pictures.inputs is None else to_uint8(pictures.inputs)
        return pictures._replace(targets=to_uint8(pictures.targets),
                                 renders=to_uint8(pictures.renders), inputs=inputs)

    def _probe(self, state: TrainState, example: jax.Array,
               level: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A rollout of `example` over 2 * num_steps: `(every state (T, *state), target (H, W))`.

        `level`: () float32, where the system has levels (`System.level_name`); else ignored.
        """
        seed_key, keys = self._probe_keys()
        start = self.system.seed_at(example, seed_key, level)
        states = rollout_with_keys(self.model(state), start, keys)
        return states, self.system.target(example)

    def _probe_keys(self) -> tuple[jax.Array, jax.Array]:
        """`(seed key, one key per step)` of probe rollouts: fixed, so views compare."""
        seed_key, key = jax.random.split(jax.random.key(_VIEW_SEED))
        return seed_key, jax.random.split(key, 2 * self.config.num_steps)

    def _edited(self, state: TrainState, states: jax.Array, target: jax.Array,
                time: jax.Array, edit: Edit):
        """The probe rollout `states (T, *state)` with `edit` applied at `time`, rolled on.

        Returns `(edited states (T, *state), its target, recovery (2, T))`: before `time` the
        edited rollout is the untouched one; from `time` on it continues from the edited state
        with the same per-step keys, so an empty edit changes nothing. `recovery` is the MSE of
        `render` against the target over time, untouched then edited (the edited one against
        `System.target_after_edit`).
        """
        system, n = self.system, states.shape[0] - 1
        start = system.edit(states[time], edit, jax.random.fold_in(jax.random.key(_EDIT_SEED),
                                                                   time))
        keys = self._probe_keys()[1]
        rerun = rollout_with_keys(self.model(state), start,
                                  jnp.take(keys, (jnp.arange(n) + time) % n, axis=0))
        steps = jnp.arange(n + 1)
        later = jnp.take(rerun, jnp.clip(steps - time, 0, n), axis=0)
        before = (steps < time).reshape((-1,) + (1,) * (states.ndim - 1))
        edited = jnp.where(before, states, later)
        edited_target = system.target_after_edit(start, target)

        def error(rollout_states, goal):
            return jnp.mean(jnp.square(jax.vmap(system.render)(rollout_states) - goal), (1, 2))

        recovery = jnp.stack([error(states, target), error(edited, edited_target)])
        return edited, edited_target, recovery

    def _channel_volume(self, states: jax.Array, channel: jax.Array):
        """One channel of volume states `(T, H, W, D, C)` as `(T, D, H, W)` uint8, its range.

        The picture channel maps [0, 1]; other channels map a range symmetric about zero that
        covers the whole rollout, so 0 sits at uint8 127.5 and colours compare over time.
        """
        values = jnp.moveaxis(jnp.take(states, channel, axis=-1), -1, 1)
        picture = channel == self.system.picture_channel % states.shape[-1]
        bound = jnp.maximum(jnp.max(jnp.abs(values)), 1e-6)
        low, high = jnp.where(picture, 0.0, -bound), jnp.where(picture, 1.0, bound)
        return to_uint8(values, low, high), low, high

    def _frames(self, states: jax.Array, target: jax.Array):
        """Frame pictures of a rollout: `(frames (T, H, W), input (H, W), PSNR (T,))`.

        Pictures are floats in [0, 1]; the PSNR is of each frame against `target (H, W)`.
        """
        frames = jax.vmap(self.system.render)(states)
        return frames, self.system.input_picture(states[0]), psnr(frames, target)

    def _live_eval(self, state: TrainState, train: jax.Array, test: jax.Array):
        """`(error, baseline)`: see `System.live_eval`."""
        return self.system.live_eval(self.model(state), Examples(train, test), jax.random.key(0))


def evaluate(views: Views, state: TrainState, examples: Examples, seed: int = 0) -> dict[str, Any]:
    """The system's test metrics (`System.evaluate`) over all of `examples.test`."""
    return views.system.evaluate(views.model(state), examples, jax.random.key(seed))
