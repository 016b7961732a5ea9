"""The `nca-widgets` command line: info, train, eval, export, bench and lab.

Progress goes to stderr; the last stdout line of every command but `lab` is one JSON object, so
scripts can rely on it. Errors exit non-zero with one line that says what to do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import time
from pathlib import Path

from nca_widgets import parallel
from nca_widgets.attach import serve
from nca_widgets.checkpoint import CheckpointError
from nca_widgets.config import PRESETS, ConfigError, config_to_dict, parse_overrides, resolve_preset
from nca_widgets.data import DATA_SOURCES, DataError
from nca_widgets.registry import make_system, names


def main(argv: list[str] | None = None) -> int:
    """Entry point of `nca-widgets` and `python -m nca_widgets`."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.run is not _lab:  # only `lab` passes unknown options on (to jupyter)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.lab_args = extra
    if os.getcwd() not in sys.path:  # so that `package.module:factory` finds the user's code
        sys.path.insert(0, os.getcwd())
    try:
        result = args.run(args)
    except (ConfigError, DataError, CheckpointError, ValueError, TypeError, RuntimeError) as e:
        print(f"nca-widgets: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nca-widgets: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(_json_safe(result)))
    return 0


def run() -> None:
    """`main()` as a process: `nca-widgets` and `python -m nca_widgets` end here.

    The process ends with `os._exit` once the output is flushed: JAX's runtime can abort during
    interpreter teardown ("terminate called ... exception not rethrown", exit -6) while a
    background thread winds down, after everything (metrics, checkpoints, the JSON line) is
    written and closed. Seen once in a CI run of `train` stopped from an attached notebook.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _json_safe(value):
    """`value` with NaN and infinities as None (null): strict JSON, as in metrics.jsonl."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nca-widgets", description="Train and explore neural cellular automata."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, run, help: str, config: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        sub.add_argument("system", metavar="SYSTEM",
                         help=f"one of {', '.join(names())}, or a factory of your own as "
                              "package.module:function")
        if config:
            sub.add_argument("--preset", default="auto", choices=PRESETS,
                             help="config preset (default: auto = seed on a GPU, cpu otherwise)")
            sub.add_argument("--set", dest="overrides", action="append", default=[],
                             metavar="KEY=VALUE", help="override a config field (repeatable); "
                             "tuples as 28,28,10")
        return sub

    command("info", _info, "Print a system's config and parameter counts.")
    train = command("train", _train, "Train headless, writing metrics and checkpoints.")
    train.add_argument("--steps", type=int, help="train steps (default: the config's)")
    train.add_argument("--run-dir", type=Path, help="default: runs/<system>-<time>")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data", default="auto", choices=DATA_SOURCES,
                       help="where MNIST systems get their digits (default: auto)")
    train.add_argument("--checkpoint-every", type=int, default=500, metavar="N",
                       help="also checkpoint every N steps (default 500)")
    train.add_argument("--devices", type=int, metavar="N", help="train data parallel on N "
                       "local devices (default: all); pool and batch sizes must be multiples "
                       "of the devices in all processes")
    train.add_argument("--coordinator", metavar="HOST:PORT", help="train across processes: "
                       "process 0's address, the same for every process (with --num-processes "
                       "and --process-id)")
    train.add_argument("--num-processes", type=int, metavar="N")
    train.add_argument("--process-id", type=int, metavar="I", help="this process, 0 to N-1")
    train.add_argument("--distributed", action="store_true", help="train across processes, "
                       "as the environment says (SLURM, Open MPI, ...: see "
                       "jax.distributed.initialize)")
    evaluate = command("eval", _eval, "Test-set metrics of a run's newest checkpoint.",
                       config=False)
    evaluate.add_argument("--run-dir", type=Path, required=True)
    evaluate.add_argument("--num-test-examples", "--num-test-digits", dest="num_test",
                          type=int, default=128, help="score the first N test examples")
    export = command("export", _export, "Write a GIF or MP4 of a test example's rollout with "
                     "a run's newest checkpoint, as the dashboard's scrubber shows it.",
                     config=False)
    export.add_argument("--run-dir", type=Path, required=True)
    export.add_argument("--index", type=int, default=0, help="test example (default 0)")
    export.add_argument("--level", type=float,
                        help="where the system has levels (e.g. a noise level), start at this one")
    export.add_argument("--depth", type=int, help="volume systems: one depth over time "
                        "(default: every depth side by side)")
    export.add_argument("--out", type=Path, help="a .gif or .mp4 path (default: "
                        "<run-dir>/rollout-<index>.gif)")
    export.add_argument("--fps", type=float, default=10.0)
    export.add_argument("--scale", type=int, default=4, help="pixels per cell (default 4)")
    bench = command("bench", _bench, "Time the compiled train step.")
    bench.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    lab_help = ("Open JupyterLab on a notebook (default: the quickstart); other options go to "
                "jupyter lab, e.g. --no-browser --port 8899")
    lab = commands.add_parser("lab", help=lab_help, description=lab_help)
    lab.set_defaults(run=_lab)
    lab.add_argument("--notebook", type=Path, default=Path("notebooks/quickstart.ipynb"))
    return parser


