"""Widgets without a browser: traits and recorded comm messages, driven by a fake trainer."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import comm
import ipywidgets
import numpy as np
import pytest

from nca_widgets.export import VIDEO_SUFFIXES, loss_figure, save_video
from nca_widgets.numbers import axis_labels, format_number
from nca_widgets.snapshot import EvalTrack, frozen
from nca_widgets.widgets import (
    Controls,
    Dashboard,
    FrameScrubber,
    LossPlot,
    PoolView,
    VolumeScrubber,
    decimate_minmax,
)
from nca_widgets.widgets._arrays import auto_range, diverging_lut, to_uint8, zero_u8
from nca_widgets.widgets._static import STATIC
from nca_widgets.widgets.decimate import minmax_indices
from nca_widgets.widgets.status_bar import format_duration, progress_texts
from nca_widgets.widgets.step_control import StepControl
from tests.fakes import (
    FakeTrainer,
    RecordingComm,
    front_end_custom,
    front_end_update,
    make_frame_probe,
    make_history,
    make_pool,
    make_snapshot,
    make_volume_probe,
)


@pytest.fixture(autouse=True)
def recording(monkeypatch):
    """Every widget made in a test gets a RecordingComm; all are closed afterwards."""
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    yield
    ipywidgets.Widget.close_all()


def sent(widget) -> RecordingComm:
    return widget.comm


# --- decimation ------------------------------------------------------------------------------


def test_decimate_100k_points_keeps_extremes_within_two_per_column():
    rng = np.random.default_rng(0)
    steps = np.arange(1, 100_001)
    values = rng.standard_normal(100_000)
    values[12_345], values[67_890] = -50.0, 60.0
    xs, ys = decimate_minmax(steps, values, 800)
    assert len(xs) <= 2 * 800
    assert len(xs) > 800  # really min and max per column, not one point
    assert ys.min() == -50.0 and ys.max() == 60.0
    assert 12_346 in xs and 67_891 in xs  # at the right steps
    assert np.all(np.diff(xs) > 0)
    small_x, small_y = decimate_minmax(steps[:1000], values[:1000], 800)  # short: unchanged
    np.testing.assert_array_equal(small_x, steps[:1000])


def test_decimate_same_count_for_long_and_short_runs_and_keeps_nan_markers():
    long = minmax_indices(np.arange(100_000), np.sin(np.arange(100_000) / 7.0), 500)
    short = minmax_indices(np.arange(5_000), np.sin(np.arange(5_000) / 7.0), 500)
    assert len(long) <= 1000 and len(short) <= 1000
    values = np.ones(10_000)
    values[4_321] = np.nan
    xs, ys = decimate_minmax(np.arange(10_000), values, 100)
    assert np.isnan(ys).sum() == 1 and xs[np.isnan(ys)][0] == 4_321


def test_decimate_order_of_input_does_not_matter():
    rng = np.random.default_rng(1)
    steps, values = np.arange(20_000), rng.standard_normal(20_000)
    perm = rng.permutation(20_000)
    a = minmax_indices(steps, values, 300)
    b = perm[minmax_indices(steps[perm], values[perm], 300)]
    np.testing.assert_array_equal(np.sort(b), a)


# --- LossPlot --------------------------------------------------------------------------------


def decode_chunk(state):
    return (np.frombuffer(state["_chunk_step"], "<i4"), np.frombuffer(state["_chunk_loss"], "<f4"),
            np.frombuffer(state["_chunk_lr"], "<f4"))


def test_loss_plot_sends_only_new_points_in_one_message_per_snapshot():
    trainer = FakeTrainer(snapshot=make_snapshot(step=10))
    plot = LossPlot(trainer)
    assert plot._chunk_seq == 0  # the first history is fetched by the view, not pushed
    sent(plot).clear()
    trainer.publish(make_snapshot(step=15))
    updates = sent(plot).updates()
    assert len(updates) == 1  # step, chunk and sequence number: one message
    steps, loss, lr = decode_chunk(updates[0])
    np.testing.assert_array_equal(steps, [11, 12, 13, 14, 15])
    np.testing.assert_array_equal(loss, make_history(15).loss[10:])
    assert updates[0]["_chunk_seq"] == 1 and updates[0]["step"] == 15
    sent(plot).clear()
    trainer.publish(make_snapshot(step=17))
    steps, _, _ = decode_chunk(sent(plot).updates()[0])
    np.testing.assert_array_equal(steps, [16, 17])
    assert plot._chunk_seq == 2
    sent(plot).clear()
    trainer.publish(trainer.snapshot())  # same history object: nothing travels
    assert sent(plot).sent == []


def test_loss_plot_sends_the_live_evaluation_and_its_baseline_once_per_change():
    track = EvalTrack(name="test far-side MSE", step=frozen(np.array([5, 10], np.int64)),
                      value=frozen(np.array([0.09, 0.04], np.float32)), baseline=0.05,
                      baseline_name="mean digit")
    trainer = FakeTrainer(snapshot=make_snapshot(step=10))
    plot = LossPlot(trainer)
    assert plot.eval_name == ""  # none yet: the view draws no series and no baseline
    sent(plot).clear()
    trainer.publish(make_snapshot(step=12, evaluation=track))
    update = sent(plot).updates()[0]
    np.testing.assert_array_equal(np.frombuffer(update["_eval_step"], "<i4"), [5, 10])
    np.testing.assert_array_equal(np.frombuffer(update["_eval_value"], "<f4"), track.value)
    assert (update["eval_name"], update["eval_baseline"], update["eval_baseline_name"]) == \
        ("test far-side MSE", 0.05, "mean digit")
    sent(plot).clear()
    trainer.publish(make_snapshot(step=13, evaluation=track))  # same track: not sent again
    assert "_eval_value" not in sent(plot).updates()[0]


def test_loss_plot_full_history_reply_is_decimated_and_ordered_after_chunks():
    long = make_snapshot(step=20_000)
    trainer = FakeTrainer(snapshot=long)
    plot = LossPlot(trainer)
    trainer.publish(make_snapshot(step=20_003))
    sent(plot).clear()
    front_end_custom(plot, {"type": "history", "columns": 500})
    (content, buffers), = sent(plot).customs()
    steps = np.frombuffer(buffers[0], "<i4")
    loss = np.frombuffer(buffers[1], "<f4")
    assert content["seq"] == 1 and content["total"] == 20_003 and content["n"] == len(steps)
    assert len(steps) <= 2 * 500
    full = make_history(20_003).loss
    assert loss.min() == full.min() and loss.max() == full.max()
    assert steps[-1] == 20_003
    front_end_custom(plot, {"type": "history", "columns": "junk"})  # bad input: a default
    assert len(sent(plot).customs()) == 2


def test_loss_plot_nan_losses_travel_as_nan_and_restart_bumps_epoch():
    trainer = FakeTrainer(snapshot=make_snapshot(step=3))
    plot = LossPlot(trainer)
    history = make_history(6, nan_at=(5,))
    trainer.publish(make_snapshot(step=6, history=history))
    _, loss, _ = decode_chunk(sent(plot).updates()[-1])
    assert np.isnan(loss[1]) and np.isfinite(loss[0])
    epoch = plot._epoch
    trainer.publish(make_snapshot(step=2))  # a restored, shorter run
    assert plot._epoch == epoch + 1
    steps, _, _ = plot.sent_history()
    np.testing.assert_array_equal(steps, [1, 2])


def test_loss_plot_front_end_smoothing_is_clamped_and_figure_has_the_curve():
    trainer = FakeTrainer(snapshot=make_snapshot(step=30))
    plot = LossPlot(trainer)
    front_end_update(plot, smoothing=5.0)
    assert plot.smoothing == 0.999
    fig = plot.figure()
    raw = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(raw.get_ydata(), make_history(30).loss)
    np.testing.assert_array_equal(raw.get_xdata(), np.arange(1, 31))
    assert fig.axes[0].get_yscale() == "log"
    lr_line = fig.axes[1].get_lines()[0]
    np.testing.assert_allclose(lr_line.get_ydata(), 1e-3)


# --- PoolView --------------------------------------------------------------------------------


def test_pool_view_sorts_by_loss_and_resends_only_a_new_pool():
    trainer = FakeTrainer(snapshot=make_snapshot(step=5))
    view = PoolView(trainer)
    pool = trainer.snapshot().pool
    order = np.argsort(-pool.losses)
    assert view._shape == [4, 6, 5]
    assert len(view._targets) == 4 * 6 * 5
    np.testing.assert_array_equal(np.frombuffer(view._losses, "<f4"), pool.losses[order])
    assert view.digit_indices == [int(i) for i in pool.digit_indices[order]]
    np.testing.assert_array_equal(
        np.frombuffer(view._renders, np.uint8).reshape(4, 6, 5), pool.renders[order])
    sent(view).clear()
    trainer.publish(step=6)  # same pool object
    assert [set(u) for u in sent(view).updates()] == [{"step"}]
    trainer.publish(step=7, pool=make_pool(seed=3))
    (update,) = sent(view).updates()[1:]
    assert {"_targets", "_renders", "pool_step", "step"} <= set(update)  # equal losses stay


def test_pool_view_nan_loss_sorts_first():
    trainer = FakeTrainer(snapshot=make_snapshot(step=1))
    pool = make_pool()
    losses = np.array(pool.losses)
    losses[2] = np.nan
    trainer.publish(step=2, pool=dataclasses.replace(pool, losses=frozen(losses)))
    view = PoolView(trainer)
    assert np.isnan(np.frombuffer(view._losses, "<f4")[0])
    assert view.digit_indices[0] == 102


def test_pool_view_click_sets_probe_and_bad_clicks_are_ignored():
    trainer = FakeTrainer("rrcnn", snapshot=make_snapshot("rrcnn", step=5))
    view = PoolView(trainer)
    front_end_custom(view, {"type": "select", "digit_index": 101, "split": "test"})
    assert trainer.calls[-1] == ("set_probe", {"index": 101, "split": "test", "channel": None})
    n = len(trainer.calls)
    for bad in ({"digit_index": -1}, {"digit_index": "x"}, {"digit_index": 3, "split": "dev"},
                {"digit_index": True}):
        front_end_custom(view, {"type": "select", **bad})
    assert len(trainer.calls) == n
    trainer.fail["set_probe"] = ValueError("probe index must be in [0, 10)")
    assert not view.select(500)
    assert "probe index" in view.error


def test_pool_view_tiles_carry_inputs_and_levels_and_a_click_probes_at_its_level():
    pool = make_pool(step=4)
    levels = np.array([0.1, 0.4, 0.7, 0.9], np.float32)
    inputs = np.arange(4 * 6 * 5, dtype=np.uint8).reshape(4, 6, 5)
    pool = dataclasses.replace(pool, inputs=frozen(inputs), levels=frozen(levels),
                               level_name="noise level")
    trainer = FakeTrainer("rrcnn", snapshot=make_snapshot("rrcnn", step=7, pool=pool))
    view = PoolView(trainer)
    order = np.argsort(-pool.losses)
    assert view.pool_step == 4  # the step the pool shows, not the snapshot's
    assert view.levels == pytest.approx(levels[order].tolist())
    assert view.level_name == "noise level"
    np.testing.assert_array_equal(np.frombuffer(view._inputs, np.uint8).reshape(4, 6, 5),
                                  inputs[order])
    front_end_custom(view, {"type": "select", "digit_index": 101, "split": "test", "level": 0.4})
    assert trainer.calls[-1] == ("set_probe", {"index": 101, "split": "test", "channel": None,
                                               "level": 0.4})


# --- VolumeScrubber --------------------------------------------------------------------------


def test_volume_scrubber_traits_after_snapshot():
    trainer = FakeTrainer(snapshot=make_snapshot(step=4))
    vs = VolumeScrubber(trainer)
    t_, d, h, w = trainer.snapshot().probe.volume.shape
    assert vs._shape == [t_, d, h, w]
    assert len(vs._volume) == t_ * d * h * w
    assert vs._volume == trainer.snapshot().probe.volume.tobytes()
    assert (vs.time, vs.depth, vs.channel, vs.num_channels) == (t_ - 1, d - 1, 2, 3)
    lut = np.frombuffer(vs._lut, np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(lut[:, 0], np.arange(256))  # channel 2 of 3 is the digit: grey
    assert vs.step == 4 and vs.value_range == [0.0, 1.0]


def test_volume_scrubber_names_depths_and_opens_where_something_shows():
    volume = np.zeros((3, 4, 6, 5), np.uint8)
    volume[:, 0, 2, 2] = 255  # only the input slice shows anything (early in a run)
    probe = dataclasses.replace(make_volume_probe(), volume=frozen(volume.copy()),
                                depth_labels=("input", "", "bottleneck", "far side"))
    vs = VolumeScrubber(FakeTrainer(snapshot=make_snapshot(step=4, probe=probe)))
    assert (vs.time, vs.depth) == (2, 0) and vs.depth_labels == list(probe.depth_labels)
    volume[:, 3, 1, 1] = 200  # the far side shows something: open there
    assert VolumeScrubber(volume[..., None]).depth == 3
    assert VolumeScrubber(volume[..., None], depth=1).depth == 1  # the caller's choice wins


def test_volume_scrubber_groups_a_snapshot_into_one_message_and_skips_unchanged_volumes():
    trainer = FakeTrainer(snapshot=make_snapshot(step=4))
    vs = VolumeScrubber(trainer)
    sent(vs).clear()
    trainer.publish(step=5)  # same probe: only the step travels
    assert sent(vs).updates() == [{"step": 5}]
    trainer.publish(step=6, probe=make_volume_probe(step=6, seed=9))
    updates = sent(vs).updates()[1:]
    assert len(updates) == 1
    assert {"_volume", "probe_step", "step"} <= set(updates[0])
    assert updates[0]["_volume"] == trainer.snapshot().probe.volume.tobytes()


def test_volume_scrubber_clamps_front_end_indices():
    trainer = FakeTrainer(snapshot=make_snapshot(step=4))
    vs = VolumeScrubber(trainer)
    front_end_update(vs, time=-5, depth=10**6)
    assert (vs.time, vs.depth) == (0, 3)
    front_end_update(vs, time=10**6, depth=-5, fps=0)
    assert (vs.time, vs.depth, vs.fps) == (6, 0, 1)
    front_end_update(vs, time="nonsense", channel=99)
    assert vs.time == 6 and vs.channel == 2
    vs.time, vs.depth = -5, 10**6  # from Python too
    assert (vs.time, vs.depth) == (0, 3)
    assert sent(vs).updates()[-1] == {"depth": 3}  # the clamped value goes back to the view


def test_volume_scrubber_channel_change_fetches_from_trainer():
    trainer = FakeTrainer(snapshot=make_snapshot(step=4))
    vs = VolumeScrubber(trainer)
    front_end_update(vs, channel=0)
    assert trainer.calls[-1] == ("set_probe", {"index": None, "split": None, "channel": 0})
    assert vs.loading and vs._volume_channel == 2
    probe = make_volume_probe(channel=0, step=5)
    trainer.publish(step=5, probe=probe)
    assert not vs.loading and vs._volume_channel == 0
    assert vs._volume == probe.volume.tobytes()
    lut = np.frombuffer(vs._lut, np.uint8).reshape(256, 3)
    assert tuple(lut[zero_u8((-1.0, 1.0))]) == (247, 247, 247)  # hidden channel: diverging
    assert lut[0, 2] > lut[0, 0] and lut[255, 0] > lut[255, 2]  # blue below, red above
    calls = len(trainer.calls)
    trainer.publish(step=6, probe=make_volume_probe(channel=1, step=6))  # someone else's choice
    assert vs.channel == 1 and len(trainer.calls) == calls  # followed, no new request


def test_volume_scrubber_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"\(T, D, H, W\).*got shape \(28, 28\)"):
        VolumeScrubber(np.zeros((28, 28)))
    with pytest.raises(ValueError, match="channel 5 is out of range.*3 channels"):
        VolumeScrubber(np.zeros((2, 3, 4, 5, 3)), channel=5)
    with pytest.raises(ValueError, match="channel 9 is out of range"):
        VolumeScrubber(FakeTrainer(), channel=9)
    with pytest.raises(ValueError, match="frame pictures .use FrameScrubber"):
        VolumeScrubber(FakeTrainer("rrcnn"))
    with pytest.raises(ValueError, match="numeric"):
        VolumeScrubber(np.array([["a"]], dtype=object))
    vs = VolumeScrubber(np.zeros((2, 3, 4, 5, 3)))
    with pytest.raises(ValueError, match="out of range"):
        vs.channel = 3


def test_volume_scrubber_plain_array_channel_change_sends_that_channel():
    rng = np.random.default_rng(0)
    volume = rng.standard_normal((5, 4, 6, 7, 3)).astype(np.float32)
    vs = VolumeScrubber(volume)
    assert vs._shape == [5, 4, 6, 7] and vs.channel == 2
    before = vs._volume
    vs.channel = 0
    assert vs._volume != before
    lo, hi = auto_range(volume[..., 0])
    assert lo == -hi  # both signs: symmetric range
    expected = to_uint8(volume[..., 0], (lo, hi))
    assert vs._volume == expected.tobytes() and vs.value_range == [lo, hi]
    sent(vs).clear()
    front_end_update(vs, channel=1)
    (update,) = sent(vs).updates()
    assert update["_volume"] == to_uint8(volume[..., 1], auto_range(volume[..., 1])).tobytes()


def test_volume_scrubber_uint8_4d_array_is_kept_as_is():
    volume = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    vs = VolumeScrubber(volume, time=0, depth=1)
    assert vs._volume == volume.tobytes() and vs.num_channels == 1
    assert (vs.time, vs.depth) == (0, 1)


def test_diverging_map_is_white_at_zero():
    lut = diverging_lut(100)
    assert tuple(lut[100]) == (247, 247, 247)
    assert tuple(lut[0]) == (33, 102, 172) and tuple(lut[255]) == (178, 24, 43)


# --- FrameScrubber ---------------------------------------------------------------------------


def test_frame_scrubber_from_trainer():
    trainer = FakeTrainer("rrcnn", snapshot=make_snapshot("rrcnn", step=8))
    fs = FrameScrubber(trainer)
    probe = trainer.snapshot().probe
    assert fs._shape == [7, 6, 5] and fs._frames == probe.frames.tobytes()
    assert fs._input == probe.input.tobytes() and fs._target == probe.target.tobytes()
    np.testing.assert_array_equal(np.frombuffer(fs._psnr, "<f4"), probe.psnr)
    assert fs.time == 6 and fs.note == "noise level 0.50" and fs.step == 8
    assert fs.labels == ["noisy input", "estimate", "target"]  # the system's captions
    front_end_update(fs, time=-3)
    assert fs.time == 0
    sent(fs).clear()
    trainer.publish(step=9)
    assert sent(fs).updates() == [{"step": 9}]
    trainer.publish(step=10, probe=make_frame_probe((9, 6, 5), step=10, seed=2))
    assert fs._shape == [9, 6, 5] and len(sent(fs).updates()) == 2
    with pytest.raises(ValueError, match="volume pictures .use VolumeScrubber"):
        FrameScrubber(FakeTrainer("sa-nca"))


def test_frame_scrubber_from_array_computes_psnr_and_checks_shapes():
    frames = np.linspace(0, 1, 4 * 6 * 5).reshape(4, 6, 5).astype(np.float32)
    target = frames[-1]
    fs = FrameScrubber(frames, target=target)
    psnr = np.frombuffer(fs._psnr, "<f4")
    assert psnr.shape == (4,) and np.isinf(psnr[-1]) and np.all(np.diff(psnr[:-1]) > 0)
    assert fs._input == b"" and len(fs._target) == 30
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        FrameScrubber(np.zeros((6, 5)))
    with pytest.raises(ValueError, match="target must have shape"):
        FrameScrubber(frames, target=np.zeros((3, 3)))


# --- Controls --------------------------------------------------------------------------------


def test_a_step_steps_the_count_its_click_carries():
    stepper = StepControl()
    seen = []
    stepper.on_step(seen.append)
    stepper.count = 2  # what the kernel last heard of the box
    stepper._handle_custom_msg({"event": "step", "count": 7}, [])  # a click in the page
    stepper._handle_custom_msg({"event": "step", "count": 0}, [])  # clamped, as the box does
    stepper.click()  # from code: the box's count
    stepper.disabled = True
    stepper.click(3)
    assert seen == [7, 1, 1]


def test_controls_buttons_call_the_trainer():
    trainer = FakeTrainer(snapshot=make_snapshot(step=0, status="idle"))
    controls = Controls(trainer)
    assert controls.run_button.description == "Start"
    controls.run_button.click()
    assert trainer.names() == ["start"]
    trainer.publish(step=3, status="running")
    assert controls.run_button.description == "Pause"
    assert controls.stepper.disabled and not controls.stop_button.disabled
    controls.run_button.click()
    assert trainer.calls[-1] == ("pause", {"wait": False})  # never blocks the kernel
    trainer.publish(step=3, status="paused")
    assert controls.run_button.description == "Resume"
    controls.stepper.count = 2  # what the kernel last heard of the box ...
    controls.stepper._handle_custom_msg({"event": "step", "count": 5}, [])  # ... the click's
    assert trainer.calls[-1] == ("advance", {"n": 5})
    assert controls.stepper.count == 5
    controls.run_button.click()
    assert trainer.calls[-1] == ("resume", {})
    controls.save_button.click()
    assert trainer.calls[-1][0] == "save"
    assert controls.saved_path.value == "saved /tmp/fake-run/checkpoint-000003"
    controls.stop_button.click()
    assert trainer.calls[-1] == ("stop", {})
    controls.lr_buttons[0].click()  # ÷2 of the current rate
    assert trainer.calls[-1] == ("set_learning_rate", {"value": pytest.approx(5e-4)})
    controls.lr_text.value = "3e-4"  # typed, then Enter
    assert trainer.learning_rate == pytest.approx(3e-4) and controls.lr_text.value == ""
    assert controls.lr_label.value == "learning rate 3.00e-4"


def test_controls_learning_rate_moves_by_small_factors_and_reads_as_the_views_write():
    trainer = FakeTrainer(snapshot=make_snapshot(step=0, status="idle"))
    controls = Controls(trainer)
    trainer.publish(step=10, status="running", learning_rate=4.5678e-4)
    assert controls.lr_label.value == "learning rate 4.57e-4"  # format_number, as fmtNum
    assert "set_learning_rate" not in trainer.names()  # display only: the schedule goes on
    trainer.learning_rate = 1e-3
    for button, expected in zip(controls.lr_buttons, (5e-4, 4e-4, 5e-4, 1e-3), strict=True):
        button.click()  # ÷2, ×0.8, ×1.25, ×2: never a jump of more than 2x
        assert trainer.learning_rate == pytest.approx(expected)
    n = len(trainer.calls)
    for bad in ("fast", "-1", "0", "nan"):
        controls.lr_text.value = bad
        assert "learning rate" in controls.status_bar.action_error.lower()
    assert len(trainer.calls) == n and trainer.learning_rate == pytest.approx(1e-3)


def test_pause_shows_pausing_at_once_until_the_trainer_has_paused():
    trainer = FakeTrainer(snapshot=make_snapshot(step=3, status="running"))
    trainer.pause = lambda wait=True: trainer._record("pause", wait=wait)  # asked, not done
    controls = Controls(trainer)
    controls.run_button.click()
    assert controls.run_button.description == "Pausing…" and controls.run_button.disabled
    trainer.publish(step=4, status="running")  # the step in flight ends first
    assert controls.run_button.description == "Pausing…"
    trainer.publish(step=4, status="paused")
    assert controls.run_button.description == "Resume" and not controls.run_button.disabled


def test_controls_status_progress_and_error_banner():
    trainer = FakeTrainer(snapshot=make_snapshot(step=0, status="idle"))
    controls = Controls(trainer)
    bar = controls.status_bar
    sent(bar).clear()
    trainer.publish(step=40, status="running", steps_per_s=20.0, learning_rate=5e-4)
    (update,) = sent(bar).updates()  # all status fields in one message
    assert update["progress_text"] == "40 / 100" and update["eta_text"] == "ETA 0:03"
    assert bar.rate_text == "20.0 steps/s"
    assert bar.message == "" and bar.nw == "controls" and bar.host_class in controls._dom_classes
    trace = "non-finite loss at step 41\n" + "x" * 5000
    trainer.publish(step=41, status="failed", message=trace)
    assert bar.message == trace  # in full
    assert controls.run_button.disabled and controls.stop_button.disabled
    trainer.fail["save"] = OSError("disk full")
    controls.save_button.click()
    assert bar.action_error == "Save failed: OSError: disk full"


def test_progress_texts_and_durations():
    snap = make_snapshot(step=10, total_steps=3610, steps_per_s=1.0)
    assert progress_texts(snap)["eta_text"] == "ETA 1:00:00"
    assert progress_texts(dataclasses.replace(snap, status="paused"))["eta_text"] == ""
    assert progress_texts(dataclasses.replace(snap, steps_per_s=0.0))["rate_text"] == ""
    assert format_duration(59.6) == "1:00" and format_duration(float("nan")) == ""


def test_format_number_writes_what_the_views_fmtNum_writes():
    """Python's format_number against shared.js's fmtNum, run in node (a Debian package)."""
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node is needed to run the views' JavaScript (apt-get install nodejs)"
    cases = [(v, d) for v in (0.0, 0.0436123, 1.25e-4, 32000.0, -0.5, 1234.5, 0.001, 9999.0,
                              5e-4, 4.59e-4, 0.00999, 1e-2, float("nan"), float("inf"))
             for d in (3, 4)]
    axes = [[1e-3, 8e-4, 6e-4], [1e-2, 1e-3, 1e-4], [0.5, 1.0, 1.5], [9.95e-4, 1e-3, 1.005e-3],
            [0.0, 2e4, 4e4]]
    # json.dumps writes NaN and Infinity as the JavaScript literals of the same name.
    script = (STATIC / "shared.js").read_text() + (
        f"\nconsole.log(JSON.stringify([{json.dumps(cases)}.map(([v, d]) => fmtNum(v, d)), "
        f"{json.dumps(axes)}.map(axisLabels)]));")
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    numbers, labels = json.loads(out.stdout)
    assert [format_number(v, d) for v, d in cases] == numbers
    assert [axis_labels(ticks) for ticks in axes] == labels
    assert labels[:4] == [["0.001", "8e-4", "6e-4"], ["0.01", "0.001", "1e-4"],
                          ["0.5", "1", "1.5"], ["9.95e-4", "0.001", "0.001005"]]


# --- brush edits ------------------------------------------------------------------------------


def test_a_stroke_message_reaches_the_trainer_as_a_mask_and_the_recovery_comes_back():
    trainer = FakeTrainer(snapshot=make_snapshot(step=4))
    scrubber = VolumeScrubber(trainer)
    assert scrubber.editable and scrubber._cell_size() == (6, 5)
    mask = np.zeros((6, 5), np.uint8)
    mask[2, 1:4] = 1
    front_end_custom(scrubber, {"type": "edit", "mode": "erase", "time": 3, "depth": 1},
                     [mask.tobytes()])
    name, call = trainer.calls[-1]
    assert name == "edit" and (call["mode"], call["time"], call["depth"]) == ("erase", 3, 1)
    np.testing.assert_array_equal(call["mask"], mask > 0)
    front_end_custom(scrubber, {"type": "edit", "mode": "erase", "time": 3, "depth": 1},
                     [b"\x01" * 7])  # a mask of the wrong size: said, not sent
    assert trainer.names()[-1] == "edit" and "6x5 cells" in scrubber.edit_status
    front_end_custom(scrubber, {"type": "prepare"})
    assert scrubber.edits_ready and scrubber.edit_status == ""
    front_end_custom(scrubber, {"type": "inject"})
    assert trainer.names()[-1] == "inject" and scrubber.edit_status == "into the pool at step 4"
    front_end_custom(scrubber, {"type": "clear"})
    assert trainer.names()[-1] == "clear_edits"
    recovery = np.array([[0.1, 0.2, 0.3], [0.1, 0.5, 0.2]], np.float32)
    probe = dataclasses.replace(make_volume_probe(step=5), edit_time=1, recovery=frozen(recovery))
    trainer.publish(step=5, probe=probe)
    assert scrubber.edit_time == 1
    np.testing.assert_array_equal(np.frombuffer(scrubber._recovery, "<f4"), recovery.ravel())
    frames = FrameScrubber(np.zeros((3, 4, 4), np.float32))
    assert not frames.editable  # an array has no trainer to roll it out again


# --- Dashboard and subscriptions ----------------------------------------------------------


@pytest.mark.parametrize(("system", "scrubber"), [("sa-nca", VolumeScrubber),
                                                  ("rrcnn", FrameScrubber)])
def test_dashboard_parts_follow_the_trainer_to_the_end(system, scrubber):
    trainer = FakeTrainer(system, snapshot=make_snapshot(system, step=2, status="running"))
    dash = Dashboard(trainer)
    assert isinstance(dash.scrubber, scrubber)
    assert trainer.subscriber_count == 5  # header, controls, loss plot, pool, scrubber
    assert dash.header.nw == "dashboard" and "nw-dashboard" in dash._dom_classes
    assert dash.layout.max_width == "1000px"
    trainer.publish(make_snapshot(system, step=9, status="finished"))
    assert dash.controls.status_bar.status == "finished"
    assert dash.loss_plot.step == 9 and dash.pool_view.step == 9 and dash.scrubber.step == 9
    assert dash.controls.run_button.disabled
    dash.close()
    assert trainer.subscriber_count == 0


def test_a_widget_error_does_not_reach_the_publisher():
    trainer = FakeTrainer(snapshot=make_snapshot(step=2))
    view = PoolView(trainer)
    broken = make_pool()
    broken = dataclasses.replace(broken, targets=frozen(np.zeros((1, 2), np.uint8)))
    trainer.publish(step=3, pool=broken)  # must not raise here
    assert view._feed.last_error is not None
    trainer.publish(step=4, pool=make_pool(seed=5))
    assert view._feed.last_error is None and view.step == 4


# --- export ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", VIDEO_SUFFIXES)
def test_save_video_writes_readable_files(tmp_path, suffix):
    import mediapy

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 7, 9), dtype=np.uint8)  # odd sizes on purpose
    path = save_video(frames, tmp_path / f"clip{suffix}", fps=5, scale=3)
    assert path.stat().st_size > 0
    video = mediapy.read_video(path)
    assert video.shape[0] == 6
    assert video.shape[1] >= 21 and video.shape[2] >= 27


def test_save_video_rejects_bad_suffix_and_dtype(tmp_path):
    with pytest.raises(ValueError, match=r"\.gif, \.mp4"):
        save_video(np.zeros((2, 4, 4), np.uint8), tmp_path / "clip.avi")
    with pytest.raises(ValueError, match="uint8"):
        save_video(np.zeros((2, 4, 4), np.float32), tmp_path / "clip.gif")


def test_scrubbers_save_their_rollouts(tmp_path):
    import mediapy

    trainer = FakeTrainer(snapshot=make_snapshot(step=4))
    vs = VolumeScrubber(trainer)
    frames = vs.frames()
    assert frames.shape == (7, 6, 23, 3)  # 4 depths of 6x5 in one row, 1 px gaps
    np.testing.assert_array_equal(frames[:, :6, :5, 0], trainer.snapshot().probe.volume[:, 0])
    assert mediapy.read_video(vs.save_video(tmp_path / "v.gif", scale=2)).shape[0] == 7
    fs = FrameScrubber(FakeTrainer("rrcnn", snapshot=make_snapshot("rrcnn", step=1)))
    assert fs.video_frames().shape == (7, 6, 17)
    assert mediapy.read_video(fs.save_video(tmp_path / "f.mp4")).shape[0] == 7


def test_loss_figure_marks_nan_and_handles_empty():
    fig = loss_figure(make_history(20, nan_at=(7,)))
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["loss", "EMA 0.9", "NaN"]
    nan_line = fig.axes[0].get_lines()[2]
    np.testing.assert_array_equal(nan_line.get_xdata(), [7])
    assert loss_figure(None).axes[0].texts[0].get_text() == "no steps yet"


@pytest.mark.parametrize(("lr_start", "lr_end"), [(1e-3, 9.975e-4), (1e-2, 1e-4), (5e-4, 5e-4)])
def test_loss_figure_writes_the_learning_rate_axis_as_the_views_do(lr_start, lr_end):
    history = make_history(50)
    lr = np.geomspace(lr_start, lr_end, 50).astype(np.float32)
    fig = loss_figure(dataclasses.replace(history, lr=frozen(lr)))
    fig.canvas.draw()
    lr_ax = fig.axes[1]
    lo, hi = lr_ax.get_ylim()
    ticks = [t for t in lr_ax.get_yticklabels() if lo <= t.get_position()[1] <= hi]
    shown = [t.get_text() for t in ticks]
    assert shown == axis_labels([t.get_position()[1] for t in ticks]) and len(shown) >= 2
    assert lr_ax.yaxis.get_offset_text().get_text() == ""  # no "1e-3" offset, no 0.0010000
    assert all(len(label) <= 8 for label in shown), shown


# --- the ES modules --------------------------------------------------------------------------


WIDGETS = [LossPlot, PoolView, VolumeScrubber, FrameScrubber]


@pytest.mark.parametrize("cls", WIDGETS)
def test_es_modules_are_real_files_that_mark_their_root(cls):
    source = cls._esm.read_text() if hasattr(cls._esm, "read_text") else str(cls._esm)
    name = {"LossPlot": "loss-plot", "PoolView": "pool-view", "VolumeScrubber": "volume-scrubber",
            "FrameScrubber": "frame-scrubber"}[cls.__name__]
    assert f'el.dataset.nw = "{name}"' in source
    assert "export default" in source and "import " not in source.split("export default")[0]
    assert "http" not in source  # nothing fetched from a CDN


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_es_modules_parse(tmp_path):
    from nca_widgets.widgets import status_bar

    for path in [*(c._esm for c in WIDGETS), status_bar.StatusBar._esm]:
        copy = tmp_path / (getattr(path, "name", "x") + ".mjs")
        copy.write_text(str(path))
        result = subprocess.run(["node", "--check", str(copy)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
