"""LiveTrainer: control from other threads, determinism, faults, checkpoints, snapshots."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nca_widgets import NCAWidgetsWarning, checkpoint
from nca_widgets.config import ConfigError
from nca_widgets.trainer import LiveTrainer, TrainingError
from nca_widgets.training import TRACE_COUNTS

N_STEPS = 24


def tiny(system="sa-nca", digits=None, **kwargs) -> LiveTrainer:
    kwargs.setdefault("num_train_steps", N_STEPS)
    return LiveTrainer(system, "tiny", seed=0, examples=digits, **kwargs)


def saved_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    return checkpoint.load(run_dir)[0]


def assert_same_run(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Bit-identical state and loss history (wall times aside)."""
    keys = sorted(k for k in a if k != "history/wall_s")
    assert keys == sorted(k for k in b if k != "history/wall_s")
    for key in keys:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_pause_takes_effect_within_a_step_and_advance_is_exact(tiny_digits):
    trainer = tiny(digits=tiny_digits["sa-nca"], num_train_steps=10_000)
    trainer.start()
    while trainer.step < 5:
        time.sleep(0.01)
    step_time = np.diff(trainer.history.wall_s).max(initial=0.05)
    asked = time.perf_counter()
    trainer.pause()
    latency = time.perf_counter() - asked
    assert trainer.status == "paused"
    assert latency < max(0.25, 2 * step_time), f"pause took {latency:.3f} s"
    paused_at = trainer.step
    time.sleep(0.3)
    assert trainer.step == paused_at, "no steps while paused"
    trainer.advance(7, wait=True)
    assert (trainer.step, trainer.status) == (paused_at + 7, "paused")
    np.testing.assert_array_equal(trainer.history.step, np.arange(1, paused_at + 8))
    trainer.close()


