"""The fast formulations against the straightforward ones: same outputs, same gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nca_widgets.nn import DepthwisePerceive, alive_mask, max_pool3


def grouped_conv_reference(state, kernel):
    """What CAX's ConvPerceive computes: XLA's grouped 3-D convolution, SAME zero padding."""
    return jax.lax.conv_general_dilated(
        state[None], kernel, (1, 1, 1), "SAME",
        dimension_numbers=("NHWDC", "HWDIO", "NHWDC"), feature_group_count=state.shape[-1],
    )[0]


def test_depthwise_perceive_matches_grouped_convolution():
    perceive = DepthwisePerceive(channel_size=5, num_kernels=4)
    perceive.kernel[...] = jax.random.normal(jax.random.key(0), perceive.kernel.shape)
    state = jax.random.normal(jax.random.key(1), (7, 6, 9, 5))
    graphdef, params = nnx.split(perceive)
    fast = lambda p, s: nnx.merge(graphdef, p)(s)  # noqa: E731
    slow = lambda p, s: grouped_conv_reference(s, p["kernel"][...])  # noqa: E731
    np.testing.assert_allclose(fast(params, state), slow(params, state), rtol=1e-5, atol=1e-5)
    probe = jax.random.normal(jax.random.key(2), (7, 6, 9, 20))
    grads = [jax.grad(lambda p, s, f=f: jnp.sum(jnp.sin(f(p, s)) * probe), argnums=(0, 1))(
        params, state) for f in (fast, slow)]
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_separable_max_pool_matches_reduce_window():
    x = jax.random.normal(jax.random.key(0), (6, 7, 5))
    slow = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (3, 3, 3), (1, 1, 1), "SAME")
    np.testing.assert_array_equal(max_pool3(x), slow)
    state = jnp.zeros((6, 7, 5, 3)).at[..., -1].set(x)
    np.testing.assert_array_equal(alive_mask(state, 0.1)[..., 0], slow > 0.1)
    g_fast = jax.grad(lambda x: jnp.sum(jnp.sin(max_pool3(x))))(x)
    g_slow = jax.grad(lambda x: jnp.sum(jnp.sin(jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (3, 3, 3), (1, 1, 1), "SAME"))))(x)
    np.testing.assert_allclose(g_fast, g_slow, rtol=1e-6)


def test_scored_rollout_matches_keeping_every_state(tiny_digits):
    """sa-nca's loss (rematerialised steps, only the scored state kept) against the notebook's
    formulation (every intermediate state kept, then indexed): same loss, states, gradients."""
    from nca_widgets.registry import make_system
    from nca_widgets.systems import sa_nca as sa
    from nca_widgets.training import init_train_state

    task = make_system("sa-nca", "tiny")
    config = task.config
    images = jnp.asarray(tiny_digits["sa-nca"].train_images)
    graphdef, state = init_train_state(task, 0, images)
    batch = task.make_batch(state.pool, images, jax.random.key(1))
    key = jax.random.key(2)
    params = jax.tree.map(  # non-zero last layer, so the rollout really moves
        lambda p: p + 0.05 * jax.random.normal(jax.random.key(3), p.shape), state.params)

    def ours(params):
        return task.loss(nnx.merge(graphdef, params), batch, images, key)

    def straightforward(params):
        model = nnx.merge(graphdef, params)
        n, b = config.num_steps, config.batch_size
        score_key, rollout_key = jax.random.split(key)  # the same draws as task.loss
        scored_at = jax.random.randint(score_key, (b,), n // 2, n)
        keys = jax.random.split(rollout_key, (b, n))

        def every_state(s, ks):
            return jax.lax.scan(lambda s, k: (model(s, k),) * 2, s, ks)[1]

        states = jax.vmap(every_state)(batch.state, keys)  # (B, n, H, W, D, C)
        kept = states[jnp.arange(b), scored_at]
        losses = jax.vmap(sa.sample_mse)(kept, images[batch.index])
        return jnp.mean(losses), kept

    (loss_a, kept_a), grad_a = jax.value_and_grad(ours, has_aux=True)(params)
    (loss_b, kept_b), grad_b = jax.value_and_grad(straightforward, has_aux=True)(params)
    np.testing.assert_allclose(loss_a, loss_b, rtol=1e-5)
    np.testing.assert_allclose(kept_a, kept_b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grad_a), jax.tree.leaves(grad_b), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert float(loss_a) > 0 and any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grad_a))
