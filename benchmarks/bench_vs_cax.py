"""Our compiled train step against the CAX reference notebooks', side by side in one run.

    .venv/bin/python benchmarks/bench_vs_cax.py [--system sa-nca|rrcnn|all] [--repeats R]
        [--steps N] [--preset bench|seed|cpu|tiny] [--set KEY=VALUE ...]

For each system it builds every trainer for the same config and the same bundled MNIST digits
(ours: `init_train_state` + `make_train_step`; CAX: `cax_reference.py`), times each one's first
step (tracing, compilation and one step; minus the median step time, an estimate of the
compile time), then alternates ours, CAX, ours, CAX, ... for R repeats (default 3) of N steps
(default 2 for sa-nca, 10 for rrcnn), blocking on every output after each step, and prints a
markdown table: median step time over all R * N steps, the spread of the per-repeat medians,
steps/s, the peak memory of a fresh process that runs the same config for a few steps (host
RSS on the CPU, the device's `peak_bytes_in_use` on a GPU), the FLOPs of one train step counted
by hand (see `flops_per_train_step`) and the FLOP/s each implementation achieves; then a row
of ratios ours / CAX for each CAX variant.

sa-nca has two CAX rows (`cax_reference.CaxSANCA`'s `captured_key`): `cax-captured`, notebook
000 as written (its `loss_fn` scores the rollout steps drawn from the global key, which `jit`
captures once as a constant), and `cax`, the same with a key split per train step, as our
trainer does (the default of `cax_reference.py` and what `loss_curves.py` trains). rrcnn's
notebook has no such key: one CAX row, as written. `--only IMPL` (repeatable) times a subset.

`--preset bench` (default) is the issue's CPU target: sa-nca at spatial_dims=28,28,10
num_steps=24 batch_size=2 pool_size=64, rrcnn at num_steps=16 batch_size=2, the notebook values
otherwise. `--preset seed` is the notebooks' full config, meant for a GPU: on a 2-core CPU one
sa-nca step of it takes minutes for ours and hours for CAX. `--set` overrides apply on top of
the preset. `--json FILE` also writes the raw step times.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

# flax 0.12 deprecates `Module.sow` outside `nnx.capture` and `Variable.value`, which CAX and the
# notebook use; the warnings come once per trace and say nothing about speed.
warnings.filterwarnings("ignore", category=DeprecationWarning)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _systems import Config, RRCNNConfig, SANCAConfig, system_for  # noqa: E402

from nca_widgets.config import config_diff, parse_overrides  # noqa: E402
from nca_widgets.registry import make_config  # noqa: E402

SYSTEMS = ("sa-nca", "rrcnn")
# The CPU targets, as overrides of the seed (notebook) config.
BENCH_OVERRIDES: dict[str, dict[str, Any]] = {
    "sa-nca": dict(spatial_dims=(28, 28, 10), num_steps=24, batch_size=2, pool_size=64,
                   check_reach=False),  # a speed benchmark: the far side is out of reach
    "rrcnn": dict(num_steps=16, batch_size=2),
}
DEFAULT_STEPS = {"sa-nca": 2, "rrcnn": 10}
IMPLEMENTATIONS = ("ours", "cax-captured", "cax")
# Which implementations each system has: notebook 001 (rrcnn) draws no key in its `loss_fn`.
SYSTEM_IMPLEMENTATIONS = {"sa-nca": IMPLEMENTATIONS, "rrcnn": ("ours", "cax")}
LABELS = {
    "ours": "ours (nca_widgets)",
    "cax-captured": "CAX 0.3.3 notebook as written (captured key)",
    "cax": "CAX 0.3.3 notebook, per-step key (as our trainer)",
}
RATIO_LABELS = {"cax-captured": "ours / CAX as written", "cax": "ours / CAX per-step key"}


def label(system: str, impl: str) -> str:
    """The table's name for `impl`; rrcnn's one CAX row is its notebook as written."""
    if system == "rrcnn" and impl == "cax":
        return "CAX 0.3.3 notebook (as written)"
    return LABELS[impl]


def ratio_label(system: str, impl: str) -> str:
    """The name of the ratio row ours / `impl`."""
    return "ours / CAX" if system == "rrcnn" else RATIO_LABELS[impl]


def bench_config(system: str, preset: str = "bench", **overrides: Any) -> Config:
    """The config benchmarked: `bench` is the issue's CPU target, other names are our presets."""
    if preset == "bench":
        return make_config(system, "seed", **{**BENCH_OVERRIDES[system], **overrides})
    return make_config(system, preset, **overrides)


