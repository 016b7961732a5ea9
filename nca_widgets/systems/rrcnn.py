"""Recurrent residual CNN denoiser (reference notebook 001), as a plug-in system.

A (H, W, C) grid; the noisy digit sits in the last channel. Each step perceives through a dense
3x3 convolution that is never trained and adds a residual per-cell MLP update. After
`num_steps` the last channel is scored against the clean digit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from nca_widgets.config import ConfigError, build_config, check_dims, check_int, check_training
from nca_widgets.data import check_digit_size, load_examples
from nca_widgets.nn import CellMLP, cell_dropout
from nca_widgets.system import POOL_VIEW_SIZE, Examples, PoolPictures, System, final_state, psnr

PROBE_NOISE = 0.5  # noise strength alpha of probe rollouts and of the live evaluation
EVAL_NOISE_LEVELS = (0.25, 0.5, 0.75)
_GALLERY_SEED = 1234  # the pool view's fixed noise, so galleries compare over a run


@dataclass(frozen=True)
class RRCNNConfig:
    """Recurrent residual CNN denoiser (reference notebook 001)."""

    spatial_dims: tuple[int, ...] = (28, 28)  # (H, W) cells
    channel_size: int = 64  # channels per cell; the last one carries the (noisy) digit
    perception_size: int = 64  # outputs of the dense 3x3 perceive convolution (not trained)
    update_hidden_layer_sizes: tuple[int, ...] = (128, 128)  # hidden layers of the update MLP
    cell_dropout_rate: float = 0.5  # probability that a cell skips its update in a step
    num_steps: int = 64  # recurrent steps; the loss is scored after the last one
    batch_size: int = 8  # fresh noisy digits per train step
    learning_rate: float = 1e-3  # Adam learning rate at step 0
    lr_end_factor: float = 0.1  # the learning rate falls linearly to this fraction of its start
    lr_transition_steps: int = 2_000  # ... over this many train steps
    num_train_steps: int = 8_192  # train steps of a full run

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of its allowed range."""
        check_dims(self.spatial_dims, 2, "(H, W)")
        check_int(self, "channel_size", 1)
        check_int(self, "perception_size", 1)
        hidden = self.update_hidden_layer_sizes
        if not all(isinstance(h, int) and h >= 1 for h in hidden):
            raise ConfigError(
                f"update_hidden_layer_sizes must be positive integers (e.g. 128,128); got {hidden}"
            )
        check_training(self)
        check_int(self, "num_steps", 1)


# Presets as overrides of the seed (notebook) values.
PRESETS: dict[str, dict[str, Any]] = {
    "seed": {},
    "cpu": dict(num_steps=16, batch_size=8, lr_transition_steps=1_000, num_train_steps=2_000),
    "tiny": dict(
        spatial_dims=(12, 12), channel_size=8, perception_size=8,
        update_hidden_layer_sizes=(16,), num_steps=4, batch_size=2, num_train_steps=50,
    ),
}


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
    index: jax.Array  # (B,) int32: index into the training images (the clean targets)


