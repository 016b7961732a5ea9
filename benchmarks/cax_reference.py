"""The two reference notebooks, written against CAX 0.3.3, parameterised by our configs.

This is the comparison baseline for `bench_vs_cax.py` and `loss_curves.py`. It follows
`/work/shared/seeds/000_*.txt` (self-autoencoding MNIST) and `001_*.txt` (RRCNN) line for line:
the same CAX modules (`ConvPerceive` + `NCAUpdate` / `ResidualUpdate`, `Pool`), the same
`nnx.Optimizer` over the same optax chain and schedule, and the notebooks' `loss_fn` and
`train_step` (`nnx.jit`, `nnx.split_rngs` + `nnx.vmap`, intermediates collected with `sow`).
The notebooks' module-level constants become fields of our `SANCAConfig` / `RRCNNConfig`, and
the training digits are an array passed in instead of torchvision's MNIST.

Notebook 000's scored step, two ways (`CaxSANCA(..., captured_key=...)`):

* `captured_key=True`, **the notebook as written**: `loss_fn(cs, state, x)` draws the scored
  rollout step from the global `key`, which `jit` reads once, when `train_step` is first traced
  (after the main loop's first `key, subkey = split(key)`), and captures as a constant; so every
  train step scores the same step indices. Here `loss_fn` closes over that same key, fixed at
  construction, and `train_step` splits its key in two, as the notebook does.
* `captured_key=False` (the default), **per-step key, as our trainer**: `train_step` splits one
  more key from its per-step `key` and passes it to `loss_fn(cs, state, x, key)`, so each train
  step scores fresh step indices. This is the variant `check_against_ours` compares with ours,
  and `loss_curves.py` trains.

Other differences from the notebooks, all deliberate:

* flax 0.12 wants `nnx.Optimizer(model, tx, wrt=...)` (`wrt` is keyword-only and required) and
  `optimizer.update(model, grads)`; the notebooks already use that form.
* `num_kernels < 4` keeps the first kernels of identity + Sobel, as our `DepthwisePerceive`.

As in the notebooks, the digits are closed over by the jitted functions (`x_train` / `y_train`
are globals there), so XLA sees them as constants.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from _systems import Config, RRCNNConfig, SANCAConfig, system_for
from cax.core import ComplexSystem, Input, State
from cax.core.perceive import ConvPerceive, grad_kernel, identity_kernel
from cax.core.update import ResidualUpdate
from cax.core.update.nca_update import NCAUpdate
from cax.nn.pool import Pool
from flax import nnx

# --------------------------------------------------------------------------- notebook 000


def notebook_optimizer(cs: ComplexSystem, cfg: Config, wrt: Any) -> nnx.Optimizer:
    """The notebooks' optimizer: clipping at 1.0, Adam on a linear learning-rate schedule."""
    lr_sched = optax.linear_schedule(
        init_value=cfg.learning_rate,
        end_value=cfg.lr_end_factor * cfg.learning_rate,
        transition_steps=cfg.lr_transition_steps,
    )
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(learning_rate=lr_sched))
    return nnx.Optimizer(cs, tx, wrt=wrt)


