"""Touching the automaton in the page: brush strokes on the scrubber, the edited rollout, the
recovery curve, and an edit put into the training pool, while training runs.

Each stroke is a real mouse drag on the scrubber's canvas. Pixels are read back from the canvases;
the latency from the end of a stroke to the edited rollout on screen is measured in the page
(`data-edit-latency-ms`) and merged into ``test-artifacts/browser-metrics.json``. The stroke test
trains the `tiny` preset; ``NW_EDIT_PRESET=cpu`` runs it on the `cpu` preset (12x12 digits too) to
measure the latency there.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from .lab import (
    ARTIFACTS,
    cell_errors,
    open_notebook,
    record_metrics,
    run_all,
    screenshot,
    write_notebook,
)
from .test_dashboard import CONTROLS, POOL, POOL_CELLS, VOLUME, kernel, kernel_json, wait_attr

pytestmark = pytest.mark.browser

PRESET = os.environ.get("NW_EDIT_PRESET", "tiny")
CELLS = [
    f'import nca_widgets as nw\n\ntrainer = nw.LiveTrainer("sa-nca", preset="{PRESET}", '
    "num_train_steps=100000)\ntrainer.start()\ndash = nw.Dashboard(trainer)\ndash",
]
# The main slice's pixels as 0..255 grey codes (red channel), row by row.
SLICE_PIXELS = """(sel) => {
  const c = document.querySelector(sel + ' canvas.nw-vs-slice');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  return Array.from({length: c.width * c.height}, (_, i) => d[4 * i]);
}"""
# The sum of every pool tile's pixels.
POOL_SUM = """(sel) => [...document.querySelectorAll(sel + ' canvas')].reduce((sum, c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i];
  return sum + s;
}, 0)"""


def drag(page, canvas, row: float, x0: float, x1: float) -> None:
    """A mouse drag across `canvas` at height `row` from `x0` to `x1` (fractions of its box)."""
    box = canvas.bounding_box()
    y = box["y"] + row * box["height"]
    page.mouse.move(box["x"] + x0 * box["width"], y)
    page.mouse.down()
    for k in range(1, 9):
        page.mouse.move(box["x"] + (x0 + (x1 - x0) * k / 8) * box["width"], y)
    page.mouse.up()


def set_slider(page, name: str, value: int) -> None:
    page.locator(VOLUME).get_by_role("slider", name=name).fill(str(value))
    wait_attr(page, VOLUME, f"data-{name}", str(value))


def test_a_stroke_erases_cells_and_the_edited_rollout_arrives_while_training(lab, page):
    page.set_viewport_size({"width": 1400, "height": 1500})
    write_notebook(lab.root / "edits.ipynb", CELLS)
    open_notebook(page, lab, "edits.ipynb")
    run_all(page, timeout=120_000)
    wait_attr(page, VOLUME, "data-time", "v => Number(v) > 0", 60_000)
    wait_attr(page, CONTROLS, "data-status", "running")
    h = kernel_json(page, "trainer.config.spatial_dims[0]")
    row = 6  # the digit's middle row (the tiny preset's digits are 12x12)

    # Erase a stroke across the input slice at time 0, while training runs.
    set_slider(page, "time", 0)
    set_slider(page, "depth", 0)
    before = page.evaluate(SLICE_PIXELS, VOLUME)
    page.locator(VOLUME).get_by_role("combobox", name="brush", exact=True).select_option("erase")
    page.locator(VOLUME).get_by_role("combobox", name="brush size").select_option("1")
    wait_attr(page, VOLUME, "data-edits-ready", "true", 60_000)  # compiled once, when picked
    drag(page, page.locator(f"{VOLUME} canvas.nw-vs-slice"), (row + 0.5) / h, 0.02, 0.98)
    wait_attr(page, VOLUME, "data-edit-time", "0", 30_000)
    latency = int(wait_attr(page, VOLUME, "data-edit-latency-ms", None, 30_000))
    after = page.evaluate(SLICE_PIXELS, VOLUME)
    stroke = after[row * h:(row + 1) * h]
    assert max(before[row * h:(row + 1) * h]) > 100, "the digit crosses the stroke's row"
    assert stroke == [0] * h, f"the cells under the stroke are erased: {stroke}"
    assert after[: row * h] == before[: row * h], "cells above the stroke are untouched"
    assert kernel_json(page, "trainer.status") == "running"

    # The recovery curve is drawn: untouched and edited error against time.
    plot = page.locator(f"{VOLUME} canvas.nw-ed-plot")
    assert plot.is_visible()
    wait_attr(page, VOLUME, "data-recovery", None)
    screenshot(page, ARTIFACTS / "edit-erase.png")

    # A second stroke, timed the same way, now that everything is compiled.
    page.locator(VOLUME).get_by_role("combobox", name="brush", exact=True).select_option("noise")
    drag(page, page.locator(f"{VOLUME} canvas.nw-vs-slice"), 0.2, 0.1, 0.9)
    latencies = [latency]
    page.wait_for_function(
        "(sel) => document.querySelector(sel).dataset.edits === '2'", arg=VOLUME)
    assert cell_errors(page) == []

    # Into the pool: drawn on the far side of the probe, then put into the pool while training
    # runs; the pool view shows it at its next snapshot.
    kernel(page, "trainer.pause()")
    wait_attr(page, CONTROLS, "data-status", "paused")
    depth = kernel_json(page, "trainer.config.spatial_dims[2]") - 1
    set_slider(page, "depth", depth)
    page.locator(VOLUME).get_by_role("button", name="untouched").click()
    wait_attr(page, VOLUME, "data-edit-time", "-1", 30_000)
    page.locator(VOLUME).get_by_role("combobox", name="brush", exact=True).select_option("draw")
    page.locator(VOLUME).get_by_role("combobox", name="brush size").select_option("3")
    drag(page, page.locator(f"{VOLUME} canvas.nw-vs-slice"), 0.5, 0.1, 0.9)
    wait_attr(page, VOLUME, "data-edit-time", "0", 30_000)
    page.locator(f"{POOL} {POOL_CELLS}").first.wait_for()
    pool_before = page.evaluate(POOL_SUM, POOL)
    step_before = int(page.locator(POOL).get_attribute("data-pool-step"))
    page.locator(VOLUME).get_by_role("button", name="into the pool").click()
    page.wait_for_function(
        "(sel) => document.querySelector(sel + ' .nw-ed-status').textContent"
        ".startsWith('into the pool at step')", arg=VOLUME, timeout=30_000)
    page.wait_for_function(f"(sel) => ({POOL_SUM})(sel) > {pool_before} * 1.05", arg=POOL,
                           timeout=30_000)
    assert int(page.locator(POOL).get_attribute("data-pool-step")) >= step_before
    screenshot(page, ARTIFACTS / "edit-into-the-pool.png")
    assert cell_errors(page) == []
    latencies.append(int(page.locator(VOLUME).get_attribute("data-edit-latency-ms")))
    record_metrics(**{f"edit_latency_ms_{PRESET}": latencies})
    print(f"\nstroke end -> edited rollout on screen (ms): {latencies}")


def test_a_digit_drawn_on_the_input_comes_out_at_the_far_side(lab, page):
    """With the shipped trained sa-nca (cpu preset), a "1" drawn by mouse on the input slice."""
    page.set_viewport_size({"width": 1400, "height": 1500})
    write_notebook(lab.root / "draw.ipynb", [
        'import nca_widgets as nw\n\ntrainer = nw.LiveTrainer("sa-nca", preset="cpu", '
        'init="pretrained", probe_index=3)\ndash = nw.Dashboard(trainer)\ndash'])
    open_notebook(page, lab, "draw.ipynb")
    run_all(page, timeout=120_000)
    wait_attr(page, VOLUME, "data-time", "v => Number(v) > 0", 60_000)
    set_slider(page, "time", 0)
    set_slider(page, "depth", 0)
    brush = page.locator(VOLUME).get_by_role("combobox", name="brush", exact=True)
    size = page.locator(VOLUME).get_by_role("combobox", name="brush size")
    brush.select_option("erase")
    size.select_option("5")
    wait_attr(page, VOLUME, "data-edits-ready", "true", 60_000)
    canvas = page.locator(f"{VOLUME} canvas.nw-vs-slice")
    for row in (0.1, 0.3, 0.5, 0.7, 0.9):  # wipe the input slice clean
        drag(page, canvas, row, 0.0, 1.0)
    brush.select_option("draw")
    size.select_option("2")
    box = canvas.bounding_box()  # a "1": one stroke down the middle
    page.mouse.move(box["x"] + 0.55 * box["width"], box["y"] + 0.15 * box["height"])
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(box["x"] + (0.55 - 0.01 * k) * box["width"],
                        box["y"] + (0.15 + 0.07 * k) * box["height"])
    page.mouse.up()
    page.wait_for_function(
        "(sel) => document.querySelector(sel).dataset.edits === '6'", arg=VOLUME)
    wait_attr(page, VOLUME, "data-edit-time", "0", 30_000)
    screenshot(page, ARTIFACTS / "edit-draw-a-digit.png")
    # The far side at the end of the edited rollout against the drawn digit, and against 200
    # test digits: it must look like what was drawn, not like any digit.
    result = kernel_json(page, """(lambda np: (lambda p, test: (lambda far, drawn: [
        float(np.corrcoef(far, drawn)[0, 1]),
        [float(np.corrcoef(far, d.ravel())[0, 1]) for d in test]])(
            p.volume[-1, -1].ravel() / 255.0, p.digit.ravel() / 255.0))(
        trainer.snapshot().probe, trainer.examples.test[:200]))(__import__("numpy"))""")
    drawn, others = result
    assert drawn > 0.5 and drawn > np.percentile(others, 95), (drawn, sorted(others)[-10:])
    record_metrics(drawn_digit_far_side_correlation=drawn,
                   test_digit_correlation_p95=float(np.percentile(others, 95)))
    assert cell_errors(page) == []