def test_pauses_advances_and_a_restore_in_a_fresh_process_are_bit_identical(
    tiny_digits, tmp_path
):
    straight = tiny(digits=tiny_digits["sa-nca"], run_dir=tmp_path / "straight")
    straight.start()
    assert straight.wait(timeout=120) == "finished"

    stepped = tiny(digits=tiny_digits["sa-nca"], run_dir=tmp_path / "stepped")
    stepped.advance(3, wait=True)
    stepped.advance(1, wait=True)
    stepped.start()
    time.sleep(0.05)
    stepped.pause()
    stepped.advance(2, wait=True)
    stepped.resume()
    assert stepped.wait(timeout=120) == "finished"
    assert_same_run(saved_arrays(tmp_path / "straight"), saved_arrays(tmp_path / "stepped"))

    first = tiny(digits=tiny_digits["sa-nca"])
    first.advance(9, wait=True)
    first.save(tmp_path / "half")
    script = textwrap.dedent(f"""
        from nca_widgets.trainer import LiveTrainer
        trainer = LiveTrainer.restore({str(tmp_path / "half")!r}, data="bundled")
        assert trainer.status == "paused" and trainer.step == 9, trainer
        trainer.resume()
        assert trainer.wait(timeout=120) == "finished"
        trainer.save({str(tmp_path / "resumed")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=180)
    assert_same_run(saved_arrays(tmp_path / "straight"), saved_arrays(tmp_path / "resumed"))


def test_live_learning_rate_takes_effect_without_recompiling(tiny_digits):
    trainer = tiny("rrcnn", digits=tiny_digits["rrcnn"])
    before = TRACE_COUNTS["rrcnn"]
    trainer.advance(3, wait=True)
    trainer.learning_rate = 3e-5
    trainer.advance(3, wait=True)
    trainer.learning_rate = 2e-3
    trainer.advance(2, wait=True)
    lr = trainer.history.lr
    assert lr[3] == pytest.approx(3e-5, rel=1e-5)
    assert lr[6] == pytest.approx(2e-3, rel=1e-5)
    assert lr[7] < lr[6], "the schedule keeps falling from the new value"
    assert TRACE_COUNTS["rrcnn"] - before == 1
    trainer.close()


def test_non_finite_loss_skips_the_update_and_pauses_with_a_message(tiny_digits):
    good = tiny_digits["sa-nca"]
    poisoned = dataclasses.replace(good, train_images=np.full_like(good.train_images, np.nan))
    trainer = tiny(digits=poisoned)
    initial = jax_leaves(trainer)
    trainer.start()
    trainer._wait_for(lambda: trainer.status == "paused", timeout=60)
    assert trainer.step == 1
    assert "non-finite loss or gradient at step 1" in trainer.message
    assert "lower the learning rate" in trainer.message
    for a, b in zip(initial, jax_leaves(trainer), strict=True):
        np.testing.assert_array_equal(a, b)  # parameters and optimizer state kept
    assert np.isnan(trainer.history.loss[-1])
    trainer.resume()  # the next batch is poisoned too: skipped and paused again
    trainer._wait_for(lambda: trainer.step == 2 and trainer.status == "paused", timeout=60)
    assert "step 2" in trainer.message
    trainer.close()


def jax_leaves(trainer):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves((trainer._state.params,
                                                    trainer._state.opt_state))]


def test_an_exception_on_the_training_thread_fails_the_trainer_and_wait_raises(tiny_digits):
    trainer = tiny(digits=tiny_digits["sa-nca"])
    real_step, calls = trainer._train_step, []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 4:
            raise FloatingPointError("injected failure")
        return real_step(*args)

    trainer._train_step = flaky
    trainer.start()
    with pytest.raises(TrainingError, match="injected failure") as info:
        trainer.wait(timeout=60)
    assert isinstance(info.value.__cause__, FloatingPointError)
    assert trainer.status == "failed"
    assert "FloatingPointError: injected failure" in trainer.message
    assert trainer.snapshot().status == "failed"


def test_a_raising_subscriber_is_reported_and_unsubscribed(tiny_digits):
    trainer = tiny(digits=tiny_digits["sa-nca"])
    calls, good = [], []

    def bad(snapshot):
        calls.append(snapshot.step)
        raise ValueError("subscriber bug")

    trainer.subscribe(bad)
    trainer.subscribe(good.append)
    trainer.start()
    assert trainer.wait(timeout=60) == "finished"
    time.sleep(0.3)
    assert len(calls) == 1
    assert "subscriber bug" in trainer.subscriber_errors[0]
    assert good[-1].status == "finished" and good[-1].step == N_STEPS


def test_a_failing_live_view_is_reported_and_training_goes_on(tiny_digits):
    trainer = tiny(digits=tiny_digits["rrcnn"], system="rrcnn")
    trainer._views.pool_view = lambda *args: (_ for _ in ()).throw(MemoryError("view OOM"))
    seen = []
    trainer.subscribe(seen.append)
    trainer.advance(3, wait=True, timeout=60)
    assert trainer.status == "paused" and trainer.step == 3
    assert "live views could not be updated: MemoryError: view OOM" in trainer.message
    deadline = time.time() + 10
    while not (seen and seen[-1].step == 3) and time.time() < deadline:
        time.sleep(0.02)
    assert seen[-1].message == trainer.message and seen[-1].pool is None
    assert trainer.evaluate(4)["num_test_digits"] == 4  # requests are still answered
    trainer.resume()  # and training finishes
    assert trainer.wait(timeout=60) == "finished" and trainer.step == N_STEPS


def test_pause_returns_paused_even_right_after_start(tiny_digits):
    trainer = tiny(digits=tiny_digits["rrcnn"], system="rrcnn", num_train_steps=10_000)
    for _ in range(3):
        trainer.start()
        trainer.pause()
        assert trainer.status == "paused"


def test_close_shows_the_end_ends_the_threads_and_refuses_later_requests(tiny_digits):
    trainer = tiny(digits=tiny_digits["rrcnn"], system="rrcnn", num_train_steps=10_000)
    seen = []
    trainer.subscribe(seen.append)
    trainer.start()
    while trainer.step < 2:
        time.sleep(0.01)
    trainer.close(timeout=30)
    assert trainer.status == "stopped"
    trainer._publisher.thread.join(timeout=10)
    assert not trainer._publisher.thread.is_alive()
    assert seen[-1].status == "stopped", "subscribers saw the end before it ended"
    with pytest.raises(RuntimeError, match="closed; build a new LiveTrainer"):
        trainer.snapshot()
    with pytest.raises(RuntimeError, match="closed"):
        trainer.pause()
    trainer.close()  # idempotent


def test_evaluate_refuses_a_count_that_is_not_positive(tiny_digits):
    trainer = tiny(digits=tiny_digits["rrcnn"], system="rrcnn")
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="positive number of test examples"):
            trainer.evaluate(bad)


def test_snapshots_carry_history_pool_and_probe(tiny_digits):
    trainer = tiny(digits=tiny_digits["sa-nca"])
    trainer.advance(5, wait=True)
    snap = trainer.snapshot()
    config = trainer.config
    h, w, d = config.spatial_dims
    assert snap.step == 5 and len(snap.history) == 5
    assert snap.probe.volume.shape == (2 * config.num_steps + 1, d, h, w)
    assert snap.probe.volume.dtype == np.uint8 and snap.probe.channel == config.channel_size - 1
    np.testing.assert_array_equal(snap.probe.volume[0, 0], snap.probe.digit)  # depth 0 = digit
    assert not snap.probe.volume.flags.writeable
    assert np.all(np.diff(snap.pool.losses) <= 0), "pool view sorted worst first"
    seen = []
    trainer.subscribe(seen.append)
    trainer.set_probe(channel=0)
    deadline = time.time() + 30
    while not (seen and seen[-1].probe.channel == 0) and time.time() < deadline:
        time.sleep(0.02)
    assert seen[-1].probe.channel == 0
    assert seen[-1].probe.value_range[0] < 0 < seen[-1].probe.value_range[1]

    rr = tiny("rrcnn", digits=tiny_digits["rrcnn"])
    rr.advance(2, wait=True)
    probe = rr.snapshot().probe
    assert probe.frames.shape == (2 * rr.config.num_steps + 1, *rr.config.spatial_dims)
    assert probe.psnr.shape == (probe.frames.shape[0],)


def test_rollouts_show_the_digit_in_zero_to_one_with_their_scrubbers_and_videos(tiny_digits):
    from nca_widgets import FrameScrubber, VolumeScrubber

    trainer = tiny(digits=tiny_digits["sa-nca"])
    rollout = trainer.rollout(7)
    digit = tiny_digits["sa-nca"].test_images[7]
    assert np.asarray(rollout).shape == rollout.shape == (2 * trainer.config.num_steps + 1,
                                                           *rollout.shape[1:])
    # A trained digit channel runs far beyond [0, 1] (up to ~10): it must not dim the digit.
    bright = rollout.states.copy()
    bright[1:, ..., -1] *= 10
    bright[1:, ..., 0] = 5.0  # and a hidden channel, which keeps a range of its own
    scrubber = VolumeScrubber(dataclasses.replace(rollout, states=bright))
    assert scrubber.channel == trainer.config.channel_size - 1
    assert scrubber.value_range == [0.0, 1.0] and scrubber.depth_labels[0] == "input"
    first = scrubber.frames(depth=0)[0, ..., 0]  # the GIF's first frame of the input slice
    np.testing.assert_array_equal(first, np.round(digit * 255).astype(np.uint8))
    scrubber.channel = 0
    assert scrubber.value_range == [0.0, 5.0]

    rr = tiny("rrcnn", digits=tiny_digits["rrcnn"])
    noisy = [rr.rollout(3, level=level) for level in (0.1, 0.9)]
    assert [r.note for r in noisy] == ["noise level 0.10", "noise level 0.90"]
    clean = tiny_digits["rrcnn"].test_images[3]
    errors = [np.mean((r.input - clean) ** 2) for r in noisy]
    assert errors[0] < errors[1] / 4, "the input's noise follows the level"
    frames = FrameScrubber(noisy[1])
    assert frames.labels == ["noisy input", "estimate", "target"]
    assert frames.note == "noise level 0.90" and frames.probe_index == 3
    with pytest.raises(ValueError, match="no levels"):
        trainer.rollout(3, level=0.5)


def test_the_rrcnn_gallery_shows_each_tiles_noise_and_the_probe_follows_a_tile(tiny_digits):
    rr = tiny("rrcnn", digits=tiny_digits["rrcnn"])
    pool = rr.snapshot().pool
    assert sorted(pool.levels) == pytest.approx(np.linspace(0.1, 0.9, len(pool.levels)))
    clean = tiny_digits["rrcnn"].test_images[pool.digit_indices] * 255
    noise = np.mean((pool.inputs - clean) ** 2, axis=(1, 2))
    assert np.corrcoef(noise, pool.levels)[0, 1] > 0.9, "each tile's input has its own noise"
    tile = int(np.argmax(pool.levels))
    seen = []
    rr.subscribe(seen.append)
    rr.set_probe(int(pool.digit_indices[tile]), "test", level=float(pool.levels[tile]))
    deadline = time.time() + 30
    while not (seen and seen[-1].probe.note == "noise level 0.90") and time.time() < deadline:
        time.sleep(0.02)
    assert seen[-1].probe.probe_index == pool.digit_indices[tile]
    assert seen[-1].probe.note == "noise level 0.90"


def test_restore_into_a_different_config_is_refused_naming_the_fields(tiny_digits, tmp_path):
    trainer = tiny(digits=tiny_digits["sa-nca"])
    trainer.advance(2, wait=True)
    path = trainer.save(tmp_path)
    with pytest.raises(ConfigError, match=r"num_steps \(8 there, 5 asked\)"):
        LiveTrainer.restore(path, num_steps=5, examples=tiny_digits["sa-nca"])
    with pytest.raises(ConfigError, match="spatial_dims") as info:
        LiveTrainer.restore(tmp_path, preset="cpu", examples=tiny_digits["sa-nca"])
    assert "hidden_size" in str(info.value)
    restored = LiveTrainer.restore(tmp_path, examples=tiny_digits["sa-nca"], num_steps=8)
    assert (restored.step, restored.status) == (2, "paused")


def test_continuing_from_an_older_checkpoint_sets_the_later_branch_aside(tiny_digits, tmp_path):
    """Steps 1-12 with checkpoints at 4, 8, 12; then the run goes on from step 4 in its own
    directory. The old branch's later checkpoints and rows move to abandoned-*/ (none is
    deleted), so metrics.jsonl counts each step once and the newest checkpoint is the new one."""
    first = tiny(digits=tiny_digits["sa-nca"], run_dir=tmp_path, checkpoint_every=4)
    first.advance(12, wait=True)
    first.save()  # the periodic one falls at 4 and 8 (12 ends the advance: paused)
    first.close()
    old_rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == [
        "ckpt-00000004", "ckpt-00000008", "ckpt-00000012"]
    again = LiveTrainer.restore(checkpoint.path_for(tmp_path, 4), run_dir=tmp_path,
                                examples=tiny_digits["sa-nca"])
    again.advance(2, wait=True)
    again.save()
    again.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == [
        "ckpt-00000004", "ckpt-00000006"]
    (aside,) = tmp_path.glob("abandoned-*")
    assert [p.name for p in checkpoint.checkpoints(aside)] == ["ckpt-00000008", "ckpt-00000012"]
    assert (aside / "metrics.jsonl").read_text().splitlines() == old_rows[4:]
    assert LiveTrainer.restore(tmp_path, examples=tiny_digits["sa-nca"]).step == 6


def test_two_trainers_in_one_process_both_progress(tiny_digits):
    a = tiny(digits=tiny_digits["sa-nca"], learning_rate=1e-3)
    b = tiny(digits=tiny_digits["sa-nca"], learning_rate=3e-3)
    a.start()
    while a.status == "idle":  # the worker takes the command (compiling keeps it running)
        time.sleep(0.001)
    with pytest.warns(NCAWidgetsWarning, match=r"1 other trainer\(s\) still train.*close_all"):
        b.start()
    assert a.wait(timeout=120) == b.wait(timeout=120) == "finished"
    assert a.step == b.step == N_STEPS
    assert not np.array_equal(a.history.loss, b.history.loss)


WRITER = """
import sys, numpy as np
from nca_widgets import checkpoint
run_dir = sys.argv[1]
for step in range(1, 10_000):
    arrays = {"big": np.full(8_000_000, step, np.float32)}
    checkpoint.save(run_dir, step, arrays, {"step_copy": step}, keep=2)
    print(step, flush=True)
