"""Data parallel training over simulated CPU devices and processes (`nca_widgets.parallel`).

JAX reads `XLA_FLAGS` once, when it starts, so every case runs in a subprocess with
`--xla_force_host_platform_device_count`. Float tolerance: the devices sum the batch's losses
and gradients in another order than one device does, so 1-device and 4-device runs differ by
float rounding only (measured: about 1e-7 relative over 20 steps); we allow 1e-5 relative on
losses and 1e-6 absolute on parameters, far below what a wrong reduction or a batch trained
twice would give.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from nca_widgets import attach, checkpoint

from .test_attach import until

LOSS_RTOL, PARAM_ATOL = 1e-5, 1e-6
TINY = ("sa-nca", "--preset", "tiny", "--set", "batch_size=4", "--data", "bundled")


def with_devices(n: int) -> dict[str, str]:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}


def run_python(script: str, devices: int) -> dict:
    """Run `script` with `devices` CPU devices; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=600, env=with_devices(devices))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli(*args: str, devices: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nca_widgets", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=with_devices(devices))


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """20 tiny sa-nca steps on 1 and on 4 devices, each saved at step 10 and resumed from there
    on the other number of devices: losses and parameters of every run."""
    where = tmp_path_factory.mktemp("parallel")
    return run_python(f"""
        import json
        import jax
        import numpy as np
        from nca_widgets.trainer import LiveTrainer

        def flat(params):
            return [np.ravel(x) for x in jax.tree.leaves(params)]

        def record(trainer, initial):
            params = flat(trainer.params())
            moved = max(np.abs(a - b).max() for a, b in zip(params, initial))
            return {{"devices": trainer.num_devices, "loss": trainer.history.loss.tolist(),
                     "params": [x.tolist() for x in params], "moved": float(moved)}}

        out = {{}}
        for n in (1, 4):
            trainer = LiveTrainer("sa-nca", "tiny", seed=0, data="bundled", devices=n,
                                  batch_size=4, num_train_steps=20)
            initial = flat(trainer.params())
            trainer.advance(10, wait=True)
            trainer.save({str(where)!r} + f"/on{{n}}")
            trainer.advance(10, wait=True)
            out[f"straight{{n}}"] = record(trainer, initial)
            trainer.close()
        for saved, n in ((4, 1), (1, 4)):
            trainer = LiveTrainer.restore({str(where)!r} + f"/on{{saved}}", devices=n)
            initial = flat(trainer.params())
            trainer.advance(10, wait=True)
            out[f"saved{{saved}}_resumed{{n}}"] = record(trainer, initial)
            trainer.close()
        print(json.dumps(out))
    """, devices=4)


def assert_close_runs(a: dict, b: dict) -> None:
    assert len(a["loss"]) == len(b["loss"]) == 20
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=LOSS_RTOL)
    for x, y in zip(a["params"], b["params"], strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=PARAM_ATOL)


def test_one_and_four_devices_train_alike(runs):
    one, four = runs["straight1"], runs["straight4"]
    assert (one["devices"], four["devices"]) == (1, 4)
    assert_close_runs(one, four)
    assert min(one["moved"], four["moved"]) > 1000 * PARAM_ATOL, "the parameters trained"