class SelfAutoencodingNCA(ComplexSystem):
    """Self-Autoencoding Neural Cellular Automata class (notebook 000)."""

    def __init__(self, config: SANCAConfig, *, rngs: nnx.Rngs):
        """Initialize Self-Autoencoding NCA."""
        channel_size, num_kernels = config.channel_size, config.num_kernels
        self.spatial_dims = tuple(config.spatial_dims)
        self.perceive = ConvPerceive(
            channel_size=channel_size,
            perception_size=num_kernels * channel_size,
            kernel_size=(3, 3, 3),
            feature_group_count=channel_size,
            rngs=rngs,
        )
        self.update = NCAUpdate(
            channel_size=channel_size,
            perception_size=num_kernels * channel_size,
            hidden_layer_sizes=(config.hidden_size,),
            cell_dropout_rate=config.cell_dropout_rate,
            kernel_size=(3, 3, 3),
            alive_threshold=config.alive_threshold,
            zeros_init=True,
            rngs=rngs,
        )

        # Initialize kernel with sobel filters
        kernel = jnp.concatenate([identity_kernel(ndim=3), grad_kernel(ndim=3)], axis=-1)
        kernel = kernel[..., :num_kernels]
        kernel = jnp.expand_dims(jnp.concatenate([kernel] * channel_size, axis=-1), axis=-2)
        self.perceive.conv.kernel.value = kernel

    def _step(self, state: State, input: Input | None = None, *, sow: bool = False) -> State:
        """Perform a single step."""
        # Extract x
        x = state[..., 0, -1:]

        # Step
        perception = self.perceive(state)
        next_state = self.update(state, perception, input)

        # Mask
        mid = tuple(size // 2 for size in self.spatial_dims)
        center = next_state[..., *mid, :]
        next_state = next_state.at[..., mid[-1], :].set(0.0)  # Mask
        next_state = next_state.at[..., *mid, :].set(center)  # Except center cell

        # Override
        next_state = next_state.at[..., 0, -1:].set(x)

        if sow:
            self.sow(nnx.Intermediate, "state", next_state)

        return next_state


class CaxSANCA:
    """Notebook 000's training loop: `step()` is one iteration of its main loop."""

    update_params = nnx.All(nnx.Param)

    def __init__(
        self, config: SANCAConfig, images: jax.Array, seed: int = 0, *, captured_key: bool = False
    ):
        """`images: (N, H, W)` float32 in [0, 1]: the notebook's `x_train[..., 0]`.

        `captured_key=True`: `loss_fn` scores the steps drawn from one key captured at
        construction, as the notebook as written does; `False`: from a key split per train step
        (see the module docstring).
        """
        self.config = cfg = config
        self.captured_key = captured_key
        spatial_dims, channel_size = tuple(cfg.spatial_dims), cfg.channel_size
        num_steps, batch_size = cfg.num_steps, cfg.batch_size
        x_train = jnp.asarray(images)[..., None]
        self.x_train = x_train

        key = jax.random.key(seed)
        rngs = nnx.Rngs(seed)
        self.cs = cs = SelfAutoencodingNCA(cfg, rngs=rngs)

        def sample_state(key):
            """Sample a state with a random image."""
            state = jnp.zeros(spatial_dims + (channel_size,))
            x_idx = jax.random.choice(key, x_train.shape[0])
            x = x_train[x_idx]
            state = state.at[..., 0, -1:].set(x)
            return state, x_idx

        key, subkey = jax.random.split(key)
        keys = jax.random.split(subkey, cfg.pool_size)
        state, x_idx = jax.vmap(sample_state)(keys)
        self.pool = Pool.create({"state": state, "x_idx": x_idx})

        update_params = self.update_params
        self.optimizer = notebook_optimizer(cs, cfg, update_params)
        self.key = key

        def mse(state, x):
            """Mean Squared Error."""
            return jnp.mean(jnp.square(state[..., :, -1:] - x[..., None, :]))

        # The notebook's global `key` when `train_step` is first traced, i.e. after the main
        # loop's first `key, subkey = split(key)`: `self.key` after the first `step()`.
        notebook_key = jax.random.split(key)[0]

        def rollout_loss(cs, state, x, key):
            """Loss function; `key` draws the scored step."""
            state_axes = nnx.StateAxes({nnx.RngState: 0, nnx.Intermediate: 0, ...: None})
            nnx.split_rngs(splits=batch_size)(
                nnx.vmap(
                    lambda cs, state: cs(state, num_steps=num_steps, sow=True),
                    in_axes=(state_axes, 0),
                )
            )(cs, state)

            # Get intermediate states
            intermediates = nnx.pop(cs, nnx.Intermediate)
            state = intermediates.state.value[0]

            # Sample a random step
            idx = jax.random.randint(key, (batch_size,), num_steps // 2, num_steps)
            state = state[jnp.arange(batch_size), idx]

            loss = mse(state, x)
            return loss, state

        if captured_key:

            @nnx.jit
            def loss_fn(cs, state, x):
                """Loss function (the notebook's: the key is a constant captured by `jit`)."""
                return rollout_loss(cs, state, x, notebook_key)
        else:

            @nnx.jit
            def loss_fn(cs, state, x, key):
                """Loss function; `key` draws the scored step."""
                return rollout_loss(cs, state, x, key)

        @nnx.jit
        def train_step(cs, optimizer, pool, key):
            """Train step."""
            # The notebook splits two keys; the per-step variant one more, for `loss_fn`.
            keys = jax.random.split(key, 2 if captured_key else 3)
            sample_key, sample_state_key, loss_keys = keys[0], keys[1], tuple(keys[2:])

            # Sample from pool
            pool_idx, batch = pool.sample(sample_key, batch_size=batch_size)
            current_state = batch["state"]
            current_x_idx = batch["x_idx"]
            current_x = x_train[current_x_idx]

            # Sort by descending loss
            sort_idx = jnp.argsort(jax.vmap(mse)(current_state, current_x), descending=True)
            pool_idx = pool_idx[sort_idx]
            current_state = current_state[sort_idx]
            current_x_idx = current_x_idx[sort_idx]

            # Sample a new state to replace the worst
            new_state, new_x_idx = sample_state(sample_state_key)
            current_state = current_state.at[0].set(new_state)
            current_x_idx = current_x_idx.at[0].set(new_x_idx)
            current_x = x_train[current_x_idx]

            (loss, current_state), grad = nnx.value_and_grad(
                loss_fn, has_aux=True, argnums=nnx.DiffState(0, update_params)
            )(cs, current_state, current_x, *loss_keys)
            optimizer.update(cs, grad)

            pool = pool.update(pool_idx, {"state": current_state, "x_idx": current_x_idx})
            return loss, pool

        self.loss_fn, self.train_step = loss_fn, train_step

    def step(self) -> jax.Array:
        """One train step (the notebook's main-loop body); returns the loss (on device)."""
        self.key, subkey = jax.random.split(self.key)
        loss, self.pool = self.train_step(self.cs, self.optimizer, self.pool, subkey)
        return loss

    def outputs(self) -> Any:
        """What to block on after a step: the loss, the pool and the parameters."""
        return self.pool, nnx.state(self.cs, nnx.Param)


# --------------------------------------------------------------------------- notebook 001


class RRCNN(ComplexSystem):
    """Recurrent Residual Convolutional Neural Network class (notebook 001)."""

    def __init__(self, config: RRCNNConfig, *, rngs: nnx.Rngs):
        """Initialize RRCNN."""
        self.perceive = ConvPerceive(
            channel_size=config.channel_size,
            perception_size=config.perception_size,
            rngs=rngs,
        )
        self.update = ResidualUpdate(
            num_spatial_dims=len(config.spatial_dims),
            channel_size=config.channel_size,
            perception_size=config.perception_size,
            hidden_layer_sizes=tuple(config.update_hidden_layer_sizes),
            cell_dropout_rate=config.cell_dropout_rate,
            zeros_init=True,
            rngs=rngs,
        )

    def _step(self, state: State, input: Input | None = None, *, sow: bool = False) -> State:
        perception = self.perceive(state)
        next_state = self.update(state, perception, input)

        if sow:
            self.sow(nnx.Intermediate, "state", next_state)

        return next_state


class CaxRRCNN:
    """Notebook 001's training loop: `step()` is one iteration of its main loop."""

    update_params = nnx.All(nnx.Param, nnx.PathContains("update"))

    def __init__(self, config: RRCNNConfig, images: jax.Array, seed: int = 0):
        """`images: (N, H, W)` float32 in [0, 1]: the notebook's `y_train[..., 0]`."""
        self.config = cfg = config
        channel_size, num_steps, batch_size = cfg.channel_size, cfg.num_steps, cfg.batch_size
        y_train = jnp.asarray(images)[..., None]
        self.y_train = y_train

        key = jax.random.key(seed)
        rngs = nnx.Rngs(seed)
        self.cs = cs = RRCNN(cfg, rngs=rngs)

        def add_noise(image, alpha, key):
            """Add noise to the image with a given alpha value."""
            noise = jax.random.normal(key, image.shape)
            noisy_image = (1 - alpha) * image + alpha * noise
            return jnp.clip(noisy_image, 0.0, 1.0)

        def sample_state(key):
            """Sample a state with a randomly sampled image and added noise."""
            state = jnp.zeros(y_train.shape[1:3] + (channel_size,))
            sample_key, alpha_key, noise_key = jax.random.split(key, 3)
            y_idx = jax.random.choice(sample_key, y_train.shape[0])
            y = y_train[y_idx]
            alpha = jax.random.uniform(alpha_key)
            noisy_y = add_noise(y, alpha, noise_key)
            return state.at[..., -1:].set(noisy_y), y_idx

        update_params = self.update_params
        self.optimizer = notebook_optimizer(cs, cfg, update_params)
        self.key = key

        def mse(state, y):
            """Mean Squared Error."""
            return jnp.mean(jnp.square(state[..., -1:] - y))

        @nnx.jit
        def loss_fn(cs, state, y):
            """Loss function."""
            state_axes = nnx.StateAxes({nnx.RngState: 0, nnx.Intermediate: 0, ...: None})
            state = nnx.split_rngs(splits=batch_size)(
                nnx.vmap(
                    lambda cs, state: cs(state, num_steps=num_steps),
                    in_axes=(state_axes, 0),
                )
            )(cs, state)
            loss = mse(state, y)
            return loss

        @nnx.jit
        def train_step(cs, optimizer, key):
            """Train step."""
            keys = jax.random.split(key, batch_size)
            current_state, y_idx = jax.vmap(sample_state)(keys)
            y = y_train[y_idx]

            loss, grad = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, update_params))(
                cs, current_state, y
            )
            optimizer.update(cs, grad)

            return loss

        self.loss_fn, self.train_step = loss_fn, train_step

    def step(self) -> jax.Array:
        """One train step (the notebook's main-loop body); returns the loss (on device)."""
        self.key, subkey = jax.random.split(self.key)
        return self.train_step(self.cs, self.optimizer, subkey)

    def outputs(self) -> Any:
        """What to block on after a step besides the loss: the parameters."""
        return nnx.state(self.cs, nnx.Param)


