"""Where a run's arrays live: one mesh over the devices of every process, data parallel.

A run trains on a 1-D `Mesh` named "data": by default every local device of every process (a
`devices` limit takes the first N of each process). The sample pool is split along its sample
axis (axis 0) over the mesh; parameters, optimizer state, PRNG key and counters are replicated.
Inside the jitted train step the batch is split the same way (`split_samples`), and JAX's
automatic partitioning does the rest: each device rolls out its share of the batch, XLA reduces
the gradients, every device applies the same update. The train step stays one logical program,
so what it computes does not depend on the number of devices (up to the order of float sums).

Host-side reads go through `local` (views: only this process's devices, no global computation),
`fetch` (host copies; a pool split across processes is gathered, which every process must do at
the same step) and `detach` (a copy that outlives the next train step, which donates the state).
Across processes, `initialize` starts `jax.distributed` before JAX touches a device, and
`broadcast` hands process 0's commands to the others (see `LiveTrainer`).
"""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"  # the mesh axis the samples are split over


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join a multi-process run (`jax.distributed.initialize`); call before any JAX computation.

    With no arguments JAX reads them from the environment (SLURM, Open MPI, ... see
    `jax.distributed.initialize`). On CPUs the processes talk over gloo.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def is_main_process() -> bool:
    """Whether this process writes the run's files (metrics, checkpoints): process 0."""
    return jax.process_index() == 0


def make_mesh(devices: int | None = None) -> Mesh:
    """A 1-D "data" mesh over the first `devices` local devices of every process (None: all)."""
    per_process: dict[int, list[jax.Device]] = {}
    for device in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
        per_process.setdefault(device.process_index, []).append(device)
    available = min(len(found) for found in per_process.values())
    if devices is None:
        devices = available
    if isinstance(devices, bool) or not isinstance(devices, int) or not 1 <= devices <= available:
        platform = jax.devices()[0].platform
        raise ValueError(
            f"devices={devices!r}, but {available} {platform} device(s) are available per "
            f"process: pass a whole number from 1 to {available}, or None for all of them"
        )
    return Mesh(np.array([d for found in per_process.values() for d in found[:devices]]),
                (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """A whole copy on every device of `mesh` (parameters, optimizer state, key, counters)."""
    return NamedSharding(mesh, P())


def split(mesh: Mesh) -> NamedSharding:
    """Axis 0 (the samples) split evenly over the devices of `mesh` (the pool, the batch)."""
    return NamedSharding(mesh, P(AXIS))


def check_splits(tree: Any, mesh: Mesh, what: str, field: str) -> None:
    """Raise ValueError unless axis 0 of every array of `tree` splits evenly over `mesh`.

    `what` names the arrays ('the pool'), `field` the config field that sets their size.
    Scalars have no samples to split and are left out.
    """
    n = mesh.size
    for leaf in jax.tree.leaves(tree):
        if leaf.ndim and leaf.shape[0] % n:
            count = leaf.shape[0]
            raise ValueError(
                f"{what} has {count} samples, which do not split evenly over {n} devices: set "
                f"{field} to a multiple of {n} (e.g. --set {field}={max(n, count // n * n)}), "
                "or train on fewer devices (LiveTrainer(devices=...), nca-widgets train "
                "--devices ...)"
            )


def split_samples(tree: Any, mesh: Mesh, what: str, field: str) -> Any:
    """Inside a jitted function: `tree` with axis 0 of every array split over `mesh`.

    Scalars stay replicated; see `check_splits` for `what` and `field`.
    """
    check_splits(tree, mesh, what, field)
    return jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, split(mesh) if x.ndim else
                                                   replicated(mesh)), tree)


