"""Recurrent residual CNN denoiser (reference notebook 001).

A (H, W, C) grid; the noisy digit sits in the last channel. Each step perceives through a dense
3x3 convolution that is never trained and adds a residual per-cell MLP update. After
`num_steps` the last channel is scored against the clean digit.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from nca_widgets.config import RRCNNConfig
from nca_widgets.nn import CellMLP, cell_dropout


class RRCNN(nnx.Module):
    """The recurrent network: frozen dense perceive, residual per-cell MLP with cell dropout."""

    def __init__(self, config: RRCNNConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.perceive = nnx.Conv(
            config.channel_size, config.perception_size, kernel_size=(3, 3), padding="SAME",
            use_bias=False, rngs=rngs,
        )
        self.update = CellMLP(
            (config.perception_size, *config.update_hidden_layer_sizes, config.channel_size),
            rngs=rngs,
        )

    def __call__(self, state: jax.Array, key: jax.Array) -> jax.Array:
        """One step of one sample: `state: (H, W, C)` -> the next state."""
        update = self.update(self.perceive(state))
        return state + cell_dropout(update, key, self.config.cell_dropout_rate)


def add_noise(image: jax.Array, alpha: jax.Array, key: jax.Array) -> jax.Array:
    """`clip((1 - alpha) * image + alpha * N(0, 1), 0, 1)` for `image: (H, W)`."""
    noise = jax.random.normal(key, image.shape)
    return jnp.clip((1 - alpha) * image + alpha * noise, 0.0, 1.0)


def seed_state(config: RRCNNConfig, noisy: jax.Array) -> jax.Array:
    """The initial state for a noisy digit `(H, W)`: zeros, the digit in the last channel."""
    return jnp.zeros((*config.spatial_dims, config.channel_size)).at[..., -1].set(noisy)


def estimate(state: jax.Array) -> jax.Array:
    """The denoised digit: the last channel, `(..., H, W, C) -> (..., H, W)`."""
    return state[..., -1]


class Batch(NamedTuple):
    """Fresh noisy digits for one train step."""

    state: jax.Array  # (B, H, W, C) float32: seed states holding the noisy digits
    digit: jax.Array  # (B,) int32: index into the training images (the clean targets)


class RRCNNTask:
    """How rrcnn is trained: a fresh noisy batch each step, scored after the last step."""

    name = "rrcnn"
    trainable = nnx.All(nnx.Param, nnx.PathContains("update"))  # the perceive stays as drawn

    def __init__(self, config: RRCNNConfig):
        self.config = config

    def build_model(self, rngs: nnx.Rngs) -> RRCNN:
        """A freshly initialised network."""
        return RRCNN(self.config, rngs=rngs)

    def init_pool(self, key: jax.Array, images: jax.Array) -> tuple[()]:
        """Rrcnn keeps no pool: every batch is fresh."""
        return ()

    def noisy_sample(self, key: jax.Array, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A random digit with noise of random strength alpha ~ U(0, 1): (seed state, digit)."""
        digit_key, alpha_key, noise_key = jax.random.split(key, 3)
        digit = jax.random.choice(digit_key, images.shape[0]).astype(jnp.int32)
        noisy = add_noise(images[digit], jax.random.uniform(alpha_key), noise_key)
        return seed_state(self.config, noisy), digit

    def make_batch(self, pool: tuple[()], images: jax.Array, key: jax.Array) -> Batch:
        """`batch_size` fresh noisy digits."""
        keys = jax.random.split(key, self.config.batch_size)
        return Batch(*jax.vmap(self.noisy_sample, in_axes=(0, None))(keys, images))

    def loss(
        self, model: RRCNN, batch: Batch, images: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """MSE of the last channel after `num_steps` against the clean digits; and the states."""
        keys = jax.random.split(key, (self.config.batch_size, self.config.num_steps))

        def one(state, keys):
            return jax.lax.scan(lambda s, k: (model(s, k), None), state, keys)[0]

        final = jax.vmap(one)(batch.state, keys)
        return jnp.mean(jnp.square(estimate(final) - images[batch.digit])), final

    def write_back(self, pool: tuple[()], batch: Batch, final: jax.Array) -> tuple[()]:
        """Nothing to keep."""
        return pool
