"""The `nca-widgets` command line contract: JSON on stdout, one clear line on errors."""

from __future__ import annotations

import json
import subprocess
import sys

import mediapy
import pytest

from nca_widgets import load_digits
from nca_widgets.export import ffmpeg_path


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "nca_widgets", *args], capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def last_json(proc) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_info_reports_the_seed_parameter_counts():
    sa = last_json(cli("info", "sa-nca", "--preset", "seed"))
    rr = last_json(cli("info", "rrcnn", "--preset", "seed"))
    assert (sa["num_params"], sa["num_trainable_params"]) == (22_480, 22_480)
    assert (rr["num_params"], rr["num_trainable_params"]) == (69_952, 33_088)
    assert sa["config"]["spatial_dims"] == [28, 28, 42] and sa["preset"] == "seed"
    small = last_json(cli("info", "sa-nca", "--preset", "seed", "--set", "spatial_dims=28,28,10",
                          "--set", "hidden_size=128"))
    assert small["config"]["spatial_dims"] == [28, 28, 10]
    assert small["num_params"] == 1728 + (64 * 128 + 128) + (128 * 16 + 16)


def test_train_writes_metrics_and_checkpoints_then_eval_reads_them(tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("train", "rrcnn", "--preset", "tiny", "--steps", "12", "--run-dir", str(run_dir),
               "--data", "bundled")
    result = last_json(proc)
    assert result["steps"] == 12 and result["run_dir"] == str(run_dir)
    assert result["final_loss"] > 0 and result["steps_per_s"] > 0
    assert "bundled MNIST subset" in proc.stderr and "step" in proc.stderr  # source, progress
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert {"step", "loss", "lr", "wall_s"} <= rows[0].keys()
    assert (run_dir / "ckpt-00000012" / "meta.json").exists()
    metrics = last_json(cli("eval", "rrcnn", "--run-dir", str(run_dir), "--num-test-digits", "16"))
    assert metrics["step"] == 12 and metrics["num_test_digits"] == 16
    for level in (0.25, 0.5, 0.75):
        assert 0 < metrics[f"psnr_noisy@{level}"] < 60
        assert metrics[f"psnr_output@{level}"] > 0

    exported = last_json(cli("export", "rrcnn", "--run-dir", str(run_dir), "--index", "3",
                             "--level", "0.75", "--scale", "2"))
    assert exported["path"] == str(run_dir / "rollout-3.gif") and exported["step"] == 12
    mediapy.set_ffmpeg(ffmpeg_path())
    video = mediapy.read_video(exported["path"])
    h, w = 12, 12  # the tiny preset's digits
    assert video.shape[:3] == (exported["frames"], 2 * h, 2 * (3 * w + 2))
    # noisy input | estimate | target: the target panel is the clean test digit 3
    target = video[0, ::2, 2 * (2 * w + 2)::2, 0].astype(float) / 255
    digit = load_digits("bundled", size=(h, w)).test_images[3]
    assert abs(target - digit).max() < 0.05
    for bad, message in ((["--out", "x.png"], "--out must end in .gif or .mp4"),
                         (["--depth", "1"], "--depth is for volume systems")):
        proc = cli("export", "rrcnn", "--run-dir", str(run_dir), *bad, check=False)
        assert proc.returncode == 2 and message in proc.stderr


def test_every_command_says_what_it_does():
    for command in ("info", "train", "eval", "export", "bench", "lab"):
        usage = cli(command, "--help").stdout
        assert len(usage.split("\n\n")[1].strip()) > 20, f"{command} --help has no description"


def test_bench_prints_timings():
    result = last_json(cli("bench", "sa-nca", "--preset", "tiny", "--steps", "2"))
    import jax

    assert result["backend"] == jax.default_backend() and result["device"]
    assert result["compile_s"] > result["step_s_median"] > 0
    assert result["steps_per_s"] == pytest.approx(1 / result["step_s_median"], rel=1e-2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "sa-nca", "--set", "batch_size=2000"], "batch_size must be at most pool_size"),
        (["info", "rrcnn", "--set", "pool_size=3"], "unknown config key 'pool_size'"),
        (["info", "sa-nca", "--set", "hidden_size=-1"], "hidden_size must be an integer >= 1"),
        (["info", "sa-nca", "--set", "spatial_dims=28,28"], "spatial_dims must be 3 positive"),
        (["info", "sa-nca", "--set", "num_steps"], "--set takes KEY=VALUE"),
        (["info", "sa-nca", "--set", "learning_rate=fast"], "learning_rate must be float"),
        (["eval", "sa-nca", "--run-dir", "/nonexistent"], "no checkpoint in /nonexistent"),
        (["train", "sa-nca", "--preset", "tiny", "--steps", "0"], "--steps must be a positive"),
    ],
)
def test_errors_are_one_clear_line(args, message):
    proc = cli(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_json_output_is_strict_with_nan_as_null():
    from nca_widgets.cli import _json_safe

    out = json.dumps(_json_safe({"final_loss": float("nan"), "psnr": [float("inf"), 1.5]}))
    assert out == '{"final_loss": null, "psnr": [null, 1.5]}'
