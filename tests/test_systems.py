"""The built-in systems: the two reference notebooks' sizes, masks and pool; compiling, learning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nca_widgets.registry import make_config, make_system
from nca_widgets.systems import sa_nca as sa
from nca_widgets.training import TRACE_COUNTS, init_train_state, make_train_step, split_model


def count(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    ("system", "total", "trainable"), [("sa-nca", 22_480, 22_480), ("rrcnn", 69_952, 33_088)]
)
def test_seed_parameter_counts_match_the_notebooks(system, total, trainable):
    task = make_system(system, "seed")
    _, params, frozen = split_model(task, task.build_model(nnx.Rngs(0)))
    assert count(params) + count(frozen) == total
    assert count(params) == trainable


def test_sa_nca_perceive_starts_as_identity_and_sobel():
    model = sa.SANCA(make_config("sa-nca", "seed"), rngs=nnx.Rngs(0))
    kernel = np.asarray(model.perceive.kernel[...])  # (3, 3, 3, 1, 64)
    assert kernel.shape == (3, 3, 3, 1, 64)
    identity = kernel[..., 0, 0]
    assert identity[1, 1, 1] == 1 and identity.sum() == 1
    d_depth = kernel[..., 0, 3]  # channel 0, kernel 3: Sobel along depth, L1 norm 1
    np.testing.assert_allclose(np.abs(d_depth).sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(d_depth[:, :, 0], -d_depth[:, :, 2])
    np.testing.assert_array_equal(kernel[..., 0, 4:8], kernel[..., 0, 0:4])  # same per channel


def test_sa_nca_step_masks_the_middle_slice_and_clamps_the_digit(tiny_digits):
    config = make_config("sa-nca", "tiny", cell_dropout_rate=0.0)
    model = sa.SANCA(config, rngs=nnx.Rngs(0))
    # Give the zero-initialised last layer weights, so the step really writes everywhere.
    last = model.update.layers[-1]
    last.kernel[...] = jax.random.normal(jax.random.key(1), last.kernel.shape)
    last.bias[...] = jnp.ones(last.bias.shape)
    digit = jnp.asarray(tiny_digits["sa-nca"].train_images[0])
    h, w, d = config.spatial_dims
    state = sa.seed_state(config, digit)
    for key in jax.random.split(jax.random.key(0), 5):
        state = model(state, key)
        middle = np.array(state[:, :, d // 2])
        centre = middle[h // 2, w // 2].copy()
        middle[h // 2, w // 2] = 0
        assert not middle.any(), "the middle slice is zero except its centre cell"
        np.testing.assert_array_equal(state[:, :, 0, -1], digit)
    assert np.abs(centre).sum() > 0, "the centre cell carries information"
    assert np.abs(np.asarray(state[:, :, 1 : d // 2])).sum() > 0, "the digit's side updates"


def test_alive_mask_kills_cells_far_from_life():
    config = make_config("sa-nca", "tiny", cell_dropout_rate=0.0)
    model = sa.SANCA(config, rngs=nnx.Rngs(0))
    last = model.update.layers[-1]
    last.bias[...] = jnp.ones(last.bias.shape)  # every cell would grow by 1 per step
    state = sa.seed_state(config, jnp.zeros(config.spatial_dims[:2]).at[5, 5].set(1.0))
    out = np.asarray(model(state, jax.random.key(0)))
    alive = np.zeros(config.spatial_dims, bool)
    alive[4:7, 4:7, 0:2] = True  # the 3x3x3 neighbourhood of the one live cell (5, 5, 0)
    assert np.all(out[~alive][:, :-1] == 0)
    assert np.all(out[4:7, 4:7, 1, :] == 1.0)


def test_rrcnn_perceive_is_frozen(tiny_digits):
    task = make_system("rrcnn", "tiny")
    images = jnp.asarray(tiny_digits["rrcnn"].train_images)
    graphdef, state = init_train_state(task, 0, images)
    before_frozen = jax.tree.map(np.asarray, state.frozen)
    before_params = jax.tree.map(np.asarray, state.params)
    step = make_train_step(task, graphdef)
    for _ in range(3):
        state, _ = step(state, images, jnp.float32(1.0))
    assert "perceive" in str(jax.tree_util.tree_structure(before_frozen))
    after_frozen = jax.tree.map(np.asarray, state.frozen)
    jax.tree.map(np.testing.assert_array_equal, before_frozen, after_frozen)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before_params,
                           jax.tree.map(np.asarray, state.params))
    assert any(jax.tree.leaves(changed)), "the update MLP trains"


def test_pool_batch_is_sorted_worst_first_and_the_worst_is_replaced(tiny_digits):
    task = make_system("sa-nca", "tiny", pool_size=8, batch_size=4)
    config = task.config
    images = jnp.asarray(tiny_digits["sa-nca"].train_images)
    pool = task.init_pool(jax.random.key(0), images)
    key = jax.random.key(2)  # draws four different slots (the pool samples with replacement)
    # Make pool states differ in loss: fill slot i's last channel with i / 8.
    state = pool.state.at[..., 1:, -1].set(jnp.arange(8.0)[:, None, None, None] / 8)
    pool = pool._replace(state=state)
    batch = task.make_batch(pool, images, key)
    assert len(set(np.asarray(batch.slot).tolist())) == 4
    losses = jax.vmap(sa.sample_mse)(batch.state[1:], images[batch.index[1:]])
    assert np.all(np.diff(np.asarray(losses)) <= 0), "rest of the batch sorted, worst first"
    np.testing.assert_array_equal(batch.state[0], sa.seed_state(config, images[batch.index[0]]))
    original = jax.vmap(sa.sample_mse)(pool.state[batch.slot], images[pool.index[batch.slot]])
    assert float(original[0]) == pytest.approx(float(original.max())), "slot 0 was the worst"
    scored = jnp.full_like(batch.state, 7.0)
    written = task.write_back(pool, batch, scored)
    np.testing.assert_array_equal(written.state[batch.slot], scored)
    np.testing.assert_array_equal(written.index[batch.slot[0]], batch.index[0])


@pytest.mark.parametrize("system", ["sa-nca", "rrcnn", "growing"])
def test_train_step_compiles_once_and_the_loss_falls(system):
    task = make_system(system, "tiny")
    images = jnp.asarray(task.load_examples("bundled").train)
    graphdef, state = init_train_state(task, 0, images)
    step = make_train_step(task, graphdef)
    before = TRACE_COUNTS[system]
    losses = []
    for i in range(100):
        state, metrics = step(state, images, jnp.float32(1.0 + i / 100))  # live lr: no retrace
        losses.append(float(metrics.loss))
    assert TRACE_COUNTS[system] - before == 1
    first, last = np.mean(losses[:5]), np.mean(losses[-20:])
    assert last < 0.8 * first, f"loss fell by less than 20%: {first:.4f} -> {last:.4f}"
    assert int(state.step) == 100
