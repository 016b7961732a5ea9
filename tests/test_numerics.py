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
