"""Small trained parameters shipped with the package, so the lab opens on a working automaton.

`LiveTrainer("sa-nca", preset="cpu", init="pretrained")` starts from them: the parameters of a
run of that preset (float16, tens of KB), a fresh optimizer, and the learning rate at the end of
the preset's schedule, so training goes on gently from there. `benchmarks/make_pretrained.py`
makes them (anyone can re-run it) and records how well they do in their metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nca_widgets.config import config_to_dict

FOLDER = Path(__file__).parent / "pretrained"
RUN_ONLY = ("num_train_steps",)  # config fields that may differ: how long the run goes on


def path_for(name: str, preset: str) -> Path:
    """The `.npz` of a system's pretrained parameters at a preset (its `.json` beside it)."""
    return FOLDER / f"{name}-{preset}.npz"


def available(name: str) -> list[str]:
    """The presets a system has pretrained parameters for."""
    return sorted(p.stem.removeprefix(f"{name}-") for p in FOLDER.glob(f"{name}-*.npz"))


def save(system: Any, preset: str, params: Any, meta: dict[str, Any]) -> Path:
    """Write `params` (float16) and `meta` (with the config) for `system` at `preset`."""
    path = path_for(system.name, preset)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    arrays = {jax.tree_util.keystr(k): np.asarray(v, np.float16) for k, v in leaves}
    np.savez_compressed(path, **arrays)
    meta = {"system": system.name, "preset": preset, "config": config_to_dict(system.config),
            **meta}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def load(system: Any, preset: str, like: Any) -> tuple[Any, dict[str, Any]]:
    """`(params shaped as like, metadata)` of the shipped parameters.

    ValueError, saying what exists, for a system, preset or config without them.
    """
    path = path_for(system.name, preset)
    if not path.exists():
        presets = available(system.name)
        raise ValueError(
            f"no pretrained parameters for {system.name} at preset {preset!r}; "
            + (f"there are for: {', '.join(presets)}" if presets else "there are none")
            + ". Use init='random', or make them with benchmarks/make_pretrained.py")
    meta = json.loads(path.with_suffix(".json").read_text())
    wanted = config_to_dict(system.config)
    fields = sorted(k for k in wanted if meta["config"].get(k) != wanted[k] and k not in RUN_ONLY)
    if fields:
        raise ValueError(f"the pretrained {system.name} parameters are for the {preset} preset "
                         f"as shipped; this config differs in {', '.join(fields)}. Leave those "
                         "fields at the preset's values, or use init='random'")
    with np.load(path) as arrays:
        leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
        params = [jnp.asarray(arrays[jax.tree_util.keystr(k)], v.dtype) for k, v in leaves]
    return jax.tree_util.tree_unflatten(treedef, params), meta
