"""A TrainState as named numpy arrays for a checkpoint, and back, checking every array."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nca_widgets.checkpoint import CheckpointError
from nca_widgets.training import TrainState


def flatten_state(state: TrainState) -> dict[str, np.ndarray]:
    """`{'state/<path>': array}` for every leaf; PRNG keys as their raw key data."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    out = {}
    for path, leaf in leaves:
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out["state/" + jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def unflatten_state(template: TrainState, arrays: dict[str, np.ndarray], path) -> TrainState:
    """Rebuild a TrainState from `flatten_state` output, checking names, shapes and dtypes.

    Its arrays stay on the host (the PRNG key aside), for the caller to place on its devices.
    """
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for key_path, spec in paths:
        name = "state/" + jax.tree_util.keystr(key_path)
        if name not in arrays:
            raise CheckpointError(f"checkpoint {path} lacks {name}; was it written "
                                             "by another version of nca_widgets?")
        value = arrays[name]
        if jax.dtypes.issubdtype(spec.dtype, jax.dtypes.prng_key):
            leaves.append(jax.random.wrap_key_data(jnp.asarray(value)))
            continue
        if value.shape != spec.shape or value.dtype != spec.dtype:
            raise CheckpointError(
                f"checkpoint {path}: {name} is {value.dtype}{list(value.shape)}, expected "
                f"{spec.dtype}{list(spec.shape)}"
            )
        leaves.append(value)
    return jax.tree_util.tree_unflatten(treedef, leaves)
