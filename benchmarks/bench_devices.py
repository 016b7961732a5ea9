"""Data parallel train-step speed on 1, 2 and 4 devices (simulated CPU devices by default).

    .venv/bin/python benchmarks/bench_devices.py [--devices 1 2 4] [--batch 2 4 8]
        [--steps N] [--preset cpu] [--set KEY=VALUE ...]

For each number of devices and each batch size it divides, a fresh process (XLA reads
`XLA_FLAGS` once) with `--xla_force_host_platform_device_count=<devices>` on a CPU-only JAX
(on a GPU machine, the first <devices> GPUs) builds sa-nca at the preset, lays the state out
as the trainer does (`training.place` on `parallel.make_mesh`), compiles the data parallel
train step and times N steps one by one (each waited for). It prints a markdown table of the
median step time, steps/s, samples/s and the speed-up over one device at the same batch.

Simulated CPU devices share the machine's cores: on a 2-core CPU, 4 devices cannot be faster
than the cores allow; the table shows what splitting the batch costs or gains there.

    .venv/bin/python benchmarks/bench_devices.py --broadcast [--steps N]

times instead what a run across processes pays for being steerable: two local processes of 2
CPU devices each (gloo) call `parallel.broadcast` N times, as a trainer does once per chunk of
steps (about 0.1 s of work) and every 0.1 s while paused, with no command and with one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time


def child(devices: int, preset: str, batch: int, steps: int, overrides: list[str]) -> dict:
    """Time the train step in this process (started with `devices` devices)."""
    import jax
    import jax.numpy as jnp

    from nca_widgets import parallel
    from nca_widgets.config import parse_overrides
    from nca_widgets.registry import make_system
    from nca_widgets.training import init_train_state, make_train_step, place, time_steps

    system = make_system("sa-nca", preset, batch_size=batch, **parse_overrides(overrides))
    mesh = parallel.make_mesh(devices)
    train = parallel.put(jnp.asarray(system.load_examples("bundled").train),
                         parallel.replicated(mesh))
    graphdef, state = init_train_state(system, 0, train)
    state = place(system, state, train, mesh)
    compile_s, times = time_steps(make_train_step(system, graphdef, mesh=mesh), state, train,
                                  steps)
    median = statistics.median(times)
    return {"devices": mesh.size, "batch": batch, "compile_s": round(compile_s, 2),
            "step_s": median, "device": jax.devices()[0].device_kind}


def broadcast_child(process_id: int, coordinator: str, repeats: int) -> dict:
    """Time `parallel.broadcast` in process `process_id` of 2 (the caller starts both)."""
    from nca_widgets import parallel

    parallel.initialize(coordinator, 2, process_id)
    import jax

    medians = {}
    import numpy as np

    stroke = ("edit", (np.zeros((28, 28), bool), "erase", 3, None), False)
    messages = {"no command": ([], 1.0, None), "one command": ([("set_lr", 1e-4, True)], 1.0, None),
                "a brush stroke (two collectives)": ([stroke], 1.0, None)}
    for name, message in messages.items():
        parallel.broadcast(message)  # compiles
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            parallel.broadcast(message)
            times.append(time.perf_counter() - start)
        medians[name] = statistics.median(times)
    jax.distributed.shutdown()
    return medians


def time_broadcasts(repeats: int) -> None:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        coordinator = f"localhost:{s.getsockname()[1]}"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen([sys.executable, __file__, "--broadcast-child", str(i),
                               coordinator, "--steps", str(repeats)], env=env,
                              stdout=subprocess.PIPE, text=True) for i in range(2)]
    outs = [proc.communicate(timeout=600)[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        sys.exit(f"a broadcasting process failed (exit codes {[p.returncode for p in procs]})")
    medians = json.loads(outs[0].strip().splitlines()[-1])
    print(f"2 processes x 2 CPU devices (gloo), {repeats} broadcasts, {os.cpu_count()} cores\n")
    print("| message (commands, pace, failure) | median (ms) | share of a 0.1 s chunk |")
    print("| --- | ---: | ---: |")
    for name, seconds in medians.items():
        print(f"| {name} | {1000 * seconds:.2f} | {seconds / 0.1:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--broadcast", action="store_true",
                        help="time the command broadcast across 2 processes instead")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--broadcast-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.broadcast_child:
        process_id, coordinator = args.broadcast_child
        print(json.dumps(broadcast_child(int(process_id), coordinator, args.steps)))
        return
    if args.broadcast:
        time_broadcasts(args.steps)
        return
    if args.child:
        print(json.dumps(child(args.child, args.preset, args.batch[0], args.steps,
                               args.overrides)))
        return

    rows = []
    for batch in args.batch:
        for devices in args.devices:
            if batch % devices:
                continue
            print(f"batch {batch} on {devices} device(s) ...", file=sys.stderr, flush=True)
            env = {**os.environ,
                   "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
            command = [sys.executable, __file__, "--child", str(devices), "--batch", str(batch),
                       "--steps", str(args.steps), "--preset", args.preset]
            for override in args.overrides:
                command += ["--set", override]
            out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))

    print(f"sa-nca `{args.preset}` preset, {args.steps} timed steps, {os.cpu_count()} cores "
          f"({platform.processor() or platform.machine()}), device: {rows[0]['device']}\n")
    print("| batch | devices | per device | step (ms) | steps/s | samples/s | vs 1 device "
          "| compile (s) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        one = next((r for r in rows if r["batch"] == row["batch"] and r["devices"] == 1), None)
        speedup = f"{one['step_s'] / row['step_s']:.2f}x" if one else "-"
        print(f"| {row['batch']} | {row['devices']} | {row['batch'] // row['devices']} | "
              f"{1000 * row['step_s']:.1f} | {1 / row['step_s']:.2f} | "
              f"{row['batch'] / row['step_s']:.1f} | {speedup} | {row['compile_s']} |")


if __name__ == "__main__":
    main()