class RecurrentResidualCNN(System):
    """rrcnn: a fresh noisy batch each step, scored after the last step; no pool."""

    name = "rrcnn"
    picture_kind = "frame"
    trainable = nnx.All(nnx.Param, nnx.PathContains("update"))  # the perceive stays as drawn
    live_eval_names = (f"test MSE at noise {PROBE_NOISE}", "noisy input")
    live_eval_size = 8  # the first test digits, scored live
    frame_labels = ("noisy input", "estimate", "target")
    level_name = "noise level"  # alpha: the share of noise mixed into the digit
    probe_level = PROBE_NOISE

    @classmethod
    def from_preset(cls, preset: str = "auto", **overrides: Any) -> RecurrentResidualCNN:
        """The system at a preset ('seed', 'cpu', 'tiny', 'auto') with config overrides."""
        return cls(build_config(RRCNNConfig, PRESETS, preset, **overrides))

    def load_examples(self, source: str = "auto") -> Examples:
        """MNIST digits at the config's (H, W): see `nca_widgets.data.load_examples`."""
        return load_examples(source, self.config.spatial_dims)

    def check_examples(self, examples: Examples) -> None:
        """The digits must be (N, H, W) at the cells' (H, W)."""
        check_digit_size(examples, self.config.spatial_dims)

    def build_model(self, rngs: nnx.Rngs) -> RRCNN:
        """A freshly initialised network."""
        return RRCNN(self.config, rngs=rngs)

    def init_pool(self, key: jax.Array, train: jax.Array) -> tuple[()]:
        """Rrcnn keeps no pool: every batch is fresh."""
        return ()

    def noisy_sample(self, key: jax.Array, train: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A random digit with noise of random strength alpha ~ U(0, 1): (seed state, index)."""
        digit_key, alpha_key, noise_key = jax.random.split(key, 3)
        index = jax.random.choice(digit_key, train.shape[0]).astype(jnp.int32)
        noisy = add_noise(train[index], jax.random.uniform(alpha_key), noise_key)
        return seed_state(self.config, noisy), index

    def make_batch(self, pool: tuple[()], train: jax.Array, key: jax.Array) -> Batch:
        """`batch_size` fresh noisy digits."""
        keys = jax.random.split(key, self.config.batch_size)
        return Batch(*jax.vmap(self.noisy_sample, in_axes=(0, None))(keys, train))

    def loss(
        self, model: RRCNN, batch: Batch, train: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """MSE of the last channel after `num_steps` against the clean digits; and the states."""
        keys = jax.random.split(key, (self.config.batch_size, self.config.num_steps))

        def one(state, keys):
            return jax.lax.scan(lambda s, k: (model(s, k), None), state, keys)[0]

        final = jax.vmap(one)(batch.state, keys)
        return jnp.mean(jnp.square(estimate(final) - train[batch.index])), final

    def write_back(self, pool: tuple[()], batch: Batch, final: jax.Array) -> tuple[()]:
        """Nothing to keep."""
        return pool

    # --- pictures --------------------------------------------------------------------------

    def seed(self, example: jax.Array, key: jax.Array, level: jax.Array) -> jax.Array:
        """The digit with noise of strength `level`, in the last channel."""
        return seed_state(self.config, add_noise(example, level, key))

    def render(self, state: jax.Array) -> jax.Array:
        """The estimate (the last channel), clipped to the picture range."""
        return jnp.clip(estimate(state), 0.0, 1.0)

    def target(self, example: jax.Array) -> jax.Array:
        """The clean digit."""
        return example

    def pool_pictures(self, model: RRCNN, pool: tuple[()], examples: Examples,
                      key: jax.Array) -> PoolPictures:
        """No pool: a gallery of the first test digits, noise rising from 0.1 to 0.9.

        Each tile shows the noisy input, the estimate after num_steps and the digit, and carries
        its noise level (a click probes at that level). Fixed noise, so galleries compare over a
        run.
        """
        test = examples.test
        n = min(POOL_VIEW_SIZE, test.shape[0])
        alphas = jnp.linspace(0.1, 0.9, n)
        keys = jax.random.split(jax.random.key(_GALLERY_SEED), n)
        targets = test[:n]
        estimates, noisy = jax.vmap(lambda d, a, k: self._denoise(model, d, a, k))(
            targets, alphas, keys)
        renders = jnp.clip(estimates, 0.0, 1.0)
        losses = jnp.mean(jnp.square(renders - targets), axis=(1, 2))
        return PoolPictures(targets, renders, losses, jnp.arange(n, dtype=jnp.int32),
                            inputs=noisy, levels=alphas)

    # --- metrics ---------------------------------------------------------------------------

    def live_eval(self, model: RRCNN, examples: Examples,
                  key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """MSE of the estimate after num_steps at PROBE_NOISE, and that of the noisy input."""
        digits = examples.test[: self.live_eval_size]
        keys = jax.random.split(key, digits.shape[0])
        estimates, noisy = jax.vmap(lambda d, k: self._denoise(model, d, PROBE_NOISE, k))(
            digits, keys)
        return (jnp.mean(jnp.square(jnp.clip(estimates, 0.0, 1.0) - digits)),
                jnp.mean(jnp.square(noisy - digits)))

    def evaluate(self, model: RRCNN, examples: Examples, key: jax.Array) -> dict[str, Any]:
        """At each noise level, the mean PSNR (dB) of the noisy input and of the output.

        The noisy input's PSNR is the baseline; the output is taken after num_steps, the horizon
        it was trained for.
        """
        test = examples.test
        keys = jax.random.split(key, test.shape[0])
        chunk = max(1, min(self.config.batch_size, 32))
        out: dict[str, Any] = {"num_test_digits": int(test.shape[0])}
        for alpha in EVAL_NOISE_LEVELS:
            def one(args, alpha=alpha):
                digit, key = args
                output, noisy = self._denoise(model, digit, alpha, key)
                return psnr(noisy, digit), psnr(output, digit)

            noisy_db, out_db = jax.lax.map(one, (test, keys), batch_size=chunk)
            out[f"psnr_noisy@{alpha}"] = float(jnp.mean(noisy_db))
            out[f"psnr_output@{alpha}"] = float(jnp.mean(out_db))
        return out

    def _denoise(self, model: RRCNN, digit: jax.Array, alpha: float,
                 key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(estimate after num_steps, noisy input) for one digit at noise level `alpha`."""
        noise_key, key = jax.random.split(key)
        noisy = add_noise(digit, alpha, noise_key)
        final = final_state(model, seed_state(self.config, noisy), key, self.config.num_steps)
        return estimate(final), noisy