# --------------------------------------------------------------------------- FLOPs


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """FLOPs of one train step, counted by hand (see `flops_per_train_step`)."""

    perceive_macs_per_cell: int  # multiply-adds of the perceive, per cell per NCA step
    mlp_macs_per_cell: int  # multiply-adds of the update MLP, per cell per NCA step
    cell_steps: int  # cells x batch x NCA steps in one train step
    forward: int  # FLOPs of the forward rollout: 2 x MACs x cell_steps
    model: int  # forward + backward = 3 x forward: the work the math needs, same for both
    ours_executed: int  # what our step executes: + 1 forward for sa-nca's rematerialised steps


def flops_per_train_step(config: Config) -> FlopCount:
    """FLOPs of one train step, counted analytically from the config.

    Only the multiply-adds (MACs) of the two layers that carry the work are counted, per cell
    and per NCA step:

    * perceive. sa-nca: a depthwise 3x3x3 convolution, 27 taps per output feature,
      `27 * C * K` MACs (C channels, K kernels). rrcnn: a dense 3x3 convolution,
      `9 * C * P` MACs (P perception features).
    * update MLP: `sum(n_in * n_out)` over its layers (sa-nca: P -> hidden -> C;
      rrcnn: P -> hidden... -> C).

    Biases, relu, the alive masks (max-pools), dropout, masking and the loss are left out: they
    are a few FLOPs per value, under 2% of the total at these widths. The count is multiplied
    by cells x batch x num_steps (every NCA step of the rollout, scored or not, is run and
    differentiated by both implementations). Convention: forward = 2 FLOPs per MAC; backward
    ~= 2 x forward (gradients with respect to activations and to weights), so a train step is
    3 x forward ("model FLOPs"), which is what the achieved FLOP/s of both implementations is
    quoted against. (rrcnn's perceive is frozen, so its weight gradient is not needed: the
    3 x forward convention overcounts rrcnn's backward by 9 * C * P MACs per cell step, ~18%
    of the total, for both implementations alike.) Our sa-nca rollout rematerialises each
    step in the backward pass (`jax.checkpoint`), which executes one more forward:
    `ours_executed` = 4 x forward for sa-nca, = model for rrcnn.
    """
    cells = math.prod(config.spatial_dims)
    if isinstance(config, SANCAConfig):
        c, k = config.channel_size, config.num_kernels
        perceive = 27 * c * k
        sizes = (config.perception_size, config.hidden_size, c)
        remat = True
    elif isinstance(config, RRCNNConfig):
        c, p = config.channel_size, config.perception_size
        perceive = 9 * c * p
        sizes = (p, *config.update_hidden_layer_sizes, c)
        remat = False
    else:
        raise TypeError(f"unknown config type {type(config).__name__}")
    mlp = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    cell_steps = cells * config.batch_size * config.num_steps
    forward = 2 * (perceive + mlp) * cell_steps
    model = 3 * forward
    return FlopCount(perceive, mlp, cell_steps, forward, model, model + (forward if remat else 0))


# --------------------------------------------------------------------------- runners


class OursRunner:
    """Our train step, as `nca-widgets bench` times it: `train_step(state, images, lr_scale)`."""

    def __init__(self, config: Config, images: jax.Array, seed: int = 0):
        from nca_widgets.training import init_train_state, make_train_step

        task = system_for(config)
        self.images = images
        graphdef, self.state = init_train_state(task, seed, images)
        self.train_step = make_train_step(task, graphdef)
        self.lr_scale = jnp.float32(1.0)

    def step(self) -> jax.Array:
        """One train step, blocked on until everything it returns is computed; the loss."""
        self.state, metrics = self.train_step(self.state, self.images, self.lr_scale)
        jax.block_until_ready((self.state, metrics))
        return metrics.loss


