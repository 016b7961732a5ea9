"""Do the widgets slow training down? LiveTrainer headless against LiveTrainer with subscribers.

    .venv/bin/python benchmarks/bench_overhead.py [--system sa-nca|rrcnn|all] [--repeats R]
        [--steps N] [--pauses P] [--preset cpu] [--set KEY=VALUE ...]

One `LiveTrainer` per system (the `cpu` preset by default, bundled digits). After a warm-up
that compiles the train step and the snapshot views, it runs blocks of N train steps with
`trainer.advance(N, wait=True)`, timed from the call to its return, alternating three modes
R times:

* `headless`: no subscriber, so the trainer builds no snapshots at all;
* `serialise`: one subscriber that does per snapshot what the dashboard's widgets send to the
  browser: `tobytes()` of the new loss points, of the pool targets and renders (when the pool
  view is new) and of the probe volume or frames (when the probe is new), plus `json.dumps` of
  the scalars;
* `dashboard`: the real `nca_widgets.widgets.Dashboard` subscribed (no browser attached: the
  widgets compute and serialise their state; only the final comm send finds no front end).

Each block starts after the subscriber's first snapshot is built (attaching costs one probe
rollout and pool view, once), so the blocks compare steady states.

It prints each mode's steps/s (median over the R blocks) and the ratio to headless (the target
is >= 0.97: snapshots are built at most `publish_hz` times a second and probe rollouts take at
most 2% of the wall time). Then, with the dashboard attached and training running, it calls
`pause()` P times at random moments and prints the median and maximum time `pause()` takes to
return: it waits for the train steps already dispatched (about 0.1 s of work, at least one
step), so it is bounded by about one step time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nca_widgets.config import parse_overrides
from nca_widgets.snapshot import FrameProbe, Snapshot, VolumeProbe
from nca_widgets.trainer import LiveTrainer

SYSTEMS = ("sa-nca", "rrcnn")
MODES = ("headless", "serialise", "dashboard")
DEFAULT_STEPS = {"sa-nca": 6, "rrcnn": 15}  # about 10 s per block on a loaded 2-core CPU


class SerialisingSubscriber:
    """Serialises every snapshot as the widgets do, and counts what it would have sent."""

    def __init__(self) -> None:
        self.snapshots = 0
        self.bytes_sent = 0
        self._history_len = 0
        self._pool: Any = None
        self._probe: Any = None

    def __call__(self, snapshot: Snapshot) -> None:
        """Turn the parts of `snapshot` that changed into bytes, as the widgets' traits do."""
        scalars = {
            "system": snapshot.system, "step": snapshot.step, "total": snapshot.total_steps,
            "status": snapshot.status, "message": snapshot.message,
            "learning_rate": snapshot.learning_rate, "steps_per_s": snapshot.steps_per_s,
        }
        payload = [json.dumps(scalars).encode()]
        history = snapshot.history
        if len(history) > self._history_len:  # LossPlot sends the new points only
            new = slice(self._history_len, len(history))
            payload += [np.ascontiguousarray(history.step[new], "<i4").tobytes(),
                        np.ascontiguousarray(history.loss[new], "<f4").tobytes(),
                        np.ascontiguousarray(history.lr[new], "<f4").tobytes()]
            self._history_len = len(history)
        pool = snapshot.pool
        if pool is not None and pool is not self._pool:  # PoolView: worst first, NaN on top
            order = np.argsort(-np.nan_to_num(pool.losses, nan=np.inf), kind="stable")
            payload += [pool.targets[order].tobytes(), pool.renders[order].tobytes(),
                        np.ascontiguousarray(pool.losses[order], "<f4").tobytes(),
                        json.dumps(pool.digit_indices[order].tolist()).encode()]
            self._pool = pool
        probe = snapshot.probe
        if probe is not None and probe is not self._probe:
            if isinstance(probe, VolumeProbe):  # VolumeScrubber: the volume and a colour table
                lut = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
                payload += [probe.volume.tobytes(), lut.tobytes(), probe.digit.tobytes()]
            elif isinstance(probe, FrameProbe):  # FrameScrubber: frames, inputs and PSNR
                payload += [probe.frames.tobytes(), probe.input.tobytes(),
                            probe.target.tobytes(),
                            np.ascontiguousarray(probe.psnr, "<f4").tobytes()]
            self._probe = probe
        self.snapshots += 1
        self.bytes_sent += sum(len(p) for p in payload)


class Attached:
    """Context manager: attach one mode's subscriber to a trainer, detach on exit."""

    def __init__(self, trainer: LiveTrainer, mode: str):
        self.trainer, self.mode = trainer, mode
        self.subscriber: SerialisingSubscriber | None = None
        self._detach: Any = None

    def __enter__(self) -> Attached:
        if self.mode == "serialise":
            self.subscriber = SerialisingSubscriber()
            self._detach = self.trainer.subscribe(self.subscriber)
        elif self.mode == "dashboard":
            from nca_widgets.widgets import Dashboard

            dashboard = Dashboard(self.trainer)
            self._detach = dashboard.close
        if self._detach is not None:
            # Subscribing makes the worker build a first snapshot (pool view, probe rollout);
            # the Dashboard waits for it in its constructor. Wait here too, so that every mode
            # is timed from the same steady state and attaching is not counted.
            self.trainer.snapshot()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._detach is not None:
            self._detach()
        time.sleep(0.3)  # let the publisher thread finish a snapshot it is delivering


