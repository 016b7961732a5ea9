"""Self-autoencoding MNIST 3-D NCA (reference notebook 000), as a plug-in system.

A (H, W, D, C) block of cells. The digit sits in the last channel of depth 0 and is written back
there every step; the middle depth slice is zeroed except its centre cell, so the digit must
squeeze through one cell to be rebuilt at the far side. Every depth's last channel is scored
against the digit.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from nca_widgets.config import ConfigError, build_config, check_dims, check_int, check_training
from nca_widgets.data import check_digit_size, load_examples
from nca_widgets.nn import CellMLP, DepthwisePerceive, alive_mask, cell_dropout
from nca_widgets.system import Examples, System, final_state


@dataclass(frozen=True)
class SANCAConfig:
    """Self-autoencoding MNIST 3-D NCA (reference notebook 000)."""

    spatial_dims: tuple[int, ...] = (28, 28, 42)  # (H, W, D) cells; the digit enters at depth 0
    channel_size: int = 16  # channels per cell; the last one carries the digit
    num_kernels: int = 4  # perceive kernels per channel: identity, then Sobel d/dH, d/dW, d/dD
    hidden_size: int = 256  # hidden units of the per-cell update MLP
    cell_dropout_rate: float = 0.5  # probability that a cell skips its update in a step
    alive_threshold: float = 0.1  # a cell lives if its 3x3x3 neighbourhood's last channel is above
    num_steps: int = 96  # NCA steps per train step; the loss is scored at a step in [n/2, n)
    pool_size: int = 1_024  # states kept in the sample pool
    batch_size: int = 8  # pool samples per train step
    learning_rate: float = 1e-3  # Adam learning rate at step 0
    lr_end_factor: float = 0.5  # the learning rate falls linearly to this fraction of its start
    lr_transition_steps: int = 2_000  # ... over this many train steps
    num_train_steps: int = 16_384  # train steps of a full run
    check_reach: bool = True  # refuse rollouts too short to carry the digit to the far side

    @property
    def path_length(self) -> int:
        """The fewest NCA steps from depth 0 through the open cell to the far side.

        A 3x3x3 neighbourhood moves information one cell per step in every axis at once, so the
        path is the farthest input cell's distance to the open cell plus the open cell's distance
        to the farthest far-side cell, in max-norm: 28 at 28x28x8, 41 at the seed's 28x28x42.
        """
        h, w, d = self.spatial_dims
        in_plane = max(h // 2, h - 1 - h // 2, w // 2, w - 1 - w // 2)  # corner to centre
        return max(in_plane, d // 2) + max(in_plane, d - 1 - d // 2)

    @property
    def perception_size(self) -> int:
        """Features per cell after perception: `channel_size * num_kernels`."""
        return self.channel_size * self.num_kernels

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of its allowed range."""
        check_dims(self.spatial_dims, 3, "(H, W, D)", min_last=3)
        check_int(self, "channel_size", 1)
        check_int(self, "num_kernels", 1, 4)
        check_int(self, "hidden_size", 1)
        check_training(self)
        check_int(self, "num_steps", 2)
        check_int(self, "pool_size", 1)
        if self.batch_size > self.pool_size:
            raise ConfigError(
                f"batch_size must be at most pool_size ({self.pool_size}); got {self.batch_size}"
            )
        if self.check_reach:
            self._check_reach()

    def _check_reach(self) -> None:
        """Refuse a rollout that cannot reach the far side; warn if early scored steps cannot."""
        path, dims = self.path_length, ",".join(map(str, self.spatial_dims))
        if self.num_steps <= path:
            raise ConfigError(
                f"num_steps={self.num_steps} cannot carry a digit to the far side: at "
                f"spatial_dims={dims} the path through the open cell is {path} steps, so "
                f"num_steps must be at least {path + 1} (at least {2 * path} to score only "
                "reachable steps), or use smaller spatial_dims"
            )
        if self.num_steps // 2 < path:
            from nca_widgets import NCAWidgetsWarning

            warnings.warn(
                f"num_steps={self.num_steps} scores steps from {self.num_steps // 2} on, but at "
                f"spatial_dims={dims} the digit needs {path} steps to reach the far side, so "
                f"early scored steps cannot rebuild it; num_steps >= {2 * path} scores only "
                "reachable steps",
                NCAWidgetsWarning, stacklevel=5,
            )


