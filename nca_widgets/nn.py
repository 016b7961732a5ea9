"""Cell-level building blocks of both systems: perceive, per-cell MLP update, dropout, masks.

Every function works on one sample, channel last: `state: (*spatial, C)`. Batching is vmap's
job. The formulations are chosen for speed and checked against the straightforward ones (XLA's
grouped convolution, `reduce_window` max-pool) in `tests/test_numerics.py`.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from flax import nnx


def sobel_kernels(ndim: int) -> jax.Array:
    """Identity, then an L1-normalised Sobel gradient kernel per axis: `(3,)*ndim + (1+ndim,)`."""
    identity = jnp.zeros((3,) * ndim).at[(1,) * ndim].set(1.0)
    grad, smooth = jnp.array([-1.0, 0.0, 1.0]), jnp.array([1.0, 2.0, 1.0])
    kernels = [identity]
    for i in range(ndim):
        kernel = jnp.ones((3,) * ndim)
        for j in range(ndim):
            axis_kernel = grad if i == j else smooth
            kernel = kernel * axis_kernel.reshape([-1 if k == j else 1 for k in range(ndim)])
        kernels.append(kernel / jnp.sum(jnp.abs(kernel)))
    return jnp.stack(kernels, axis=-1)


class DepthwisePerceive(nnx.Module):
    """Depthwise 3x3x3 convolution: each channel seen through `num_kernels` trainable kernels.

    The kernel keeps the layout of `nnx.Conv(feature_group_count=C)`, `(3, 3, 3, 1, C * K)`,
    so output feature `c * K + k` is channel `c` through kernel `k`. It is applied as 27 shifted,
    per-channel-weighted copies of the zero-padded state: one fused loop, about 5x faster on the
    CPU than XLA's grouped 3-D convolution, with the same numbers.
    """

    def __init__(self, channel_size: int, num_kernels: int):
        kernels = sobel_kernels(3)[..., :num_kernels]  # (3, 3, 3, K)
        self.kernel = nnx.Param(jnp.tile(kernels, channel_size)[..., None, :])
        self.channel_size, self.num_kernels = channel_size, num_kernels

    def __call__(self, state: jax.Array) -> jax.Array:
        """`state: (H, W, D, C)` -> perception `(H, W, D, C * K)`."""
        *spatial, c = state.shape
        kernel = self.kernel[...].reshape(27, c, self.num_kernels)
        return depthwise_conv3(state, kernel).reshape(*spatial, c * self.num_kernels)


_OFFSETS = tuple(itertools.product(range(3), repeat=3))  # kernel taps, in kernel order


def _shifted(x: jax.Array) -> list[jax.Array]:
    """The 27 neighbours of every cell of `x: (H, W, D, ...)`, zero beyond the edge."""
    h, w, d = x.shape[:3]
    padded = jnp.pad(x, ((1, 1),) * 3 + ((0, 0),) * (x.ndim - 3))
    return [padded[i : i + h, j : j + w, k : k + d] for i, j, k in _OFFSETS]


@jax.custom_vjp
def depthwise_conv3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """`x: (H, W, D, C)`, `kernel: (27, C, K)` -> `(H, W, D, C, K)`: zero-padded, 'SAME'.

    Written out as 27 shifted, weighted copies, with a hand-written backward pass: XLA's
    automatic one for this form is 3x slower than the three fused loops below.
    """
    out = jnp.zeros((*x.shape, kernel.shape[-1]), x.dtype)
    for window, tap in zip(_shifted(x[..., None]), kernel, strict=True):
        out = out + window * tap
    return out


def _depthwise_fwd(x, kernel):
    return depthwise_conv3(x, kernel), (x, kernel)


def _depthwise_bwd(residuals, g):
    x, kernel = residuals
    per_tap = jnp.einsum("hwdck,sck->shwdc", g, kernel)  # what each tap sends back
    h, w, d = x.shape[:3]
    padded = jnp.pad(per_tap, ((0, 0),) + ((1, 1),) * 3 + ((0, 0),))
    dx = jnp.zeros_like(x)
    for s, (i, j, k) in enumerate(_OFFSETS):  # the tap at offset o reads cell p + o
        dx = dx + padded[s, 2 - i : 2 - i + h, 2 - j : 2 - j + w, 2 - k : 2 - k + d]
    dkernel = jnp.einsum("shwdc,hwdck->sck", jnp.stack(_shifted(x)), g)
    return dx, dkernel


depthwise_conv3.defvjp(_depthwise_fwd, _depthwise_bwd)


class CellMLP(nnx.Module):
    """Per-cell MLP (relu between layers); the last layer's kernel starts at zero."""

    def __init__(self, sizes: tuple[int, ...], *, rngs: nnx.Rngs):
        last = len(sizes) - 2
        self.layers = nnx.List(
            [
                nnx.Linear(
                    n_in, n_out, rngs=rngs,
                    kernel_init=nnx.initializers.zeros_init() if i == last
                    else nnx.nn.linear.default_kernel_init,
                )
                for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes))
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """`x: (..., sizes[0])` -> `(..., sizes[-1])`."""
        for layer in self.layers[:-1]:
            x = nnx.relu(layer(x))
        return self.layers[-1](x)


def cell_dropout(update: jax.Array, key: jax.Array, rate: float) -> jax.Array:
    """Drop whole cells' updates with probability `rate`, rescaling the rest (as `nnx.Dropout`).

    `update: (*spatial, C)`; one Bernoulli draw per cell, broadcast over channels.
    """
    if rate == 0.0:
        return update
    keep_prob = 1.0 - rate
    keep = jax.random.bernoulli(key, keep_prob, update.shape[:-1] + (1,))
    return jax.lax.select(jnp.broadcast_to(keep, update.shape), update / keep_prob,
                          jnp.zeros_like(update))


def max_pool3(x: jax.Array) -> jax.Array:
    """3-wide max over every axis of `x` with SAME padding (padding never wins): separable."""
    for axis in range(x.ndim):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (1, 1)
        padded = jnp.pad(x, pad, constant_values=-jnp.inf)
        n = x.shape[axis]
        x = jnp.maximum(
            jnp.maximum(
                jax.lax.slice_in_dim(padded, 0, n, axis=axis),
                jax.lax.slice_in_dim(padded, 1, n + 1, axis=axis),
            ),
            jax.lax.slice_in_dim(padded, 2, n + 2, axis=axis),
        )
    return x


def alive_mask(state: jax.Array, threshold: float, channel: int = -1) -> jax.Array:
    """Cells whose 3^d neighbourhood has `channel` (the last) above `threshold`: `(*spatial, 1)`."""
    return (max_pool3(state[..., channel]) > threshold)[..., None]