"""


def test_a_writer_killed_mid_checkpoint_leaves_the_previous_one_loadable(tmp_path):
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                                stdout=subprocess.PIPE, text=True)
        for _ in range(2 + attempt):  # let some checkpoints complete
            proc.stdout.readline()
        time.sleep(0.013 * (attempt + 1))  # then kill at some point inside a write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        arrays, meta = checkpoint.load(tmp_path)
        assert meta["step_copy"] == meta["step"]
        np.testing.assert_array_equal(arrays["big"], np.full(8_000_000, meta["step"], np.float32))
        for ckpt in checkpoint.checkpoints(tmp_path):
            assert (ckpt / "meta.json").exists() and (ckpt / "arrays.npz").exists()


def test_a_resave_cut_off_between_its_renames_loses_nothing(tmp_path):
    def save(step, value):
        return checkpoint.save(tmp_path, step, {"x": np.full(3, value)}, {"value": value})

    save(1, 1.0)
    first = save(2, 2.0)
    first.rename(first.with_name(".tmp-old-" + first.name))  # as if killed mid-swap
    arrays, meta = checkpoint.load(tmp_path)  # the newest is still step 2
    assert (meta["step"], meta["value"]) == (2, 2.0)
    save(3, 3.0)  # the next save puts the cut-off one back before rotating
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == \
        ["ckpt-00000001", "ckpt-00000002", "ckpt-00000003"]
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["ckpt-00000001", "ckpt-00000002", "ckpt-00000003"]
    with pytest.raises(ValueError, match="at least 1"):
        checkpoint.save(tmp_path, 4, {}, {}, keep=0)


def test_bad_checkpoint_paths_get_clear_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint in"):
        LiveTrainer.restore(tmp_path)
    bad = tmp_path / "ckpt-00000001"
    bad.mkdir()
    (bad / "meta.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(checkpoint.CheckpointError, match="arrays.npz is missing"):
        LiveTrainer.restore(bad)


def test_control_methods_are_safe_from_many_threads(tiny_digits):
    trainer = tiny(digits=tiny_digits["rrcnn"], system="rrcnn", num_train_steps=200)
    trainer.start()

    def hammer(i):
        for _ in range(20):
            trainer.pause(wait=False)
            trainer.learning_rate = 1e-3 * (1 + i)
            trainer.resume()

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert trainer.wait(timeout=120) == "finished"
    np.testing.assert_array_equal(trainer.history.step, np.arange(1, 201))


def test_evaluate_reports_baselines_and_a_depth_profile(tiny_digits):
    digits = tiny_digits["sa-nca"]
    trainer = tiny(digits=digits)
    metrics = trainer.evaluate(16)
    test, mean_digit = digits.test_images[:16], digits.train_images.mean(axis=0)
    assert metrics["black_mse"] == pytest.approx(np.mean(test**2), rel=1e-5)
    assert metrics["mean_digit_mse"] == pytest.approx(np.mean((test - mean_digit) ** 2), rel=1e-5)
    assert metrics["mean_digit_mse"] < metrics["black_mse"]
    profile = metrics["depth_mse"]
    assert len(profile) == trainer.config.spatial_dims[2]
    assert profile[0] == pytest.approx(0.0, abs=1e-6)  # depth 0 holds the digit itself
    assert profile[-1] == pytest.approx(metrics["far_side_mse"], abs=1e-6)
    assert metrics["far_side_vs_mean_digit"] == pytest.approx(
        metrics["far_side_mse"] / metrics["mean_digit_mse"], rel=1e-3)


def test_snapshots_carry_a_live_evaluation_against_its_baseline(tiny_digits):
    digits = tiny_digits["sa-nca"]
    trainer = tiny(digits=digits)
    seen = []
    trainer.subscribe(seen.append)
    trainer.advance(3, wait=True)
    deadline = time.time() + 30
    while not (seen and seen[-1].evaluation is not None and seen[-1].evaluation.step[-1] == 3):
        assert time.time() < deadline, "no evaluation of the resting state"
        time.sleep(0.02)
    track = seen[-1].evaluation
    assert track.name == "test far-side MSE" and track.baseline_name == "mean digit"
    test = digits.test_images[:32]
    assert track.baseline == pytest.approx(
        np.mean((test - digits.train_images.mean(axis=0)) ** 2), rel=1e-5)
    # The live value is what evaluate() reports for the same 32 digits.
    assert track.value[-1] == pytest.approx(trainer.evaluate(32)["far_side_mse"], rel=1e-4)
    assert np.all(np.diff(track.step) > 0) and not track.value.flags.writeable


# --- no lost work, no stalled threads (issue 12) ---------------------------------------------


def test_the_learning_rate_is_written_by_the_training_thread_only(tiny_digits):
    writers = []

    class Watched(LiveTrainer):
        def __setattr__(self, name, value):
            if name == "_lr_scale":
                writers.append(threading.current_thread().name)
            super().__setattr__(name, value)

    trainer = Watched("sa-nca", "tiny", examples=tiny_digits["sa-nca"], num_train_steps=10_000)
    trainer.start()
    trainer.learning_rate = 5e-4  # returns once applied
    assert trainer.learning_rate == pytest.approx(5e-4)
    trainer.pause()
    assert writers[1:] == ["nca-trainer"], writers  # after construction: the worker only


def test_advance_with_wait_while_running_returns_when_those_steps_are_done(tiny_digits):
    trainer = tiny(digits=tiny_digits["sa-nca"], num_train_steps=10_000)
    trainer.start()
    trainer._wait_for(lambda: trainer.step >= 2, timeout=60)
    trainer.advance(3, wait=True, timeout=60)
    # The advance replaced the run: exactly 3 steps from when the worker took it, then paused.
    assert trainer.status == "paused"
    step = trainer.step
    time.sleep(0.5)
    assert trainer.step == step


def test_a_view_that_never_worked_does_not_stop_widgets_or_spin(tiny_digits, monkeypatch):
    from nca_widgets import Dashboard

    trainer = tiny(digits=tiny_digits["sa-nca"], num_train_steps=10_000)
    attempts = []

    def broken_pool_view(*args):
        attempts.append(time.perf_counter())
        raise RuntimeError("no pool view today")

    monkeypatch.setattr(trainer._views, "pool_view", broken_pool_view)
    snapshot = trainer.snapshot()  # answered, with the reason, instead of raising
    assert snapshot.pool is None and "no pool view today" in trainer.message
    dash = Dashboard(trainer)  # builds
    trainer.start()
    trainer._wait_for(lambda: trainer.step >= 3, timeout=120)  # training goes on
    time.sleep(2)
    trainer.pause()
    gaps = np.diff(attempts)
    assert (gaps >= 0.4).all(), gaps  # tried every 0.5 s at most, not 1 ms apart
    assert dash.controls.status_bar is not None


def test_building_a_widget_does_not_wait_for_a_slow_step(tiny_digits):
    from nca_widgets import Dashboard

    trainer = tiny(digits=tiny_digits["sa-nca"], num_train_steps=10_000)
    trainer.snapshot()  # pictures computed once
    real_step = trainer._train_step

    def slow_step(*args):
        time.sleep(1.5)
        return real_step(*args)

    trainer._train_step = slow_step
    trainer.start()
    time.sleep(0.3)  # the worker is inside a slow step now
    started = time.perf_counter()
    Dashboard(trainer)
    assert time.perf_counter() - started < 1.0


def test_a_new_dashboard_replaces_the_old_one_without_adding_subscribers(tiny_digits):
    from nca_widgets import Dashboard

    trainer = tiny(digits=tiny_digits["sa-nca"])
    first = Dashboard(trainer)
    per_dashboard = len(trainer._publisher._subscribers)
    for _ in range(3):  # re-running the cell
        Dashboard(trainer)
    assert len(trainer._publisher._subscribers) == per_dashboard
    assert first.comm is None  # the replaced dashboard is closed


def test_a_damaged_newest_checkpoint_is_named_and_the_newest_readable_one_is_used(
    tiny_digits, tmp_path
):
    trainer = tiny(digits=tiny_digits["sa-nca"], run_dir=tmp_path)
    trainer.advance(2, wait=True)
    trainer.save()
    trainer.advance(2, wait=True)
    newest = trainer.save()
    trainer.close()
    arrays = newest / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 2])  # truncated
    with pytest.raises(checkpoint.CheckpointError, match=r"ckpt-00000004/arrays.npz is damaged"):
        LiveTrainer.restore(newest, examples=tiny_digits["sa-nca"])
    with pytest.warns(NCAWidgetsWarning, match=r"ckpt-00000004/arrays.npz is damaged.*"
                                               r"newest readable one instead, .*ckpt-00000002"):
        restored = LiveTrainer.restore(tmp_path, examples=tiny_digits["sa-nca"])
    assert restored.step == 2
    arrays.write_bytes(b"")  # empty
    (tmp_path / "ckpt-00000002" / "arrays.npz").write_bytes(b"PK")
    with pytest.raises(checkpoint.CheckpointError, match="no readable checkpoint in"):
        LiveTrainer.restore(tmp_path, examples=tiny_digits["sa-nca"])


def test_a_new_run_never_takes_over_the_directory_of_another(tiny_digits, tmp_path):
    old = tiny(digits=tiny_digits["sa-nca"], run_dir=tmp_path)
    old.advance(5, wait=True)
    kept = old.save()
    old.close()
    with pytest.raises(checkpoint.CheckpointError, match=r"holds another run \(checkpoints up to "
                                                         r"ckpt-00000005\); continue it with"):
        tiny(digits=tiny_digits["sa-nca"], run_dir=tmp_path)
    other = tiny(digits=tiny_digits["sa-nca"])
    other.advance(2, wait=True)
    with pytest.raises(checkpoint.CheckpointError, match="holds another run"):
        other.save(tmp_path)  # the Save button's path: refused, nothing deleted
    assert checkpoint.checkpoints(tmp_path) == [kept]
    resumed = LiveTrainer.restore(tmp_path, examples=tiny_digits["sa-nca"], run_dir=tmp_path)
    resumed.advance(1, wait=True)
    assert resumed.save().name == "ckpt-00000006"  # the same run goes on in its directory
    fresh = checkpoint.new_run_dir(tmp_path, "again")
    assert fresh.name.startswith("again-") and not fresh.exists()
    tiny(digits=tiny_digits["sa-nca"], run_dir=fresh).save()


def test_saving_neither_blocks_the_caller_nor_stops_training(tiny_digits, tmp_path, monkeypatch):
    import nca_widgets.trainer as trainer_module

    real_save = checkpoint.save

    def slow_disk(*args, **kwargs):
        time.sleep(2.0)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(trainer_module.checkpoint, "save", slow_disk)
    trainer = tiny(digits=tiny_digits["sa-nca"], num_train_steps=100_000, run_dir=tmp_path)
    trainer.start()
    trainer._wait_for(lambda: trainer.step >= 3, timeout=60)
    started = time.perf_counter()
    written = trainer.save(wait=False)
    assert time.perf_counter() - started < 0.5, "save(wait=False) returned at once"
    step = trainer.step
    path = written.result(timeout=60)
    assert trainer.step > step + 1, "training went on while the checkpoint was written"
    trainer.pause()
    saved_step = checkpoint.load(path)[1]["step"]
    assert saved_step >= step and path.name == f"ckpt-{saved_step:08d}"


def test_kill_9_while_the_cli_writes_checkpoints_leaves_only_complete_ones(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nca_widgets", "train", "sa-nca", "--preset", "tiny", "--set",
         "num_train_steps=100000", "--checkpoint-every", "2", "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(checkpoint.checkpoints(run_dir)) < 3:
            assert time.time() < deadline and proc.poll() is None, "no checkpoints written"
            time.sleep(0.05)
        time.sleep(0.37)  # somewhere inside the next writes
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    found = checkpoint.checkpoints(run_dir)
    assert len(found) >= 1 and all(p.name.startswith("ckpt-") for p in found)
    for path in found:
        arrays, meta = checkpoint.load(path)
        assert arrays["history/step"][-1] == meta["step"]


def wait_for_probe(seen: list, done, timeout: float = 30):
    deadline = time.time() + timeout
    while not (seen and seen[-1].probe is not None and done(seen[-1].probe)):
        assert time.time() < deadline, "no such probe arrived"
        time.sleep(0.02)
    return seen[-1].probe


def test_brush_edits_roll_the_probe_out_again_from_the_edited_state(tiny_digits):
    trainer = tiny(digits=tiny_digits["sa-nca"])
    untouched = trainer.snapshot().probe
    seen = []
    trainer.subscribe(seen.append)
    trainer.edit(np.zeros((12, 12), bool), "erase", time=3, depth=0)  # an empty edit
    probe = wait_for_probe(seen, lambda p: p.edit_time == 3)
    np.testing.assert_array_equal(probe.volume, untouched.volume)  # the same keys, so the same
    np.testing.assert_array_equal(probe.recovery[0], probe.recovery[1])

    mask = np.zeros((12, 12), bool)
    mask[4:8, :] = True
    trainer.edit(mask, "erase", time=5, depth=0)  # another time: starts afresh
    probe = wait_for_probe(seen, lambda p: p.edit_time == 5)
    np.testing.assert_array_equal(probe.volume[:5], untouched.volume[:5])  # before the edit
    assert untouched.volume[5, 0][mask].max() > 0 and probe.volume[5, 0][mask].max() == 0
    np.testing.assert_array_equal(probe.volume[5, 0][~mask], untouched.volume[5, 0][~mask])
    assert probe.recovery.shape == (2, untouched.volume.shape[0])
    # sa-nca's target after an edit is what its input slice holds now: the erased digit
    np.testing.assert_array_equal(probe.digit[mask], 0)

    trainer.clear_edits()
    probe = wait_for_probe(seen, lambda p: p.edit_time == -1)
    np.testing.assert_array_equal(probe.volume, untouched.volume)
    for bad, message in (((mask, "paint", 1, 0), "mode must be"),
                         ((mask[:5], "erase", 1, 0), "a stroke mask must be"),
                         ((mask, "erase", 99, 0), "time must be"),
                         ((mask, "erase", 1, None), "depth must be")):
        with pytest.raises(ValueError, match=message):
            trainer.edit(*bad)


def test_an_edit_put_into_the_pool_trains_deterministically(tiny_digits):
    def run(inject: bool) -> dict[str, np.ndarray]:
        trainer = tiny(digits=tiny_digits["sa-nca"])
        trainer.advance(3, wait=True)
        mask = np.zeros((12, 12), bool)
        mask[:, 2:5] = True
        trainer.edit(mask, "noise", time=2, depth=3)
        if inject:
            assert trainer.inject(4) == 3  # applied at the step boundary it reached
        trainer.advance(4, wait=True)
        arrays = checkpoint_arrays(trainer)
        trainer.close()
        return arrays

    first, second, without = run(True), run(True), run(False)
    assert_same_run(first, second)
    pool = [k for k in first if "pool" in k and "state" in k][0]
    assert not np.array_equal(first[pool], without[pool])
    rr = tiny("rrcnn", digits=tiny_digits["rrcnn"])
    rr.edit(np.ones((12, 12), bool), "erase", time=1)
    with pytest.raises(ValueError, match="no pool"):
        rr.inject()


def checkpoint_arrays(trainer: LiveTrainer) -> dict[str, np.ndarray]:
    """The trainer's state and history as a checkpoint holds them."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        trainer.save(Path(folder) / "run")
        return saved_arrays(Path(folder) / "run")


def test_shipped_pretrained_parameters_start_a_working_automaton():
    from nca_widgets import pretrained

    for name in ("sa-nca", "rrcnn", "growing"):
        assert pretrained.available(name) == ["cpu"], name
        assert pretrained.path_for(name, "cpu").stat().st_size < 100_000, "tens of KB"
    grown = LiveTrainer("growing", "cpu", init="pretrained", num_train_steps=10)
    fresh = LiveTrainer("growing", "cpu", num_train_steps=10)
    trained, untrained = grown.evaluate(8), fresh.evaluate(8)
    assert trained["grown_mse"] < 0.25 * trained["empty_mse"] < untrained["grown_mse"]
    assert grown.learning_rate == pytest.approx(
        grown.config.learning_rate * grown.config.lr_end_factor)  # gently, from the end
    with pytest.raises(ValueError, match="there are for: cpu"):
        LiveTrainer("growing", "tiny", init="pretrained")
    with pytest.raises(ValueError, match="differs in hidden_size"):
        LiveTrainer("growing", "cpu", init="pretrained", hidden_size=8)
    with pytest.raises(ValueError, match="init must be"):
        LiveTrainer("growing", "cpu", init="trained")
