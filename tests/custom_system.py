"""A system written outside the package, as a researcher would: a 2-D NCA that inpaints digits.

The seed state holds the top half of a digit in channel 0; the automaton must draw the bottom
half. It has no pool (a fresh batch every step), so the default pool view rolls out test digits.
The browser test runs this file's source in a notebook cell; keep it self-contained.
"""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

import nca_widgets as nw


@dataclass(frozen=True)
class InpaintConfig:
    size: int = 12  # digits are size x size cells
    channels: int = 12  # channel 0 is the picture
    hidden: int = 64
    num_steps: int = 12  # NCA steps per train step: enough to cross the missing half
    batch_size: int = 8
    learning_rate: float = 3e-3
    num_train_steps: int = 300


class InpaintNCA(nnx.Module):
    def __init__(self, cfg: InpaintConfig, rngs: nnx.Rngs):
        self.perceive = nnx.Conv(cfg.channels, 3 * cfg.channels, (3, 3), rngs=rngs)
        self.hidden = nnx.Linear(3 * cfg.channels, cfg.hidden, rngs=rngs)
        self.out = nnx.Linear(cfg.hidden, cfg.channels, kernel_init=nnx.initializers.zeros,
                              rngs=rngs)

    def __call__(self, state, key):  # one step of one (H, W, C) state
        fire = jax.random.bernoulli(key, 0.5, state.shape[:-1] + (1,))
        return state + self.out(nnx.relu(self.hidden(self.perceive(state)))) * fire


class Inpainting(nw.System):
    name, picture_kind = "inpainting", "frame"
    frame_labels = ("top half", "completed", "digit")

    def load_examples(self, source="auto"):
        return nw.load_digits(source, size=(self.config.size,) * 2).examples()

    def build_model(self, rngs):
        return InpaintNCA(self.config, rngs)

    def seed(self, digit, key):
        top = digit.at[digit.shape[0] // 2 :].set(0.0)
        return jnp.zeros((*digit.shape, self.config.channels)).at[..., 0].set(top)

    def render(self, state):
        return jnp.clip(state[..., 0], 0.0, 1.0)

    def target(self, digit):
        return digit

    def init_pool(self, key, train):
        return ()  # no pool: every batch is fresh

    def make_batch(self, pool, train, key):
        return jax.random.choice(key, train.shape[0], (self.config.batch_size,))

    def loss(self, model, index, train, key):
        def inpaint(digit, key):
            return nw.final_state(model, self.seed(digit, key), key, self.config.num_steps)

        final = jax.vmap(inpaint)(train[index], jax.random.split(key, index.shape[0]))
        return jnp.mean(jnp.square(final[..., 0] - train[index])), final

    def write_back(self, pool, batch, final):
        return pool
