"""Does sa-nca autoencode? Far-side MSE against training time for candidate configs, here.

For each `--set`-style candidate, trains from scratch for `--minutes` of wall time (compile
included, as a user would see it) and every `--every` steps scores the far side of 64 fixed test
digits after 2 * num_steps against the two baselines at that digit size: an all-black far side
and the mean training digit. Prints one JSON line per evaluation; the `cpu` preset was chosen
with it (see benchmarks/RESULTS.md).

    python benchmarks/autoencode_sweep.py --minutes 10 \
        --candidate "spatial_dims=14,14,6 num_steps=32" --candidate "..."
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp

from nca_widgets.config import parse_overrides
from nca_widgets.registry import make_system
from nca_widgets.system import Examples
from nca_widgets.training import init_train_state, make_train_step
from nca_widgets.views import Views, evaluate

NUM_TEST_DIGITS = 64


def run(overrides: dict[str, str], minutes: float, every: int, seed: int) -> None:
    task = make_system("sa-nca", "cpu", **overrides)
    examples = task.load_examples("bundled")
    train, test = jnp.asarray(examples.train), jnp.asarray(examples.test)
    graphdef, state = init_train_state(task, seed, train)
    step_fn, views = make_train_step(task, graphdef), Views(task, graphdef)
    one = jnp.float32(1.0)
    started = time.perf_counter()
    train_s = 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(every):
            state, metrics = step_fn(state, train, one)
        loss = float(metrics.loss)
        train_s += time.perf_counter() - t0
        metrics = evaluate(views, state, Examples(train, test[:NUM_TEST_DIGITS]))
        print(json.dumps({
            "candidate": overrides, "seed": seed, "step": int(state.step),
            "train_s": round(train_s, 1), "loss": round(loss, 5),
            "steps_per_s": round(int(state.step) / train_s, 2),
            **{k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()},
            "vs_mean_digit": round(metrics["far_side_mse"] / metrics["mean_digit_mse"], 3),
        }), flush=True)
        if time.perf_counter() - started > 60 * minutes:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", action="append", required=True,
                        help="space-separated KEY=VALUE overrides of the cpu preset")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"# jax {jax.__version__} on {jax.devices()[0].device_kind}", file=sys.stderr)
    for candidate in args.candidate:
        run(parse_overrides(candidate.split()), args.minutes, args.every, args.seed)


if __name__ == "__main__":
    main()
