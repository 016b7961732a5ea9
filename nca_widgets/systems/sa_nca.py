"""Self-autoencoding MNIST 3-D NCA (reference notebook 000).

A (H, W, D, C) block of cells. The digit sits in the last channel of depth 0 and is written back
there every step; the middle depth slice is zeroed except its centre cell, so the digit must
squeeze through one cell to be rebuilt at the far side. Every depth's last channel is scored
against the digit.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from nca_widgets.config import SANCAConfig
from nca_widgets.nn import CellMLP, DepthwisePerceive, alive_mask, cell_dropout


class SANCA(nnx.Module):
    """The cellular automaton: depthwise Sobel perceive, residual per-cell MLP, alive masks."""

    def __init__(self, config: SANCAConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.perceive = DepthwisePerceive(config.channel_size, config.num_kernels)
        self.update = CellMLP(
            (config.perception_size, config.hidden_size, config.channel_size), rngs=rngs
        )

    def __call__(self, state: jax.Array, key: jax.Array) -> jax.Array:
        """One step of one sample: `state: (H, W, D, C)` -> the next state."""
        cfg = self.config
        digit = state[:, :, 0, -1]
        pre_alive = alive_mask(state, cfg.alive_threshold)
        update = cell_dropout(self.update(self.perceive(state)), key, cfg.cell_dropout_rate)
        state = state + update
        state = state * (pre_alive & alive_mask(state, cfg.alive_threshold))
        state = jnp.where(bottleneck_mask(cfg.spatial_dims), state, 0.0)
        return state.at[:, :, 0, -1].set(digit)


def bottleneck_mask(spatial_dims: tuple[int, ...]) -> jax.Array:
    """`(H, W, D, 1)` bool: False on the middle depth slice except its centre cell."""
    h, w, d = spatial_dims
    mask = jnp.ones((h, w, d, 1), bool).at[:, :, d // 2].set(False)
    return mask.at[h // 2, w // 2, d // 2].set(True)


def seed_state(config: SANCAConfig, digit: jax.Array) -> jax.Array:
    """The initial state for `digit: (H, W)`: zeros, the digit in the last channel of depth 0."""
    state = jnp.zeros((*config.spatial_dims, config.channel_size))
    return state.at[:, :, 0, -1].set(digit)


def sample_mse(state: jax.Array, digit: jax.Array) -> jax.Array:
    """MSE of the last channel at every depth against the digit: `(H, W, D, C), (H, W) -> ()`."""
    return jnp.mean(jnp.square(state[..., -1] - digit[:, :, None]))


def far_side(state: jax.Array) -> jax.Array:
    """The rebuilt digit: the last channel at the last depth, `(..., H, W, D, C) -> (..., H, W)`.

    Used for pool renders and the far-side reconstruction error.
    """
    return state[..., -1, -1]


class Pool(NamedTuple):
    """The sample pool: states mid-rollout and the digit each one carries."""

    state: jax.Array  # (P, H, W, D, C) float32
    digit: jax.Array  # (P,) int32: index into the training images


class Batch(NamedTuple):
    """Samples drawn from the pool for one train step, worst first."""

    state: jax.Array  # (B, H, W, D, C) float32
    digit: jax.Array  # (B,) int32
    slot: jax.Array  # (B,) int32: where in the pool each sample goes back


class SANCATask:
    """How sa-nca is trained: pool sampling, the scored rollout and the pool write-back."""

    name = "sa-nca"
    trainable = nnx.Param  # everything, the Sobel-initialised perceive included

    def __init__(self, config: SANCAConfig):
        self.config = config

    def build_model(self, rngs: nnx.Rngs) -> SANCA:
        """A freshly initialised automaton."""
        return SANCA(self.config, rngs=rngs)

    def init_pool(self, key: jax.Array, images: jax.Array) -> Pool:
        """`pool_size` seed states of random training digits; `images: (N, H, W)`."""
        digit = jax.random.choice(key, images.shape[0], (self.config.pool_size,)).astype(jnp.int32)
        return Pool(jax.vmap(lambda d: seed_state(self.config, d))(images[digit]), digit)

    def make_batch(self, pool: Pool, images: jax.Array, key: jax.Array) -> Batch:
        """Draw a batch (with replacement), sort it worst first, replace the worst by a seed."""
        sample_key, digit_key = jax.random.split(key)
        slot = jax.random.choice(sample_key, self.config.pool_size, (self.config.batch_size,))
        state, digit = pool.state[slot], pool.digit[slot]
        order = jnp.argsort(jax.vmap(sample_mse)(state, images[digit]), descending=True)
        slot, state, digit = slot[order], state[order], digit[order]
        new_digit = jax.random.choice(digit_key, images.shape[0]).astype(jnp.int32)
        state = state.at[0].set(seed_state(self.config, images[new_digit]))
        return Batch(state, digit.at[0].set(new_digit), slot.astype(jnp.int32))

    def loss(
        self, model: SANCA, batch: Batch, images: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Roll out `num_steps`; score each sample at a step drawn from [n/2, n).

        Returns the mean loss and the scored states `(B, H, W, D, C)`. Each step is
        rematerialised in the backward pass and only the scored state is kept, so memory grows
        with one state per step instead of every activation.
        """
        n, b = self.config.num_steps, self.config.batch_size
        score_key, rollout_key = jax.random.split(key)
        scored_at = jax.random.randint(score_key, (b,), n // 2, n)
        keys = jax.random.split(rollout_key, (b, n))
        step = jax.checkpoint(model)

        def one(state, digit, keys, scored_at):
            def body(carry, inputs):
                state, kept, loss = carry
                t, key = inputs
                state = step(state, key)
                hit = t == scored_at
                kept = jnp.where(hit, jax.lax.stop_gradient(state), kept)
                loss = loss + jnp.where(hit, sample_mse(state, digit), 0.0)
                return (state, kept, loss), None

            init = (state, jnp.zeros_like(state), jnp.zeros(()))
            (_, kept, loss), _ = jax.lax.scan(body, init, (jnp.arange(n), keys))
            return loss, kept

        losses, kept = jax.vmap(one)(batch.state, images[batch.digit], keys, scored_at)
        return jnp.mean(losses), kept

    def write_back(self, pool: Pool, batch: Batch, scored: jax.Array) -> Pool:
        """Put the scored states back in the slots they came from."""
        state = pool.state.at[batch.slot].set(scored)
        return Pool(state, pool.digit.at[batch.slot].set(batch.digit))
