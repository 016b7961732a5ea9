"""Device-side views of a training state for snapshots and evaluation: rollouts and pictures.

The functions are pure and jitted once per trainer; they return small arrays (uint8 where they
are pictures) so that little travels from the device to the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from nca_widgets.config import SANCAConfig
from nca_widgets.systems import Task, rrcnn, sa_nca
from nca_widgets.training import TrainState

POOL_VIEW_SIZE = 32  # samples shown by a pool view
LIVE_EVAL_SIZE = 8  # fixed test digits (the first ones) scored by the live evaluation
PROBE_NOISE = 0.5  # rrcnn: noise strength alpha of the probe digit
_VIEW_SEED = 1234  # keys of probe rollouts and of rrcnn's gallery noise: fixed, so views compare


def rollout(step_fn, state: jax.Array, key: jax.Array, num_steps: int) -> jax.Array:
    """Every state of a rollout, the initial one first: `(num_steps + 1, *state.shape)`."""
    keys = jax.random.split(key, num_steps)
    _, states = jax.lax.scan(lambda s, k: (step_fn(s, k),) * 2, state, keys)
    return jnp.concatenate([state[None], states])


def final_state(step_fn, state: jax.Array, key: jax.Array, num_steps: int) -> jax.Array:
    """The state after `num_steps`, keeping no intermediate states."""
    keys = jax.random.split(key, num_steps)
    return jax.lax.scan(lambda s, k: (step_fn(s, k), None), state, keys)[0]


def to_uint8(x: jax.Array, low: float | jax.Array = 0.0, high: float | jax.Array = 1.0):
    """Map `[low, high]` to 0..255, clipped: the picture format of snapshots."""
    scaled = (x - low) / jnp.maximum(high - low, 1e-12)
    return jnp.round(jnp.clip(scaled, 0.0, 1.0) * 255).astype(jnp.uint8)


def psnr(estimate: jax.Array, target: jax.Array) -> jax.Array:
    """PSNR in dB of `estimate` clipped to [0, 1] against `target`, over the last two axes."""
    mse = jnp.mean(jnp.square(jnp.clip(estimate, 0.0, 1.0) - target), axis=(-2, -1))
    return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


def noisy_gallery(test_images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rrcnn's fixed gallery: the first test digits with noise rising from 0.1 to 0.9.

    Returns `(noisy (P, H, W), digit indices (P,), alphas (P,))`.
    """
    n = min(POOL_VIEW_SIZE, test_images.shape[0])
    digits = jnp.arange(n, dtype=jnp.int32)
    alphas = jnp.linspace(0.1, 0.9, n)
    keys = jax.random.split(jax.random.key(_VIEW_SEED), n)
    return jax.vmap(rrcnn.add_noise)(test_images[digits], alphas, keys), digits, alphas