# --------------------------------------------------------------------------- helpers


def make_cax_trainer(
    config: Config, images: jax.Array, seed: int = 0, *, captured_key: bool = False
) -> CaxSANCA | CaxRRCNN:
    """The CAX notebook's training loop for `config` (a SANCAConfig or an RRCNNConfig).

    `captured_key` picks sa-nca's variant (see `CaxSANCA`); notebook 001 has no such key.
    """
    if isinstance(config, SANCAConfig):
        return CaxSANCA(config, images, seed, captured_key=captured_key)
    if isinstance(config, RRCNNConfig):
        return CaxRRCNN(config, images, seed)
    raise TypeError(f"no CAX reference for config type {type(config).__name__}")


def param_counts(trainer: CaxSANCA | CaxRRCNN) -> tuple[int, int]:
    """(all parameters, trained parameters) of the CAX model, as the notebooks count them."""
    count: Callable[[Any], int] = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    total = count(nnx.state(trainer.cs, nnx.Param))
    trained = count(nnx.state(trainer.cs, trainer.update_params))
    return total, trained


def check_against_ours(config: Config, seed: int = 0) -> dict[str, float]:
    """Load our model's parameters into the CAX model and compare loss and gradients.

    Cell dropout is switched off (its masks come from different key derivations), the last
    layer is drawn at random (it starts at zero), and both losses see the same batch and, for
    sa-nca, the same scored steps. Returns the loss difference and the largest relative
    (L2) difference of any parameter's gradient.
    """
    import dataclasses

    import numpy as np

    from nca_widgets.data import load_digits
    from nca_widgets.training import split_model

    config = dataclasses.replace(config, cell_dropout_rate=0.0)
    images = jnp.asarray(load_digits("bundled", size=config.spatial_dims[:2]).train_images)
    task = system_for(config)
    ours = task.build_model(nnx.Rngs(seed))
    last = ours.update.layers[-1]
    last.kernel[...] = 0.01 * jax.random.normal(jax.random.key(seed + 1), last.kernel.shape)
    ref = make_cax_trainer(config, images, seed)
    ref.cs.perceive.conv.kernel[...] = ours.perceive.kernel[...]
    for mine, theirs in zip(ours.update.layers, ref.cs.update.layers, strict=True):
        theirs.kernel[...] = mine.kernel[...].reshape(theirs.kernel.shape)
        theirs.bias[...] = mine.bias[...]

    key = jax.random.key(seed + 2)
    pool = task.init_pool(jax.random.key(seed + 3), images)
    batch = task.make_batch(pool, images, jax.random.key(seed + 4))
    graphdef, params, frozen = split_model(task, ours)

    def our_loss(p):
        return task.loss(nnx.merge(graphdef, p, frozen), batch, images, key)[0]

    loss_ours, grads_ours = jax.value_and_grad(our_loss)(params)
    argnums = nnx.DiffState(0, ref.update_params)
    if isinstance(config, SANCAConfig):
        score_key = jax.random.split(key)[0]  # our loss draws the scored steps from this key

        def cax_loss(cs):
            return ref.loss_fn(cs, batch.state, ref.x_train[batch.index], score_key)[0]
    else:

        def cax_loss(cs):
            return ref.loss_fn(cs, batch.state, ref.y_train[batch.index])

    loss_cax, grads_cax = nnx.value_and_grad(cax_loss, argnums=argnums)(ref.cs)
    rel = [
        float(np.linalg.norm(np.ravel(a) - np.ravel(b)) / max(np.linalg.norm(np.ravel(a)), 1e-30))
        for a, b in zip(jax.tree.leaves(grads_ours), jax.tree.leaves(grads_cax), strict=True)
    ]
    return {
        "loss_ours": float(loss_ours),
        "loss_cax": float(loss_cax),
        "loss_rel_diff": abs(float(loss_ours) - float(loss_cax)) / abs(float(loss_cax)),
        "grad_max_rel_diff": max(rel),
    }