def _system(args):
    return make_system(args.system, args.preset, **parse_overrides(args.overrides))


def _info(args) -> dict:
    from flax import nnx

    from nca_widgets.training import num_params, split_model

    system = _system(args)
    _, trainable, frozen = split_model(system, system.build_model(nnx.Rngs(0)))
    return {
        "system": args.system, "preset": resolve_preset(args.preset),
        "num_params": num_params(trainable) + num_params(frozen),
        "num_trainable_params": num_params(trainable),
        "config": config_to_dict(system.config),
    }


def _train(args) -> dict:
    import jax
    from tqdm.auto import tqdm

    from nca_widgets.trainer import LiveTrainer

    overrides = parse_overrides(args.overrides)
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be a positive number of train steps; got {args.steps}")
    _join_processes(args)
    run_dir = args.run_dir or Path("runs") / f"{args.system}-{time.strftime('%Y%m%d-%H%M%S')}"
    trainer = LiveTrainer(args.system, args.preset, seed=args.seed, run_dir=run_dir,
                          data=args.data, checkpoint_every=args.checkpoint_every,
                          devices=args.devices, **overrides)
    steps = min(args.steps or trainer.config.num_train_steps, trainer.config.num_train_steps)
    print(f"nca-widgets: {args.system} ({resolve_preset(args.preset)} preset) on "
          f"{trainer.examples.source}; {steps} steps; run dir {run_dir}", file=sys.stderr)
    # Notebooks attach through the run dir (nw.attach) and control the run; a pause from there
    # keeps this command waiting. Across processes process 0 serves, and its trainer passes
    # every command on to the others, which follow it until it closes.
    leads = parallel.is_main_process()
    server = serve(trainer, run_dir) if leads else None
    previous = signal.getsignal(signal.SIGINT)
    interrupts = _count_interrupts(leads)
    try:
        try:
            if leads:
                trainer.advance(steps)
            with tqdm(total=steps, unit="step", file=sys.stderr, dynamic_ncols=True,
                      disable=not leads) as bar:
                while _waits_on(trainer, steps, leads):
                    time.sleep(0.2)
                    if interrupts() and leads:
                        trainer.pause()
                        print(f"nca-widgets: interrupted at step {trainer.step}; saving",
                              file=sys.stderr)
                        break
                    if len(history := trainer.history):
                        bar.set_postfix(loss=f"{history.loss[-1]:.3e}",
                                        steps_per_s=f"{trainer.steps_per_s:.2f}")
                    bar.update(trainer.step - bar.n)
                bar.update(trainer.step - bar.n)
        finally:
            if server is not None:
                server.close()
        if leads and trainer.status == "running":  # resumed from a notebook past --steps
            trainer.pause()
        if trainer.status == "failed":
            trainer.wait()  # raises the training error
        if trainer.message:
            print(f"nca-widgets: {trainer.message}", file=sys.stderr)
        if leads and trainer.status != "finished":  # a finished run saved itself
            trainer.save(run_dir)
        digest = parallel.digest(trainer.params())
    finally:
        signal.signal(signal.SIGINT, previous)
        trainer.close()  # process 0's closes every process's trainer; the others wait for it
        # Across processes, leave together: process 0 hosts the service the others talk to.
        jax.distributed.shutdown()
    history = trainer.history
    return {
        "steps": trainer.step,
        "final_loss": float(history.loss[-1]) if len(history) else None,
        "steps_per_s": round(_steady_rate(history), 4),
        "run_dir": str(run_dir),
        "devices": trainer.num_devices,
        "params_digest": digest,
    }


def _count_interrupts(leads: bool):
    """Count Ctrl-C from now on; returns the function that reads the count.

    On process 0 (or the only one) the first one pauses and saves the run, in `_train`. On a
    process that follows process 0 it only says to interrupt process 0. A second one leaves at
    once, wherever the process is.
    """
    count = 0

    def interrupted(*_) -> None:
        nonlocal count
        count += 1
        if count > 1:
            os._exit(130)
        if not leads:
            print("nca-widgets: this process follows process 0, which saves and stops the "
                  "run when interrupted (interrupt this one again to leave at once)",
                  file=sys.stderr)

    signal.signal(signal.SIGINT, interrupted)
    return lambda: count


def _waits_on(trainer, steps: int, leads: bool) -> bool:
    """Whether `train` goes on waiting for the run.

    Process 0 (or the only one) waits while the run trains, or while a notebook paused it (not a
    failed step). A process that follows process 0 waits until process 0 closes the run, or
    the run has failed.
    """
    if not leads:
        return not trainer.closed and trainer.status != "failed"
    return trainer.step < steps and (trainer.status in ("idle", "running") or (
        trainer.status == "paused" and not trainer.message))