def timed_block(trainer: LiveTrainer, steps: int) -> float:
    """Seconds that `advance(steps, wait=True)` takes."""
    started = time.perf_counter()
    trainer.advance(steps, wait=True)
    return time.perf_counter() - started


def measure(system: str, preset: str, overrides: dict[str, str], repeats: int, steps: int,
            pauses: int, seed: int = 0) -> dict[str, Any]:
    """Alternate the modes `repeats` times over blocks of `steps`; then time `pauses` pauses."""
    trainer = LiveTrainer(system, preset, seed=seed, data="bundled", **overrides)
    budget = trainer.config.num_train_steps
    needed = 2 + len(MODES) * (1 + repeats * steps) + pauses * 10
    if needed > budget:
        raise SystemExit(f"{system}: {needed} steps may be needed but num_train_steps is "
                         f"{budget}; lower --steps/--repeats or --set num_train_steps=...")
    try:
        trainer.advance(2, wait=True)  # compiles the train step
        for mode in MODES:  # compiles the snapshot views; builds the widgets once
            with Attached(trainer, mode):
                trainer.advance(1, wait=True)
        rates: dict[str, list[float]] = {m: [] for m in MODES}
        sent = {"snapshots": 0, "bytes": 0}
        for r in range(repeats):
            for mode in MODES:
                with Attached(trainer, mode) as attached:
                    seconds = timed_block(trainer, steps)
                rates[mode].append(steps / seconds)
                if attached.subscriber is not None:
                    sent["snapshots"] += attached.subscriber.snapshots
                    sent["bytes"] += attached.subscriber.bytes_sent
                print(f"  {system} repeat {r + 1}/{repeats} {mode}: {steps / seconds:.3f} "
                      "steps/s", file=sys.stderr, flush=True)
        latencies = []
        step_s = 1.0 / statistics.median(rates["headless"])
        with Attached(trainer, "dashboard"):
            for _ in range(pauses):
                trainer.resume()
                time.sleep(random.uniform(0.5, 1.5) * max(step_s, 0.5))
                started = time.perf_counter()
                trainer.pause()
                latencies.append(time.perf_counter() - started)
        return {"rates": rates, "pause_s": latencies, "sent": sent, "step_s": step_s,
                "config": trainer.config, "errors": trainer.subscriber_errors}
    finally:
        trainer.close()


def report(system: str, preset: str, steps: int, repeats: int, m: dict[str, Any]) -> str:
    """Markdown: steps/s per mode and the ratios to headless; then the pause latency."""
    rates = m["rates"]
    base = statistics.median(rates["headless"])
    lines = [
        f"### {system} ({preset} preset), {repeats} alternations x {steps} steps per block\n",
        "| mode | steps/s (median) | blocks (steps/s) | ratio to headless |",
        "| --- | ---: | --- | ---: |",
    ]
    for mode in MODES:
        med = statistics.median(rates[mode])
        blocks = ", ".join(f"{r:.3f}" for r in rates[mode])
        lines.append(f"| {mode} | {med:.3f} | {blocks} | {med / base:.3f} |")
    pause = m["pause_s"]
    if pause:
        lines.append(
            f"\npause() latency with the dashboard attached, {len(pause)} pauses while running: "
            f"median {statistics.median(pause) * 1e3:.0f} ms, max {max(pause) * 1e3:.0f} ms "
            f"(one train step takes ~{m['step_s'] * 1e3:.0f} ms headless)."
        )
    sent = m["sent"]
    lines.append(f"serialise subscriber: {sent['snapshots']} snapshots, "
                 f"{sent['bytes'] / 2**20:.1f} MiB serialised over the timed blocks.")
    if m["errors"]:
        lines.append(f"subscriber errors: {m['errors']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--system", default="all", choices=[*SYSTEMS, "all"])
    parser.add_argument("--preset", default="cpu", choices=["cpu", "seed", "tiny"])
    parser.add_argument("--repeats", type=int, default=3, help="alternations (default 3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train steps per block (default: "
                        f"{DEFAULT_STEPS['sa-nca']} sa-nca, {DEFAULT_STEPS['rrcnn']} rrcnn)")
    parser.add_argument("--pauses", type=int, default=8, help="pause() calls timed (default 8)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.sets)
    random.seed(0)

    import importlib.metadata as md

    import jax

    versions = ", ".join(f"{p} {md.version(p)}" for p in ("jax", "jaxlib", "flax", "ipywidgets"))
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    print(f"{datetime.date.today()} · {platform.machine()}, {os.cpu_count()} CPUs · JAX backend "
          f"{jax.default_backend()} · {versions} · load average {load}\n")
    systems = SYSTEMS if args.system == "all" else (args.system,)
    for system in systems:
        steps = args.steps or DEFAULT_STEPS[system]
        m = measure(system, args.preset, overrides, args.repeats, steps, args.pauses)
        print(report(system, args.preset, steps, args.repeats, m) + "\n", flush=True)
    try:
        print(f"load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    except OSError:
        print("load average after: ?")
    return 0


if __name__ == "__main__":
    sys.exit(main())