# Presets as overrides of the seed (notebook) values.
PRESETS: dict[str, dict[str, Any]] = {
    "seed": {},
    # Chosen with benchmarks/autoencode_sweep.py: 12x12 digits in 4 depths (a path of 12 steps
    # through the open cell), 40 steps, batch 2 and a faster learning rate put recognisable
    # digits on the far side within 10 minutes on a 2-core CPU.
    "cpu": dict(
        spatial_dims=(12, 12, 4), num_steps=40, pool_size=256, batch_size=2,
        learning_rate=2e-3, lr_end_factor=0.1, lr_transition_steps=4_000, num_train_steps=6_000,
    ),
    "tiny": dict(
        spatial_dims=(12, 12, 6), channel_size=8, hidden_size=32, num_steps=8, pool_size=16,
        batch_size=2, num_train_steps=50, check_reach=False,  # a test of the code, not of reach
    ),
}


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
    index: jax.Array  # (P,) int32: the digit each state carries, an index into the training set


class Batch(NamedTuple):
    """Samples drawn from the pool for one train step, worst first."""

    state: jax.Array  # (B, H, W, D, C) float32
    index: jax.Array  # (B,) int32
    slot: jax.Array  # (B,) int32: where in the pool each sample goes back


class SelfAutoencodingMNIST(System):
    """sa-nca: pool sampling, the scored rollout, the pool write-back; far-side pictures."""

    name = "sa-nca"
    picture_kind = "volume"
    trainable = nnx.Param  # everything, the Sobel-initialised perceive included
    picture_channel = -1  # the digit channel
    live_eval_names = ("test far-side MSE", "mean digit")
    live_eval_size = 32  # the first test digits, scored live (the first 8 are harder than most)

    @classmethod
    def from_preset(cls, preset: str = "auto", **overrides: Any) -> SelfAutoencodingMNIST:
        """The system at a preset ('seed', 'cpu', 'tiny', 'auto') with config overrides."""
        return cls(build_config(SANCAConfig, PRESETS, preset, **overrides))

    def load_examples(self, source: str = "auto") -> Examples:
        """MNIST digits at the config's (H, W): see `nca_widgets.data.load_examples`."""
        return load_examples(source, self.config.spatial_dims[:2])

    def check_examples(self, examples: Examples) -> None:
        """The digits must be (N, H, W) at the cells' (H, W)."""
        check_digit_size(examples, self.config.spatial_dims[:2])

    def build_model(self, rngs: nnx.Rngs) -> SANCA:
        """A freshly initialised automaton."""
        return SANCA(self.config, rngs=rngs)

    def init_pool(self, key: jax.Array, train: jax.Array) -> Pool:
        """`pool_size` seed states of random training digits; `train: (N, H, W)`."""
        index = jax.random.choice(key, train.shape[0], (self.config.pool_size,)).astype(jnp.int32)
        return Pool(jax.vmap(lambda d: seed_state(self.config, d))(train[index]), index)

    def make_batch(self, pool: Pool, train: jax.Array, key: jax.Array) -> Batch:
        """Draw a batch (with replacement), sort it worst first, replace the worst by a seed."""
        sample_key, digit_key = jax.random.split(key)
        slot = jax.random.choice(sample_key, self.config.pool_size, (self.config.batch_size,))
        state, index = pool.state[slot], pool.index[slot]
        order = jnp.argsort(jax.vmap(sample_mse)(state, train[index]), descending=True)
        slot, state, index = slot[order], state[order], index[order]
        new_index = jax.random.choice(digit_key, train.shape[0]).astype(jnp.int32)
        state = state.at[0].set(seed_state(self.config, train[new_index]))
        return Batch(state, index.at[0].set(new_index), slot.astype(jnp.int32))

    def loss(
        self, model: SANCA, batch: Batch, train: jax.Array, key: jax.Array
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

        losses, kept = jax.vmap(one)(batch.state, train[batch.index], keys, scored_at)
        return jnp.mean(losses), kept

    def write_back(self, pool: Pool, batch: Batch, scored: jax.Array) -> Pool:
        """Put the scored states back in the slots they came from."""
        index = pool.index.at[batch.slot].set(batch.index)
        return Pool(pool.state.at[batch.slot].set(scored), index)

    # --- pictures --------------------------------------------------------------------------

    def seed(self, example: jax.Array, key: jax.Array) -> jax.Array:
        """The digit `(H, W)` in the last channel of depth 0, the rest zero."""
        return seed_state(self.config, example)

    def render(self, state: jax.Array) -> jax.Array:
        """The far side: the digit channel at the last depth."""
        return far_side(state)

    def target(self, example: jax.Array) -> jax.Array:
        """The digit itself."""
        return example

    def target_after_edit(self, edited: jax.Array, target: jax.Array) -> jax.Array:
        """The far side should rebuild whatever the input slice holds now (e.g. a drawn digit)."""
        return jnp.clip(edited[:, :, 0, -1], 0.0, 1.0)

    @property
    def depth_labels(self) -> tuple[str, ...]:
        """Depth 0 takes the digit, the middle one is the bottleneck, the last the far side."""
        depth = self.config.spatial_dims[2]
        labels = [""] * depth
        labels[0], labels[depth // 2], labels[-1] = "input", "bottleneck", "far side"
        return tuple(labels)

    # --- metrics ---------------------------------------------------------------------------

    def live_eval(self, model: SANCA, examples: Examples,
                  key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Far-side MSE of the first test digits, and that of the mean training digit.

        With the same key, the first value is what `evaluate` reports for these digits.
        """
        digits = examples.test[: self.live_eval_size]
        keys = jax.random.split(key, digits.shape[0])
        renders = jax.vmap(lambda d, k: far_side(self._final(model, d, k)))(digits, keys)
        mean_digit = jnp.mean(examples.train, axis=0)
        return jnp.mean(jnp.square(renders - digits)), jnp.mean(jnp.square(mean_digit - digits))

    def evaluate(self, model: SANCA, examples: Examples, key: jax.Array) -> dict[str, Any]:
        """Far-side MSE after 2 * num_steps beside its baselines, and a depth profile.

        `black_mse`: an all-black far side; `mean_digit_mse`: the mean training digit drawn
        there; `far_side_vs_mean_digit`: their ratio to the far side (below 1: the far side
        knows which digit went in); `depth_mse`: the digit channel's MSE at every depth (the
        middle depth is all zero but its centre).
        """
        test = examples.test
        keys = jax.random.split(key, test.shape[0])

        def one(args):
            digit, key = args
            final = self._final(model, digit, key)
            return jnp.mean(jnp.square(final[..., -1] - digit[:, :, None]), axis=(0, 1))

        chunk = max(1, min(self.config.batch_size, 32))
        depth_mse = jnp.mean(jax.lax.map(one, (test, keys), batch_size=chunk), axis=0)
        mean_digit = jnp.mean(examples.train, axis=0)
        mean_digit_mse = float(jnp.mean(jnp.square(test - mean_digit)))
        return {
            "far_side_mse": float(depth_mse[-1]),
            "far_side_vs_mean_digit": round(float(depth_mse[-1]) / mean_digit_mse, 4),
            "mean_digit_mse": mean_digit_mse,
            "black_mse": float(jnp.mean(jnp.square(test))),
            "depth_mse": [round(float(x), 6) for x in depth_mse],
            "num_test_digits": int(test.shape[0]),
        }

    def _final(self, model: SANCA, digit: jax.Array, key: jax.Array) -> jax.Array:
        """The state after 2 * num_steps from a digit: twice the training horizon."""
        return final_state(model, seed_state(self.config, digit), key, 2 * self.config.num_steps)
