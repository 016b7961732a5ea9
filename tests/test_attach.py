"""Attaching to a run through its run dir: snapshots out, controls in, nothing when unwatched."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from nca_widgets import Dashboard, attach, checkpoint
from nca_widgets.attach import serve
from nca_widgets.trainer import LiveTrainer


def until(done, timeout: float = 60.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_dashboard_attached_through_the_run_dir_drives_the_run(tiny_digits, tmp_path):
    run_dir = tmp_path / "run"
    trainer = LiveTrainer("sa-nca", "tiny", seed=0, examples=tiny_digits["sa-nca"],
                          num_train_steps=100_000, run_dir=run_dir)
    server = serve(trainer, run_dir)
    trainer.start()
    try:
        time.sleep(1.0)
        assert not server.watched and not trainer._publisher.active  # nobody watches: no views
        run = attach(run_dir)
        dash = Dashboard(run)
        until(lambda: run.step > 5 and dash.loss_plot.step > 5, what="the loss to advance")
        dash.controls.run_button.click()  # Pause
        until(lambda: trainer.status == "paused", what="the run to pause")
        step = trainer.step
        until(lambda: run.status == "paused" and run.step == step, what="the paused snapshot")
        time.sleep(1.0)
        assert trainer.step == step
        dash.controls.stepper.click(3)
        until(lambda: trainer.step == step + 3 and trainer.status == "paused", what="3 steps")
        dash.controls.lr_text.value = "2.5e-4"
        until(lambda: trainer.learning_rate == pytest.approx(2.5e-4), what="the new rate")
        saved = run.save(timeout=60)
        assert saved == checkpoint.path_for(run_dir, step + 3) and saved.exists()
        run.resume()
        until(lambda: trainer.step > step + 3, what="training to resume")
        until(lambda: run.learning_rate == pytest.approx(2.5e-4, rel=0.01), what="the rate shown")
        assert server.applied[:4] == ["pause", "advance", "set_lr", "save"]
        second = attach(run_dir)  # two notebooks may watch one run
        until(lambda: second.step > step + 3, what="the second watcher's snapshot")
        run.detach()
        second.detach()
        dash.close()
        until(lambda: not trainer._publisher.active, timeout=15, what="the run to stop publishing")
        assert trainer.status == "running"  # detaching leaves the run untouched
    finally:
        server.close()
        trainer.close()


def test_attaching_to_a_directory_without_a_live_run_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="no live run to attach to; start one with"):
        attach(tmp_path)


def test_the_cli_serves_its_run_dir_and_waits_while_an_attached_notebook_pauses(tmp_path):
    run_dir = tmp_path / "cli-run"
    cli = subprocess.Popen(
        [sys.executable, "-m", "nca_widgets", "train", "sa-nca", "--preset", "tiny", "--steps",
         "100000", "--set", "num_train_steps=100000", "--run-dir", str(run_dir),
         "--data", "bundled", "--checkpoint-every", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: (run_dir / "live").is_dir(), timeout=300, what="the CLI to start serving")
        run = attach(run_dir, timeout=120)
        until(lambda: run.step > 3, timeout=300, what="the CLI run to train")
        run.pause()
        until(lambda: run.status == "paused", what="the CLI run to pause")
        rows = len((run_dir / "metrics.jsonl").read_text().splitlines())
        time.sleep(1.5)
        assert cli.poll() is None, "the CLI waits while paused"
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == rows
        run.learning_rate = 1e-4
        run.advance(2)
        until(lambda: run.step == rows + 2, what="2 more steps")
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["lr"] == pytest.approx(1e-4, rel=0.05)  # the run's metrics show the new rate
        run.stop()
        out, err = cli.communicate(timeout=120)
        assert cli.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["steps"] == rows + 2
        run.detach()
    finally:
        if cli.poll() is None:
            cli.kill()
