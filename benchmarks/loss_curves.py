"""Do ours and CAX learn alike? Training-loss curves of both, a few seeds each, on one plot.

    .venv/bin/python benchmarks/loss_curves.py [--system sa-nca|rrcnn|all] [--steps N]
        [--seeds 0,1,2] [--sa-nca-config tiny|bench] [--out benchmarks/loss_curves.png]

Each run trains from scratch on the bundled MNIST digits (4,500, offline) and records the
loss of every train step: ours through `make_train_step` (what `LiveTrainer` runs), CAX
through the notebook's `train_step` (`cax_reference.py`). Both use the same seeds; they cannot
see the same digits in the same order, because each derives its sampling keys its own way, so
the spread across seeds is the yardstick for "alike". It saves a two-panel figure (raw curves
thin, a moving average thick) and prints, per seed, the mean loss over the last 50 steps
(steps 151-200 of the default 200).

Configs: rrcnn at the issue's CPU target (num_steps=16 batch_size=2); sa-nca at the `tiny`
preset (12x12x6 cells, 8 channels, hidden 32, 8 NCA steps, digits resized to 12x12) by
default, because CAX's sa-nca step at the issue's target (28x28x10 cells, 24 steps, batch 2)
takes 45-75 s on a 2-core CPU (`bench_vs_cax.py`): 200 steps x 3 seeds would take
8-12 hours. `--sa-nca-config bench` runs that target (for a GPU). Loss and gradients of
both implementations also agree to float32 precision for the same parameters and batch
(`python benchmarks/cax_reference.py`).

Default seeds: 0,1,2 for sa-nca (cheap at tiny) and 0,1 for rrcnn (CAX's rrcnn step is
~0.7 s here), which keeps the default run near 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import textwrap
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", category=DeprecationWarning)  # flax 0.12 on CAX's sow

import numpy as np  # noqa: E402
from _systems import Config  # noqa: E402
from bench_vs_cax import RUNNERS, bench_config, load_images  # noqa: E402

from nca_widgets.registry import make_config  # noqa: E402

SYSTEMS = ("sa-nca", "rrcnn")
DEFAULT_SEEDS = {"sa-nca": (0, 1, 2), "rrcnn": (0, 1)}
WINDOW = 50  # the summary averages the last WINDOW steps
SMOOTH = 20  # moving-average width of the thick curves
COLOURS = {"ours": "tab:blue", "cax": "tab:orange"}
LABELS = {"ours": "ours (nca_widgets)", "cax": "CAX notebook"}


def curve(impl: str, config: Config, seed: int, steps: int) -> tuple[np.ndarray, float]:
    """The loss of each of `steps` train steps of a fresh run, and its seconds per step."""
    runner = RUNNERS[impl](config, load_images(config), seed)
    losses = [float(runner.step())]  # the first step compiles: not timed
    started = time.perf_counter()
    losses += [float(runner.step()) for _ in range(steps - 1)]
    return np.array(losses), (time.perf_counter() - started) / max(steps - 1, 1)


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Trailing moving average; the first points average what there is."""
    c = np.cumsum(np.insert(x, 0, 0.0))
    n = np.minimum(np.arange(1, len(x) + 1), width)
    return (c[1:] - c[np.arange(1, len(x) + 1) - n]) / n


def describe(system: str, config: Config) -> str:
    """The config in one line: the fields that differ from the seed config."""
    seed = make_config(system, "seed")
    fields = [k for k in config.__dataclass_fields__
              if getattr(config, k) != getattr(seed, k) and k != "num_train_steps"]
    values = {k: getattr(config, k) for k in fields}
    return " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                    for k, v in values.items()) or "seed values"


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", default="all", choices=[*SYSTEMS, "all"])
    parser.add_argument("--steps", type=int, default=200, help="train steps per run (200)")
    parser.add_argument("--seeds", help="comma-separated seeds (default: 0,1,2 for sa-nca, "
                        "0,1 for rrcnn)")
    parser.add_argument("--sa-nca-config", default="tiny", choices=["tiny", "bench"],
                        help="tiny (default, CAX affordable on a CPU) or bench (the issue's "
                        "28x28x10 target; CAX takes 45-75 s per step on a 2-core CPU)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "loss_curves.png")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2")
    systems = SYSTEMS if args.system == "all" else (args.system,)
    window = min(WINDOW, args.steps // 2)

    results: dict[str, dict] = {}
    for system in systems:
        if system == "sa-nca" and args.sa_nca_config == "tiny":
            config = make_config("sa-nca", "tiny")
        else:
            config = bench_config(system, "bench")
        seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds
                 else list(DEFAULT_SEEDS[system]))
        results[system] = {"config": describe(system, config), "runs": {}}
        print(f"{system} ({describe(system, config)}): {args.steps} steps, seeds {seeds}",
              file=sys.stderr, flush=True)
        for seed in seeds:
            for impl in ("ours", "cax"):
                losses, step_s = curve(impl, config, seed, args.steps)
                results[system]["runs"][f"{impl}/{seed}"] = {
                    "impl": impl, "seed": seed, "loss": losses.tolist(), "step_s": step_s}
                print(f"  {impl} seed {seed}: {step_s:.3f} s/step, mean loss of the last "
                      f"{window} steps {losses[-window:].mean():.5f}", file=sys.stderr,
                      flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(systems), figsize=(6.5 * len(systems), 4.5), squeeze=False)
    for ax, system in zip(axes[0], systems, strict=True):
        for run in results[system]["runs"].values():
            loss = np.array(run["loss"])
            x = np.arange(1, len(loss) + 1)
            colour = COLOURS[run["impl"]]
            ax.plot(x, loss, color=colour, alpha=0.18, linewidth=0.7)
            ax.plot(x, moving_average(loss, SMOOTH), color=colour, linewidth=1.6,
                    label=f"{LABELS[run['impl']]}, seed {run['seed']}",
                    linestyle=["-", "--", ":", "-."][run["seed"] % 4])
        ax.set_yscale("log")
        ax.set_xlabel("train step")
        ax.set_ylabel("training loss (MSE)")
        title = textwrap.wrap(f"{system}: {results[system]['config']}", 70)
        ax.set_title("\n".join(title), fontsize=9)
        ax.axvspan(args.steps - window + 1, args.steps, color="0.9", zorder=0)
        ax.legend(fontsize=7)
    fig.suptitle(f"ours vs CAX: raw (thin) and {SMOOTH}-step moving average (thick); "
                 f"shaded: the last {window} steps averaged below", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    args.out.with_suffix(".json").write_text(json.dumps(results))

    print(f"Mean training loss over steps {args.steps - window + 1}-{args.steps} "
          f"(bundled digits; saved {args.out} and {args.out.with_suffix('.json').name})\n")
    print("| system | config | implementation | per seed | mean ± sd across seeds "
          "| s/step |")
    print("| --- | --- | --- | --- | ---: | ---: |")
    for system, res in results.items():
        for impl in ("ours", "cax"):
            runs = [r for r in res["runs"].values() if r["impl"] == impl]
            means = [float(np.mean(r["loss"][-window:])) for r in runs]
            per_seed = ", ".join(f"{r['seed']}: {m:.5f}" for r, m in zip(runs, means,
                                                                      strict=True))
            sd = statistics.stdev(means) if len(means) > 1 else float("nan")
            step_s = statistics.median(r["step_s"] for r in runs)
            print(f"| {system} | {res['config']} | {LABELS[impl]} | {per_seed} "
                  f"| {statistics.mean(means):.5f} ± {sd:.5f} | {step_s:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