def put(tree: Any, shardings: Any) -> Any:
    """`tree` as global arrays laid out by `shardings` (a tree of shardings, or a prefix of it).

    Every process must pass the same values (host or device arrays): each keeps its own shards.
    """
    return jax.tree.map(lambda sharding, sub: jax.tree.map(lambda x: _put(x, sharding), sub),
                        shardings, tree)


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x  # already there (e.g. a train step's own output)
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_put(jax.random.key_data(x), sharding),
                                        impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def local(tree: Any) -> Any:
    """`tree` as arrays that this process can compute with on its own (for views).

    Within one process that is `tree` itself. Across processes, a replicated array is this
    process's copy and a split one is this process's share of the samples (the first process
    holds the first ones), on one device of this process: a view computed here never waits
    for another process.
    """
    return jax.tree.map(_local, tree)


def _local(x: Any) -> Any:
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return x
    if x.sharding.is_fully_replicated:
        return x.addressable_data(0)
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    device = x.addressable_data(0).device
    return jnp.concatenate([jax.device_put(s.data, device) for s in shards])


def fetch(tree: Any) -> Any:
    """`tree` on the host, whole: a split array is gathered from every process.

    Across processes this is a collective for split arrays: every process must call it at the
    same point of the run. Replicated arrays come from this process's copy.
    """
    return jax.tree.map(_fetch, tree)


def _fetch(x: Any) -> Any:
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return jax.device_get(x)
    if x.sharding.is_fully_replicated:
        return jax.device_get(x.addressable_data(0))
    return multihost_utils.process_allgather(x, tiled=True)


def detach(tree: Any) -> Any:
    """A copy of `tree` that the next train step (which donates its state) leaves alone.

    Within one process a copy on the devices, fetched later by whoever needs it (a checkpoint
    writer thread), so training does not wait for the host. Across processes the host copy
    itself (`fetch`), taken now, at the same step on every process.
    """
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: x.copy(), tree)
    return fetch(tree)


def digest(tree: Any) -> str:
    """The sha256 (hex) of the host arrays of `tree`, in tree order: equal trees, equal digests."""
    sha = hashlib.sha256()
    for leaf in jax.tree.leaves(fetch(tree)):
        sha.update(np.ascontiguousarray(leaf).tobytes())
    return sha.hexdigest()


def check_same_everywhere(tree: Any, what: str) -> None:
    """Raise ValueError unless every process holds the same `tree` (e.g. its training data).

    A collective across processes (every process must call it); nothing to do in one process.
    """
    if jax.process_count() == 1:
        return
    mine = np.frombuffer(bytes.fromhex(digest(tree)), np.uint8)
    everyone = multihost_utils.process_allgather(mine)
    differ = [i for i, theirs in enumerate(everyone) if not np.array_equal(theirs, everyone[0])]
    if differ:
        raise ValueError(f"process(es) {differ} hold other {what} than process 0: give every "
                         "process the same (e.g. the same --data and MNIST files)")


def broadcast(value: Any) -> Any:
    """Process 0's `value` (anything picklable) in every process; the others pass anything.

    A collective (every process must call it); in one process, `value` itself. A small value
    (most commands) travels in one fixed-size collective; a larger one takes a second, padded
    to a power of two so that a few compiled broadcasts serve every size.
    """
    if jax.process_count() == 1:
        return value
    data = pickle.dumps(value) if is_main_process() else b""
    head = np.zeros(_HEAD, np.uint8)
    head[:4] = np.frombuffer(np.int32(len(data)).tobytes(), np.uint8)
    if len(data) <= _HEAD - 4:
        head[4:4 + len(data)] = np.frombuffer(data, np.uint8)
    head = multihost_utils.broadcast_one_to_all(head)
    size = int(np.frombuffer(head[:4].tobytes(), np.int32)[0])
    if size <= _HEAD - 4:
        return pickle.loads(head[4:4 + size].tobytes())
    body = np.zeros(1 << (size - 1).bit_length(), np.uint8)
    body[:len(data)] = np.frombuffer(data, np.uint8)
    return pickle.loads(multihost_utils.broadcast_one_to_all(body)[:size].tobytes())


_HEAD = 512  # bytes of the first broadcast: the length, then a small value itself