if __name__ == "__main__":
    # Parameter counts at the seed configs; loss and gradients against ours at the bench configs.
    import warnings

    from nca_widgets.data import load_digits
    from nca_widgets.registry import make_config

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # flax 0.12 on CAX's sow
    bench = {
        "sa-nca": dict(spatial_dims=(28, 28, 10), num_steps=24, batch_size=2, pool_size=64,
                       check_reach=False),  # a check of the numbers, not of reach
        "rrcnn": dict(num_steps=16, batch_size=2),
    }
    for system in ("sa-nca", "rrcnn"):
        seed_cfg = make_config(system, "seed")
        digits = load_digits("bundled", size=seed_cfg.spatial_dims[:2]).train_images
        total, trained = param_counts(make_cax_trainer(seed_cfg, digits[:8]))
        print(f"{system} seed config: {total:,} parameters, {trained:,} trained")
        check = check_against_ours(make_config(system, "seed", **bench[system]))
        print(f"{system} vs ours at {bench[system]}, no dropout: loss {check['loss_cax']:.6g} "
              f"(CAX) vs {check['loss_ours']:.6g} (ours), relative difference "
              f"{check['loss_rel_diff']:.1e}; largest relative gradient difference "
              f"{check['grad_max_rel_diff']:.1e}")