class CaxRunner:
    """The CAX notebook's main-loop body (`cax_reference.py`); sa-nca: per-step key."""

    captured_key = False

    def __init__(self, config: Config, images: jax.Array, seed: int = 0):
        from cax_reference import make_cax_trainer

        self.trainer = make_cax_trainer(config, images, seed, captured_key=self.captured_key)

    def step(self) -> jax.Array:
        """One train step, blocked on (loss, pool, parameters); the loss."""
        loss = self.trainer.step()
        jax.block_until_ready((loss, self.trainer.outputs()))
        return loss


class CaxCapturedRunner(CaxRunner):
    """sa-nca's notebook as written: `loss_fn` scores the steps of one captured key."""

    captured_key = True


RUNNERS = {"ours": OursRunner, "cax-captured": CaxCapturedRunner, "cax": CaxRunner}


def load_images(config: Config) -> jax.Array:
    """The bundled MNIST training digits (4,500, offline) at the config's size, on device."""
    from nca_widgets.data import load_digits

    return jnp.asarray(load_digits("bundled", size=tuple(config.spatial_dims[:2])).train_images)


# --------------------------------------------------------------------------- memory (child)


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def child_memory(impl: str, config: Config, steps: int) -> dict[str, Any]:
    """In a fresh process: run `steps` train steps of `impl`, report peak memory."""
    images = load_images(config)
    jax.block_until_ready(images)
    baseline_kib = _proc_status_kib("VmRSS")
    runner = RUNNERS[impl](config, images)
    for _ in range(steps):
        runner.step()
    device = jax.devices()[0]
    out: dict[str, Any] = {"backend": jax.default_backend(), "steps": steps}
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        out["peak_device_bytes"] = int(stats["peak_bytes_in_use"])
    peak_kib = _proc_status_kib("VmHWM")
    if peak_kib is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_kib = rss // 1024 if sys.platform == "darwin" else rss
    out["peak_rss_bytes"] = peak_kib * 1024
    out["baseline_rss_bytes"] = (baseline_kib or 0) * 1024
    return out


