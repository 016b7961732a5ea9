"""Make the pretrained parameters shipped in nca_widgets/pretrained/ (`init="pretrained"`).

    .venv/bin/python benchmarks/make_pretrained.py growing --steps 3000
    .venv/bin/python benchmarks/make_pretrained.py sa-nca --from-run runs/sa-nca-cpu

Trains the system's `cpu` preset from seed 0 for `--steps` (or takes the newest checkpoint of a
run trained with `nca-widgets train SYSTEM --preset cpu`), evaluates it on 128 test examples,
checks that the float16 copy it ships evaluates the same, and writes
`nca_widgets/pretrained/<system>-cpu.npz` with a `.json` of how it was made and what it scores.
Prints that JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from nca_widgets import LiveTrainer, pretrained

PRESET = "cpu"
NUM_TEST = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", help="a built-in system name")
    parser.add_argument("--steps", type=int, help="train this many steps from seed 0")
    parser.add_argument("--from-run", help="use the newest checkpoint of this run instead")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.from_run:
        trainer = LiveTrainer.restore(args.from_run)
        if trainer.system.name != args.system or trainer.preset != PRESET:
            sys.exit(f"{args.from_run} holds a {trainer.system.name} {trainer.preset} run, "
                     f"not {args.system} {PRESET}")
    else:
        trainer = LiveTrainer(args.system, PRESET, seed=0, data="bundled")
        trainer.advance(args.steps or trainer.config.num_train_steps, wait=True, timeout=None)
    trained = trainer.evaluate(NUM_TEST)
    path = pretrained.save(trainer.system, PRESET, trainer.params(), {
        "seed": 0, "steps": trainer.step, "made_by": "benchmarks/make_pretrained.py",
        "test_metrics": trained,
    })
    trainer.close()
    shipped = LiveTrainer(args.system, PRESET, seed=0, data="bundled", init="pretrained")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["test_metrics_float16"] = shipped.evaluate(NUM_TEST)
    meta["bytes"] = path.stat().st_size
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    shipped.close()
    print(json.dumps({**meta, "seconds": round(time.perf_counter() - started, 1)}, indent=1))


if __name__ == "__main__":
    main()