def test_a_checkpoint_saved_on_four_devices_continues_on_one_and_back(runs):
    for saved, resumed in ((4, 1), (1, 4)):
        run = runs[f"saved{saved}_resumed{resumed}"]
        assert run["devices"] == resumed
        # the first 10 steps come from the checkpoint, bit for bit
        assert run["loss"][:10] == runs[f"straight{saved}"]["loss"][:10]
        assert_close_runs(run, runs[f"straight{saved}"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def in_processes(command, n: int = 2) -> list[tuple[int, str, str]]:
    """`command(process_id, coordinator)` (a Popen) for n processes of 2 devices each."""
    coordinator = f"localhost:{free_port()}"
    return [finish(proc) for proc in [command(i, coordinator) for i in range(n)]]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_two_processes_train_as_one_and_only_process_0_writes(tmp_path):
    run_dir = tmp_path / "run"
    results = in_processes(lambda i, coordinator: cli(
        "train", *TINY, "--steps", "10", "--checkpoint-every", "4", "--run-dir", str(run_dir),
        "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i),
        devices=2))
    for code, _, err in results:
        assert code == 0, err
    first, second = (last_json(out) for _, out, _ in results)
    assert first["devices"] == second["devices"] == 4
    assert first["params_digest"] == second["params_digest"]
    assert first["final_loss"] == second["final_loss"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 11)), "one metrics file, written once"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "ckpt-00000004", "ckpt-00000008", "ckpt-00000010", "live", "metrics.jsonl", "run.json"]
    arrays, meta = checkpoint.load(run_dir)
    assert meta["step"] == 10
    # the gathered pool is whole: the checkpoint restores on this process's one device
    restored = run_python(f"""
        import json
        from nca_widgets import parallel
        from nca_widgets.trainer import LiveTrainer
        trainer = LiveTrainer.restore({str(run_dir)!r}, devices=1)
        print(json.dumps({{"digest": parallel.digest(trainer.params()),
                           "loss": float(trainer.history.loss[-1])}}))
    """, devices=1)
    assert restored == {"digest": first["params_digest"], "loss": first["final_loss"]}