def _join_processes(args) -> None:
    """Join the other processes of a multi-process run, if asked to."""
    flags = (args.coordinator, args.num_processes, args.process_id)
    if not args.distributed and all(flag is None for flag in flags):
        return
    if not args.distributed and any(flag is None for flag in flags):
        raise ValueError("--coordinator, --num-processes and --process-id go together (or "
                         "--distributed alone, to read them from the environment)")
    if args.run_dir is None:
        raise ValueError("with several processes, give every process the same --run-dir")
    parallel.initialize(*flags)


def _steady_rate(history) -> float:
    """Steps per second after the first read-back (which includes compilation)."""
    first = history.wall_s[0] if len(history) else 0.0
    later = history.wall_s > first
    if not later.any():
        return 0.0
    return float(later.sum() / (history.wall_s[-1] - first))


def _restore(args):
    """The trainer of the newest checkpoint in `--run-dir`, which must be a SYSTEM run."""
    from nca_widgets.trainer import LiveTrainer

    trainer = LiveTrainer.restore(args.run_dir)
    if args.system not in (trainer.system.name, trainer.spec):
        trainer.close()
        raise ValueError(f"{args.run_dir} holds a {trainer.system.name} run, not {args.system}")
    return trainer


def _eval(args) -> dict:
    trainer = _restore(args)
    metrics = trainer.evaluate(args.num_test)
    trainer.close()
    return {"system": args.system, "step": trainer.step, **metrics}


def _export(args) -> dict:
    from nca_widgets.export import VIDEO_SUFFIXES
    from nca_widgets.widgets import FrameScrubber, VolumeScrubber

    out = args.out or args.run_dir / f"rollout-{args.index}.gif"
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"--out must end in {' or '.join(VIDEO_SUFFIXES)}; got {out}")
    trainer = _restore(args)
    try:
        rollout = trainer.rollout(args.index, "test", level=args.level)
    finally:
        trainer.close()
    if rollout.picture_kind == "volume":
        path = VolumeScrubber(rollout).save_video(out, depth=args.depth, fps=args.fps,
                                                  scale=args.scale)
    elif args.depth is not None:
        raise ValueError(f"--depth is for volume systems; {args.system} has 2-D frames")
    else:
        path = FrameScrubber(rollout).save_video(out, fps=args.fps, scale=args.scale)
    print(f"nca-widgets: wrote {path}", file=sys.stderr)
    return {"system": args.system, "step": rollout.step, "index": args.index,
            "frames": len(rollout), "path": str(path)}


def _bench(args) -> dict:
    import jax
    import jax.numpy as jnp

    from nca_widgets.training import init_train_state, make_train_step, time_steps

    system = _system(args)
    config = system.config
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1; got {args.steps}")
    images = jnp.asarray(system.load_examples("auto").train)
    graphdef, state = init_train_state(system, 0, images)
    compile_s, times = time_steps(make_train_step(system, graphdef), state, images, args.steps)
    median = statistics.median(times)
    return {
        "system": args.system, "config": config_to_dict(config),
        "compile_s": round(compile_s, 3), "step_s_median": round(median, 5),
        "steps_per_s": round(1.0 / median, 3), "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
    }


def _lab(args) -> dict:
    """Replace this process with JupyterLab on the notebook; says which preset 'auto' picks."""
    import shutil

    import jax

    if not args.notebook.is_file():
        raise ValueError(f"no notebook at {args.notebook}; run this from the nca_widgets "
                         "checkout, or name a notebook")
    jupyter = shutil.which("jupyter", path=os.path.dirname(sys.executable)) or \
        shutil.which("jupyter")
    if jupyter is None:
        raise RuntimeError('JupyterLab is not installed: pip install "nca-widgets[lab]"')
    backend, preset = jax.default_backend(), resolve_preset("auto")
    print(f"nca-widgets: JAX runs on {backend} ({jax.devices()[0].device_kind}); the notebooks' "
          f"preset 'auto' trains the '{preset}' config"
          + ("" if preset == "seed" else " (install a CUDA JAX to train the seed config)"),
          file=sys.stderr)
    print("nca-widgets: JupyterLab prints the URL to open below", file=sys.stderr, flush=True)
    notebook = args.notebook.resolve()
    if os.geteuid() == 0 and "--allow-root" not in args.lab_args:  # containers run as root
        args.lab_args.append("--allow-root")
    # default_url makes the printed URL (and the bare server address) open the notebook itself.
    os.execv(jupyter, [jupyter, "lab", f"--ServerApp.root_dir={notebook.parent}",
                       f"--LabApp.default_url=/lab/tree/{notebook.name}", *args.lab_args])
