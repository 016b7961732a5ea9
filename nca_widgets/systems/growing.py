"""The growing NCA of Mordvintsev et al., "Growing Neural Cellular Automata" (Distill, 2020).

A (H, W, C) grid grows a target picture from a single seed cell. Each cell perceives itself and
its neighbours' gradients through fixed Sobel filters, a per-cell MLP proposes an update, and a
random half of the cells apply it (stochastic, asynchronous updates); cells with no living
neighbour (channel 0 below 0.1 in their 3x3 neighbourhood) are cleared (alive masking). Training
keeps a sample pool: the worst sample of each batch is replaced by the seed and the best ones
are damaged, so the automaton learns to grow, persist and regenerate.

Differences from the article, for a grey picture shipped offline: the target is a glyph drawn
with the DejaVu font that matplotlib ships (white on black), and channel 0 is both the picture
and the alive channel (the article's RGBA becomes one grey alpha).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nca_widgets.config import ConfigError, build_config, check_dims, check_int, check_training
from nca_widgets.nn import CellMLP, alive_mask, sobel_kernels
from nca_widgets.system import Examples, System, final_state


@dataclass(frozen=True)
class GrowingConfig:
    """Growing NCA (Distill 2020) on a grey glyph."""

    spatial_dims: tuple[int, ...] = (40, 40)  # (H, W) cells; the glyph fills the middle
    glyph: str = "☻"  # the target: a character of matplotlib's DejaVu Sans
    glyph_size: int = 28  # the glyph's larger side in cells
    channel_size: int = 16  # channels per cell; channel 0 is the picture and the alive channel
    hidden_size: int = 128  # hidden units of the per-cell update MLP
    fire_rate: float = 0.5  # probability that a cell applies its update in a step
    alive_threshold: float = 0.1  # a cell lives if its 3x3 neighbourhood's channel 0 is above
    num_steps: int = 96  # most NCA steps per train step (each sample draws from [2/3 n, n])
    pool_size: int = 1_024  # states kept in the sample pool
    batch_size: int = 8  # pool samples per train step
    num_damaged: int = 3  # best samples of each batch damaged by a disc of dead cells
    learning_rate: float = 2e-3  # Adam learning rate at step 0
    lr_end_factor: float = 0.1  # the learning rate falls linearly to this fraction of its start
    lr_transition_steps: int = 2_000  # ... over this many train steps
    num_train_steps: int = 8_000  # train steps of a full run

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of its allowed range."""
        check_dims(self.spatial_dims, 2, "(H, W)", min_last=3)
        check_int(self, "glyph_size", 3, min(self.spatial_dims))
        if not isinstance(self.glyph, str) or len(self.glyph) != 1:
            raise ConfigError(f"glyph must be one character; got {self.glyph!r}")
        check_int(self, "channel_size", 2)
        check_int(self, "hidden_size", 1)
        if not 0.0 < self.fire_rate <= 1.0:
            raise ConfigError(f"fire_rate must be in (0, 1]; got {self.fire_rate!r}")
        check_training(self)
        check_int(self, "num_steps", 3)
        check_int(self, "pool_size", 1)
        check_int(self, "num_damaged", 0, self.batch_size - 1)
        if self.batch_size > self.pool_size:
            raise ConfigError(
                f"batch_size must be at most pool_size ({self.pool_size}); got {self.batch_size}"
            )


PRESETS: dict[str, dict[str, Any]] = {
    "seed": {},  # the article's sizes: 40x40 cells, a 28-cell glyph, 64-96 steps, pool 1024
    # A 2-core CPU grows a recognisable glyph within a few minutes at this size.
    "cpu": dict(spatial_dims=(24, 24), glyph_size=16, hidden_size=96, num_steps=36,
                pool_size=256, batch_size=4, num_damaged=1, lr_transition_steps=2_000,
                num_train_steps=3_000),
    "tiny": dict(spatial_dims=(12, 12), glyph_size=8, channel_size=8, hidden_size=32,
                 num_steps=8, pool_size=16, batch_size=2, num_damaged=1, num_train_steps=50),
}


@cache
def glyph_picture(glyph: str, size: int, spatial_dims: tuple[int, int]) -> np.ndarray:
    """`glyph` drawn white on black, its larger side `size` cells, centred: `(H, W)` float32."""
    import matplotlib.font_manager as fm
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(fm.findfont("DejaVu Sans"), 8 * size)
    box = font.getmask(glyph).getbbox()
    if box is None:
        raise ConfigError(f"DejaVu Sans draws nothing for glyph {glyph!r}; pick another")
    canvas = Image.new("L", (16 * size, 16 * size))
    ImageDraw.Draw(canvas).text((0, 0), glyph, fill=255, font=font)
    ink = canvas.crop(canvas.getbbox())
    scale = size / max(ink.size)
    w, h = max(1, round(ink.width * scale)), max(1, round(ink.height * scale))
    small = np.asarray(ink.resize((w, h), Image.Resampling.LANCZOS), np.float32) / 255
    out = np.zeros(spatial_dims, np.float32)
    top, left = (spatial_dims[0] - h) // 2, (spatial_dims[1] - w) // 2
    out[top : top + h, left : left + w] = np.clip(small, 0.0, 1.0)
    return out