def test_a_failure_on_process_0_alone_ends_every_process_with_its_reason(tmp_path):
    """Process 0 alone writes metrics; when that fails (here metrics.jsonl is a dangling link),
    the other process must not train on against it and wait forever: both exit 2, saying why."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").symlink_to(tmp_path / "missing" / "metrics.jsonl")
    results = in_processes(lambda i, coordinator: cli(
        "train", *TINY, "--steps", "10", "--run-dir", str(run_dir), "--coordinator",
        coordinator, "--num-processes", "2", "--process-id", str(i), devices=2))
    (code0, _, err0), (code1, _, err1) = results
    assert (code0, code1) == (2, 2), (err0, err1)
    assert "nca-widgets: error: training failed at step" in err0
    assert "FileNotFoundError" in err0
    assert "process 0 failed: training failed at step" in err1


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_notebook_attached_to_process_0_steers_both_processes(tmp_path):
    """Pause, 3 steps, a learning rate, save, resume and stop reach process 0 of a two-process
    run, which hands each to process 1 at the same step: both end with the same parameters
    (a rate or a step applied in one process alone would part them) and process 0 writes."""
    run_dir = tmp_path / "run"
    coordinator = f"localhost:{free_port()}"
    procs = [cli("train", *TINY, "--steps", "100000", "--set", "num_train_steps=100000",
                 "--checkpoint-every", "100000", "--run-dir", str(run_dir), "--coordinator",
                 coordinator, "--num-processes", "2", "--process-id", str(i), devices=2)
             for i in range(2)]
    try:
        until(lambda: (run_dir / "live").is_dir(), timeout=300, what="process 0 to serve")
        run = attach(run_dir, timeout=300)
        until(lambda: run.step > 3, timeout=300, what="the run to train")
        run.pause()
        until(lambda: run.status == "paused", what="the run to pause")
        step = run.step
        time.sleep(1.5)
        assert run.step == step and len(metrics(run_dir)) == step, "paused: no more steps"
        run.learning_rate = 1e-4
        run.advance(3)
        until(lambda: run.step == step + 3 and run.status == "paused", what="3 steps")
        saved = run.save(timeout=120)
        assert saved == checkpoint.path_for(run_dir, step + 3) and saved.exists()
        run.resume()
        until(lambda: run.step > step + 6, what="training to resume")
        run.stop()
        results = [finish(proc) for proc in procs]
        run.detach()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for code, _, err in results:
        assert code == 0, err
    first, second = (last_json(out) for _, out, _ in results)
    assert first["steps"] == second["steps"] > step + 6
    assert first["params_digest"] == second["params_digest"]
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == list(range(1, first["steps"] + 1))
    assert [r["lr"] for r in rows[step:step + 3]] == pytest.approx([1e-4] * 3, rel=0.01)
    assert rows[step - 1]["lr"] != pytest.approx(1e-4, rel=0.01)
    arrays, meta = checkpoint.load(saved)
    assert meta["step"] == step + 3


def test_every_process_restores_and_one_alone_reads_views(tmp_path):
    """Two processes restore a 1-device checkpoint; process 0 trains on and puts a brush stroke
    into the pool, the other follows (both end with the same parameters and pool) and refuses
    commands of its own. Process 0, alone, takes a snapshot (pool view, probe rollout, live
    evaluation): views never wait for the other process."""
    saved = tmp_path / "saved"
    run_python(f"""
        from nca_widgets.trainer import LiveTrainer
        trainer = LiveTrainer("sa-nca", "tiny", seed=0, data="bundled", batch_size=4)
        trainer.advance(3, wait=True)
        trainer.save({str(saved)!r})
        print("{{}}")
    """, devices=1)
    script = textwrap.dedent(f"""
        import json, sys
        import jax
        import numpy as np
        from nca_widgets import parallel
        parallel.initialize(sys.argv[1], 2, int(sys.argv[2]))
        from nca_widgets.trainer import LiveTrainer
        trainer = LiveTrainer.restore({str(saved)!r})
        out = {{"devices": trainer.num_devices}}
        if parallel.is_main_process():
            trainer.advance(2, wait=True)
            trainer.edit(np.ones((12, 12), bool), "erase", 0, depth=0)
            out["injected_at"] = trainer.inject(8)
            snapshot = trainer.snapshot()
            out.update(pool=len(snapshot.pool.losses), probe=snapshot.probe.step,
                       evaluation=snapshot.evaluation.value.tolist())
            trainer.close()
        else:
            try:
                trainer.advance(2)
            except RuntimeError as error:
                out["refused"] = str(error)
            trainer.close(timeout=None)  # returns once process 0 has closed the run
        out.update(step=trainer.step, digest=parallel.digest(trainer.params()),
                   pool_digest=parallel.digest(trainer._state.pool))
        for size in (10, 5000):  # in one collective, and in two
            sent = list(range(size)) if parallel.is_main_process() else None
            out[f"broadcast{{size}}"] = parallel.broadcast(sent) == list(range(size))
        print(json.dumps(out))
        jax.distributed.shutdown()
    """)
    results = in_processes(lambda i, coordinator: subprocess.Popen(
        [sys.executable, "-c", script, coordinator, str(i)], text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=with_devices(2)))
    for code, _, err in results:
        assert code == 0, err
    first, second = (last_json(out) for _, out, _ in results)
    assert first["step"] == second["step"] == 5 and first["devices"] == second["devices"] == 4
    assert first["digest"] == second["digest"]
    assert first["injected_at"] == 5 and first["pool_digest"] == second["pool_digest"]
    assert second["broadcast10"] and second["broadcast5000"]
    assert second["refused"] == ("this is process 1 of a run across 2 processes, which follows "
                                 "process 0: steer the run there (e.g. attach a notebook to its "
                                 "run directory)")
    assert first["pool"] == 8, "process 0's own half of the pool (16 samples in all)"
    assert first["probe"] == 5
    assert len(first["evaluation"]) == 1 and first["evaluation"][0] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--devices", "3"], "the pool has 16 samples, which do not split evenly over 3 devices:"
                             " set pool_size to a multiple of 3 (e.g. --set pool_size=15)"),
        (["--set", "batch_size=2"], "the batch has 2 samples, which do not split evenly over 4 "
                                    "devices: set batch_size to a multiple of 4"),
        (["--devices", "8"], "devices=8, but 4 cpu device(s) are available per process"),
        (["--devices", "0"], "pass a whole number from 1 to 4"),
        (["--coordinator", "localhost:1"], "--coordinator, --num-processes and --process-id go "
                                           "together"),
    ],
)
def test_what_does_not_split_is_refused_saying_what_to_set(args, message, tmp_path):
    code, _, err = finish(cli("train", "sa-nca", "--preset", "tiny", "--data", "bundled",
                              "--run-dir", str(tmp_path / "run"), *args, devices=4))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