class Views:
    """The jitted views of one trainer's task."""

    def __init__(self, task: Task, graphdef: nnx.GraphDef):
        self.task, self.graphdef, self.config = task, graphdef, task.config
        self.is_sa_nca = isinstance(self.config, SANCAConfig)
        self.pool_view = jax.jit(self._pool_view)
        self.probe = jax.jit(self._probe)
        self.channel_volume = jax.jit(self._channel_volume)
        self.live_eval = jax.jit(self._live_eval)
        self.depth_labels: tuple[str, ...] = ()
        if self.is_sa_nca:
            self.live_eval_names = ("test far-side MSE", "mean digit")
            depth = self.config.spatial_dims[2]
            labels = [""] * depth
            labels[0], labels[depth // 2], labels[-1] = "input", "bottleneck", "far side"
            self.depth_labels = tuple(labels)
        else:
            self.live_eval_names = (f"test MSE at noise {PROBE_NOISE}", "noisy input")

    def model(self, state: TrainState) -> nnx.Module:
        """The model with the state's parameters."""
        return nnx.merge(self.graphdef, state.params, state.frozen)

    def _pool_view(self, state: TrainState, train_images: jax.Array, test_images: jax.Array):
        """`(targets u8 (P, H, W), renders u8 (P, H, W), losses (P,), digits (P,))`.

        sa-nca: the first POOL_VIEW_SIZE pool slots, rendered at the far side. rrcnn keeps no
        pool; it shows its noisy test gallery, denoised for `num_steps`.
        """
        if self.is_sa_nca:
            n = min(POOL_VIEW_SIZE, self.config.pool_size)
            states, digits = state.pool.state[:n], state.pool.digit[:n]
            targets = train_images[digits]
            renders = sa_nca.far_side(states)
            losses = jax.vmap(sa_nca.sample_mse)(states, targets)
        else:
            noisy, digits, _ = noisy_gallery(test_images)
            targets = test_images[digits]
            seeds = jax.vmap(lambda x: rrcnn.seed_state(self.config, x))(noisy)
            keys = jax.random.split(jax.random.key(_VIEW_SEED), len(digits))
            finals = jax.vmap(
                lambda s, k: final_state(self.model(state), s, k, self.config.num_steps)
            )(seeds, keys)
            renders = rrcnn.estimate(finals)
            losses = jnp.mean(jnp.square(renders - targets), axis=(1, 2))
        return to_uint8(targets), to_uint8(renders), losses, digits

    def _probe(self, state: TrainState, digit: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A probe digit `(H, W)` rolled out for 2 * num_steps: `(states, seed picture)`.

        sa-nca: all states `(T, H, W, D, C)` (one channel is then cut by `channel_volume`);
        rrcnn: the estimate `(T, H, W)` float, and the noisy input as the seed picture.
        """
        key = jax.random.key(_VIEW_SEED)
        n = 2 * self.config.num_steps
        if self.is_sa_nca:
            states = rollout(self.model(state), sa_nca.seed_state(self.config, digit), key, n)
            return states, digit
        noise_key, key = jax.random.split(key)
        noisy = rrcnn.add_noise(digit, PROBE_NOISE, noise_key)
        states = rollout(self.model(state), rrcnn.seed_state(self.config, noisy), key, n)
        return rrcnn.estimate(states), noisy

    def _live_eval(self, state: TrainState, digits: jax.Array, mean_digit: jax.Array):
        """`(error, baseline)` on `digits: (K, H, W)`, with evaluate()'s keys so points compare.

        sa-nca: far-side MSE after 2 * num_steps (what `evaluate` reports for the same digits),
        and that of the mean training digit `mean_digit: (H, W)`. rrcnn: MSE of the estimate
        after num_steps at PROBE_NOISE, and that of the noisy input.
        """
        keys = jax.random.split(jax.random.key(0), digits.shape[0])
        model = self.model(state)
        if self.is_sa_nca:
            def far(digit, key):
                seed = sa_nca.seed_state(self.config, digit)
                return sa_nca.far_side(final_state(model, seed, key, 2 * self.config.num_steps))

            renders, baseline = jax.vmap(far)(digits, keys), mean_digit
        else:
            def denoise(digit, key):
                noise_key, key = jax.random.split(key)
                noisy = rrcnn.add_noise(digit, PROBE_NOISE, noise_key)
                final = final_state(model, rrcnn.seed_state(self.config, noisy), key,
                                    self.config.num_steps)
                return jnp.clip(rrcnn.estimate(final), 0.0, 1.0), noisy

            renders, baseline = jax.vmap(denoise)(digits, keys)
        return jnp.mean(jnp.square(renders - digits)), jnp.mean(jnp.square(baseline - digits))

    def _channel_volume(self, states: jax.Array, channel: jax.Array):
        """One channel of sa-nca probe states as `(T, D, H, W)` uint8, and its value range.

        The digit channel (the last) maps [0, 1]; hidden channels map a range symmetric about
        zero that covers the whole rollout, so 0 sits at uint8 127.5 and colours compare over time.
        """
        values = jnp.moveaxis(jnp.take(states, channel, axis=-1), -1, 1)
        is_digit = channel == states.shape[-1] - 1
        bound = jnp.maximum(jnp.max(jnp.abs(values)), 1e-6)
        low, high = jnp.where(is_digit, 0.0, -bound), jnp.where(is_digit, 1.0, bound)
        return to_uint8(values, low, high), low, high


EVAL_NOISE_LEVELS = (0.25, 0.5, 0.75)


def evaluate(
    views: Views, state: TrainState, test_images: jax.Array, mean_digit: jax.Array, seed: int = 0
) -> dict:
    """Test-set metrics over all of `test_images: (M, H, W)`; `mean_digit: (H, W)` of training.

    sa-nca: `far_side_mse`, the reconstruction MSE at the far side after 2 * num_steps, beside
    its two baselines at this digit size (`black_mse`: an all-black far side; `mean_digit_mse`:
    the mean training digit drawn there) and their ratio `far_side_vs_mean_digit`, and
    `depth_mse`, the MSE of the digit channel at every depth (a profile through the
    bottleneck; the middle depth is all zero but its centre).
    rrcnn: at each noise level, the mean PSNR (dB) of the noisy input (its baseline) and of the
    output after num_steps (the horizon it was trained for).
    """
    config, model = views.config, views.model(state)
    keys = jax.random.split(jax.random.key(seed), test_images.shape[0])
    chunk = max(1, min(config.batch_size, 32))
    if views.is_sa_nca:
        def one(args):
            digit, key = args
            seed_state = sa_nca.seed_state(config, digit)
            final = final_state(model, seed_state, key, 2 * config.num_steps)
            return jnp.mean(jnp.square(final[..., -1] - digit[:, :, None]), axis=(0, 1))

        depth_mse = jnp.mean(jax.lax.map(one, (test_images, keys), batch_size=chunk), axis=0)
        mean_digit_mse = float(jnp.mean(jnp.square(test_images - mean_digit)))
        return {
            "far_side_mse": float(depth_mse[-1]),
            "far_side_vs_mean_digit": round(float(depth_mse[-1]) / mean_digit_mse, 4),
            "mean_digit_mse": mean_digit_mse,
            "black_mse": float(jnp.mean(jnp.square(test_images))),
            "depth_mse": [round(float(x), 6) for x in depth_mse],
            "num_test_digits": int(test_images.shape[0]),
        }

    out = {"num_test_digits": int(test_images.shape[0])}
    for alpha in EVAL_NOISE_LEVELS:
        def one(args, alpha=alpha):
            digit, key = args
            noise_key, key = jax.random.split(key)
            noisy = rrcnn.add_noise(digit, alpha, noise_key)
            final = final_state(model, rrcnn.seed_state(config, noisy), key, config.num_steps)
            return psnr(noisy, digit), psnr(rrcnn.estimate(final), digit)

        noisy_db, out_db = jax.lax.map(one, (test_images, keys), batch_size=chunk)
        out[f"psnr_noisy@{alpha}"] = float(jnp.mean(noisy_db))
        out[f"psnr_output@{alpha}"] = float(jnp.mean(out_db))
    return out