def measure_memory(
    impl: str, system: str, preset: str, sets: list[str], steps: int
) -> dict[str, Any]:
    """Run `child_memory` in a subprocess (one process per implementation: a clean peak)."""
    cmd = [sys.executable, __file__, "--system", system, "--preset", preset,
           "--memory-child", impl, "--memory-steps", str(steps)]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        why = "killed (out of memory?)" if proc.returncode in (-9, 137) else tail
        return {"error": f"exit {proc.returncode}: {why}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Result:
    """One implementation's measurements for one config."""

    impl: str
    compile_s: float | None = None
    step_s: list[float] = dataclasses.field(default_factory=list)
    repeat_medians: list[float] = dataclasses.field(default_factory=list)
    first_losses: list[float] = dataclasses.field(default_factory=list)
    memory: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None

    @property
    def median_s(self) -> float | None:
        """Median step time over all timed steps."""
        return statistics.median(self.step_s) if self.step_s else None


def time_side_by_side(
    config: Config, repeats: int, steps: int, impls: tuple[str, ...] = IMPLEMENTATIONS
) -> dict[str, Result]:
    """Build each implementation, time its first step, then alternate R repeats of N steps."""
    images = load_images(config)
    results = {impl: Result(impl) for impl in impls}
    runners: dict[str, Any] = {}
    for impl in impls:
        try:
            runners[impl] = RUNNERS[impl](config, images)
            started = time.perf_counter()
            loss = runners[impl].step()
            results[impl].compile_s = time.perf_counter() - started
            results[impl].first_losses.append(float(loss))
        except Exception as e:  # e.g. out of memory: reported in the table, not dropped
            results[impl].error = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            runners.pop(impl, None)
            print(f"  {impl}: failed: {results[impl].error}", file=sys.stderr)
    for r in range(repeats):
        for impl, runner in list(runners.items()):
            times = []
            try:
                for _ in range(steps):
                    started = time.perf_counter()
                    runner.step()
                    times.append(time.perf_counter() - started)
            except Exception as e:
                results[impl].error = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                runners.pop(impl)
                continue
            results[impl].step_s += times
            results[impl].repeat_medians.append(statistics.median(times))
            print(f"  repeat {r + 1}/{repeats} {impl}: median {statistics.median(times):.4f} s",
                  file=sys.stderr, flush=True)
    del runners
    gc.collect()
    return results


# --------------------------------------------------------------------------- report


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def _peak(result: Result) -> tuple[float | None, str]:
    mem = result.memory
    if "error" in mem:
        return None, mem["error"]
    if "peak_device_bytes" in mem:
        return mem["peak_device_bytes"] / 2**20, "device"
    if "peak_rss_bytes" in mem:
        return mem["peak_rss_bytes"] / 2**20, "host RSS"
    return None, "not measured"


def compile_only(res: Result) -> float | None:
    """Compile time estimated as the first step's time minus the median step time."""
    if res.compile_s is None or res.median_s is None:
        return None
    return res.compile_s - res.median_s


def markdown_table(system: str, config: Config, results: dict[str, Result]) -> str:
    """The side-by-side table, and a row of ratios ours / CAX for each CAX variant."""
    flops = flops_per_train_step(config)
    lines = [
        "| implementation | 1st step (s) | compile ≈ 1st − median (s) | median step (ms) "
        "| repeat medians (ms) | steps/s | peak memory (MiB) | GFLOP/step (model) "
        "| GFLOP/s (model) | GFLOP/s (executed) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rates: dict[str, tuple[float | None, float | None]] = {}
    for impl, res in results.items():
        executed = flops.ours_executed if impl == "ours" else flops.model
        med = res.median_s
        if med is None:
            lines.append(f"| {label(system, impl)} | failed: {res.error or 'no steps timed'} "
                         "| | | | | | | | |")
            continue
        peak, kind = _peak(res)
        spread = (f"{min(res.repeat_medians) * 1e3:.1f}–{max(res.repeat_medians) * 1e3:.1f}"
                  if res.repeat_medians else "n/a")
        rates[impl] = (flops.model / med, executed / med)
        lines.append(
            f"| {label(system, impl)} | {_fmt(res.compile_s, '.1f')} "
            f"| {_fmt(res.compile_s and res.compile_s - med, '.1f')} | {med * 1e3:.1f} | {spread} "
            f"| {1 / med:.2f} | {_fmt(peak, '.0f')} ({kind}) | {flops.model / 1e9:.2f} "
            f"| {flops.model / med / 1e9:.1f} | {executed / med / 1e9:.1f} |"
        )
    ours = results.get("ours")
    for impl, cax in results.items():
        if impl == "ours" or not (ours and ours.median_s and cax.median_s):
            continue
        speedup = cax.median_s / ours.median_s
        lines.append(
            f"| **{ratio_label(system, impl)}** | {_ratio(ours.compile_s, cax.compile_s)} "
            f"| {_ratio(compile_only(ours), compile_only(cax))} "
            f"| {_ratio(ours.median_s, cax.median_s)} | | **{speedup:.2f}x** "
            f"| {_ratio(_peak(ours)[0], _peak(cax)[0])} | 1.00x | {speedup:.2f}x "
            f"| {_ratio(rates['ours'][1], rates[impl][1])} |"
        )
    return "\n".join(lines)


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (Linux), or '?'."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def environment() -> str:
    """One line: date, machine, versions, load average."""
    import importlib.metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in ("jax", "jaxlib", "flax", "optax", "cax"))
    dev = jax.devices()[0]
    return (f"{datetime.date.today()} · {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs · JAX backend {jax.default_backend()} ({dev.device_kind}) · "
            f"{versions}, python {platform.python_version()} · load average {loadavg()}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", default="all", choices=[*SYSTEMS, "all"])
    parser.add_argument("--repeats", type=int, default=3, help="alternations (default 3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed train steps per repeat and implementation (default: "
                        f"{DEFAULT_STEPS['sa-nca']} for sa-nca, whose CAX step takes 45-75 s "
                        f"on a 2-core CPU, {DEFAULT_STEPS['rrcnn']} for rrcnn)")
    parser.add_argument("--preset", default="bench", choices=["bench", "seed", "cpu", "tiny"],
                        help="bench (default): the issue's CPU target; seed: the notebooks' "
                        "config, for a GPU")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable), e.g. num_steps=32")
    parser.add_argument("--memory-steps", type=int, default=2,
                        help="train steps each peak-memory child runs (default 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--only", choices=IMPLEMENTATIONS, action="append",
                        help="time this implementation (repeatable; default: all the system "
                        "has: ours, cax-captured (sa-nca only: notebook 000 as written) and cax "
                        "(sa-nca: per-step key, as our trainer; rrcnn: the notebook))")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument("--memory-child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.sets)

    if args.memory_child:
        config = bench_config(args.system, args.preset, **overrides)
        print(json.dumps(child_memory(args.memory_child, config, args.memory_steps)))
        return 0
    if args.repeats < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--repeats and --steps must be at least 1")

    systems = SYSTEMS if args.system == "all" else (args.system,)
    print(environment())
    raw = {}
    for system in systems:
        config = bench_config(system, args.preset, **overrides)
        changed = config_diff(make_config(system, "seed"), config)
        desc = " ".join(f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
                        for k, v in ((k, getattr(config, k)) for k in changed)) or "seed values"
        flops = flops_per_train_step(config)
        steps = args.steps or DEFAULT_STEPS[system]
        impls = tuple(i for i in SYSTEM_IMPLEMENTATIONS[system] if not args.only or i in args.only)
        if not impls:
            print(f"\n### {system}: none of {', '.join(args.only)} applies; skipped", flush=True)
            continue
        print(f"\n### {system} ({args.preset}: {desc})\n", flush=True)
        print(f"Timed: {args.repeats} repeats x {steps} steps per implementation, alternating "
              f"{' / '.join(impls)}; median over all {args.repeats * steps} steps.\n",
              flush=True)
        results = time_side_by_side(config, args.repeats, steps, impls)
        if not args.no_memory:
            for impl in impls:
                print(f"  peak memory: {impl} in a fresh process, {args.memory_steps} steps",
                      file=sys.stderr, flush=True)
                results[impl].memory = measure_memory(
                    impl, system, args.preset, args.sets, args.memory_steps)
        print(markdown_table(system, config, results))
        print(f"\nFLOPs per train step (analytic, multiply-adds x 2): perceive "
              f"{flops.perceive_macs_per_cell:,} + MLP {flops.mlp_macs_per_cell:,} MACs per cell "
              f"step x {flops.cell_steps:,} cell steps; forward {flops.forward / 1e9:.2f} GFLOP, "
              f"model (3 x forward) {flops.model / 1e9:.2f} GFLOP, ours executed "
              f"{flops.ours_executed / 1e9:.2f} GFLOP"
              + (" (+1 forward: rematerialised rollout)" if flops.ours_executed > flops.model
                 else "") + ".")
        for impl, res in results.items():
            mem = res.memory
            if mem.get("baseline_rss_bytes"):
                base, peak = mem["baseline_rss_bytes"] / 2**20, mem["peak_rss_bytes"] / 2**20
                print(f"{label(system, impl)}: host RSS {base:.0f} MiB before building the trainer "
                      f"(JAX + digits), peak {peak:.0f} MiB over compilation and "
                      f"{mem['steps']} steps")
        raw[system] = {
            "config": dataclasses.asdict(config),
            "flops": dataclasses.asdict(flops),
            "results": {k: dataclasses.asdict(v) for k, v in results.items()},
        }
    print(f"\nload average after: {loadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"environment": environment(), **raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