_OFFSETS = tuple(itertools.product(range(3), repeat=2))


class SobelPerceive(nnx.Module):
    """Each channel seen through the fixed identity and Sobel d/dH, d/dW kernels (not trained)."""

    def __init__(self):
        self.kernel = nnx.Variable(sobel_kernels(2).reshape(9, 3))  # (tap, kernel)

    def __call__(self, state: jax.Array) -> jax.Array:
        """`state: (H, W, C)` -> perception `(H, W, 3 C)`."""
        h, w, c = state.shape
        padded = jnp.pad(state, ((1, 1), (1, 1), (0, 0)))
        taps = jnp.stack([padded[i : i + h, j : j + w] for i, j in _OFFSETS], axis=-1)
        return jnp.einsum("hwct,tk->hwck", taps, self.kernel[...]).reshape(h, w, 3 * c)


class GrowingNCA(nnx.Module):
    """Fixed Sobel perceive, residual per-cell MLP, stochastic updates, alive masking."""

    def __init__(self, config: GrowingConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.perceive = SobelPerceive()
        self.update = CellMLP((3 * config.channel_size, config.hidden_size,
                               config.channel_size), rngs=rngs)

    def __call__(self, state: jax.Array, key: jax.Array) -> jax.Array:
        """One step of one sample: `state: (H, W, C)` -> the next state."""
        cfg = self.config
        pre_alive = alive_mask(state, cfg.alive_threshold, channel=0)
        fire = jax.random.bernoulli(key, cfg.fire_rate, state.shape[:-1] + (1,))
        state = state + self.update(self.perceive(state)) * fire
        return state * (pre_alive & alive_mask(state, cfg.alive_threshold, channel=0))


def seed_state(config: GrowingConfig) -> jax.Array:
    """One living cell in the middle (every channel 1), the rest empty: `(H, W, C)`."""
    h, w = config.spatial_dims
    return jnp.zeros((h, w, config.channel_size)).at[h // 2, w // 2].set(1.0)


def damage(state: jax.Array, key: jax.Array) -> jax.Array:
    """Clear a disc of cells (radius a quarter of the grid) at a random place in the middle."""
    h, w, _ = state.shape
    centre = jax.random.uniform(key, (2,), minval=0.25, maxval=0.75) * jnp.array([h, w])
    y, x = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
    inside = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 < (min(h, w) / 4) ** 2
    return jnp.where(inside[..., None], 0.0, state)


class Pool(NamedTuple):
    """The sample pool: states grown for a while, and their example (all the one target)."""

    state: jax.Array  # (P, H, W, C) float32
    index: jax.Array  # (P,) int32: the example each state grows, an index into the targets


class Batch(NamedTuple):
    """Samples drawn from the pool for one train step, worst first."""

    state: jax.Array  # (B, H, W, C) float32
    index: jax.Array  # (B,) int32: the target each sample grows
    slot: jax.Array  # (B,) int32: where in the pool each sample goes back


class GrowingGlyph(System):
    """growing: grow a glyph from one cell, persist it, regrow what is damaged."""

    name = "growing"
    picture_kind = "frame"
    trainable = nnx.Param  # the Sobel perceive is an nnx.Variable, never trained
    picture_channel = 0
    live_eval_names = ("MSE grown from the seed", "empty grid")
    frame_labels = ("seed", "grown", "target")

    @classmethod
    def from_preset(cls, preset: str = "auto", **overrides: Any) -> GrowingGlyph:
        """The system at a preset ('seed', 'cpu', 'tiny', 'auto') with config overrides."""
        return cls(build_config(GrowingConfig, PRESETS, preset, **overrides))

    def load_examples(self, source: str = "auto") -> Examples:
        """The target glyph, as the only example (`source` is ignored: it is drawn here)."""
        cfg = self.config
        target = glyph_picture(cfg.glyph, cfg.glyph_size, tuple(cfg.spatial_dims))[None]
        return Examples(target, target, f"glyph {cfg.glyph!r} of DejaVu Sans, "
                                        f"{cfg.glyph_size} cells")

    def check_examples(self, examples: Examples) -> None:
        """Targets must be `(N, H, W)` pictures of the grid's size."""
        got = tuple(np.shape(examples.train)[1:])
        if got != tuple(self.config.spatial_dims):
            raise ValueError(f"targets are {got} pictures but the grid is "
                             f"{tuple(self.config.spatial_dims)}")

    def build_model(self, rngs: nnx.Rngs) -> GrowingNCA:
        """A freshly initialised automaton (its last layer starts at zero: nothing grows)."""
        return GrowingNCA(self.config, rngs=rngs)

    def init_pool(self, key: jax.Array, train: jax.Array) -> Pool:
        """`pool_size` seeds, each growing a random target."""
        p, seed = self.config.pool_size, seed_state(self.config)
        index = jax.random.choice(key, train.shape[0], (p,)).astype(jnp.int32)
        return Pool(jnp.broadcast_to(seed, (p, *seed.shape)), index)

    def make_batch(self, pool: Pool, train: jax.Array, key: jax.Array) -> Batch:
        """Draw a batch, sort it worst first, reseed the worst and damage the best ones."""
        cfg = self.config
        sample_key, damage_key = jax.random.split(key)
        slot = jax.random.choice(sample_key, cfg.pool_size, (cfg.batch_size,), replace=False)
        state, index = pool.state[slot], pool.index[slot]
        order = jnp.argsort(jax.vmap(self._mse)(state, train[index]), descending=True)
        slot, state, index = slot[order], state[order], index[order]
        state = state.at[0].set(seed_state(cfg))
        if cfg.num_damaged:
            keys = jax.random.split(damage_key, cfg.num_damaged)
            best = state[-cfg.num_damaged :]
            state = state.at[-cfg.num_damaged :].set(jax.vmap(damage)(best, keys))
        return Batch(state, index, slot.astype(jnp.int32))

    def loss(self, model: GrowingNCA, batch: Batch, train: jax.Array,
             key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Grow each sample for a random number of steps in [2/3 n, n]; MSE against its target.

        Returns the mean loss and the final states `(B, H, W, C)`.
        """
        n, b = self.config.num_steps, self.config.batch_size
        count_key, rollout_key = jax.random.split(key)
        counts = jax.random.randint(count_key, (b,), (2 * n) // 3, n + 1)
        keys = jax.random.split(rollout_key, (b, n))
        step = jax.checkpoint(model)

        def one(state, keys, count):
            def body(state, inputs):
                t, key = inputs
                return jnp.where(t < count, step(state, key), state), None

            return jax.lax.scan(body, state, (jnp.arange(n), keys))[0]

        final = jax.vmap(one)(batch.state, keys, counts)
        return jnp.mean(jax.vmap(self._mse)(final, train[batch.index])), final

    def write_back(self, pool: Pool, batch: Batch, final: jax.Array) -> Pool:
        """Put the grown states back in the slots they came from."""
        return pool._replace(state=pool.state.at[batch.slot].set(final))

    # --- pictures --------------------------------------------------------------------------

    def seed(self, example: jax.Array, key: jax.Array) -> jax.Array:
        """One living cell in the middle, whatever the target."""
        return seed_state(self.config)

    def render(self, state: jax.Array) -> jax.Array:
        """Channel 0, the picture, clipped to [0, 1]."""
        return jnp.clip(state[..., 0], 0.0, 1.0)

    def target(self, example: jax.Array) -> jax.Array:
        """The glyph."""
        return example

    # --- metrics ---------------------------------------------------------------------------

    def live_eval(self, model: GrowingNCA, examples: Examples,
                  key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """MSE after num_steps grown from the seed, and that of an empty grid."""
        target = examples.test[0]
        grown = final_state(model, seed_state(self.config), key, self.config.num_steps)
        return self._mse(grown, target), jnp.mean(jnp.square(target))

    def evaluate(self, model: GrowingNCA, examples: Examples, key: jax.Array) -> dict[str, Any]:
        """How well it grows, persists and regrows, as MSE of the picture against the target.

        `grown_mse` after num_steps from the seed; `persisted_mse` after twice that;
        `regrown_mse` after damaging the grown picture and num_steps more; `empty_mse` is the
        baseline of a grid where nothing grew.
        """
        target, n = examples.test[0], self.config.num_steps
        grow_key, persist_key, damage_key, regrow_key = jax.random.split(key, 4)
        grown = final_state(model, seed_state(self.config), grow_key, n)
        persisted = final_state(model, grown, persist_key, n)
        regrown = final_state(model, damage(grown, damage_key), regrow_key, n)
        return {
            "grown_mse": float(self._mse(grown, target)),
            "persisted_mse": float(self._mse(persisted, target)),
            "regrown_mse": float(self._mse(regrown, target)),
            "empty_mse": float(jnp.mean(jnp.square(target))),
        }

    def _mse(self, state: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.mean(jnp.square(state[..., 0] - target))
