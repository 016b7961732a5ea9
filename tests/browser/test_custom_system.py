"""A system written outside the package (tests/custom_system.py, pasted into a notebook cell as a
researcher would) gets the whole dashboard in real JupyterLab: live loss, its pictures in the pool
and the scrubber, pause / step / resume from the buttons, and a checkpoint that restores exactly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .lab import (
    ARTIFACTS,
    cell_errors,
    open_notebook,
    run_all,
    screenshot,
    wait_attr,
    write_notebook,
)
from .test_dashboard import (
    CONTROLS,
    DASHBOARD,
    FRAMES,
    LOSS,
    POOL,
    POOL_CELLS,
    TALL,
    attr,
    kernel_json,
    set_step_count,
    wait_status,
    wait_step_above,
)

pytestmark = pytest.mark.browser

SYSTEM_SOURCE = (Path(__file__).parents[1] / "custom_system.py").read_text()
CELLS = [
    SYSTEM_SOURCE,
    "digits = nw.load_digits('bundled', size=(12, 12))\n"
    "config = InpaintConfig(num_train_steps=100_000)\n"
    "trainer = nw.LiveTrainer(Inpainting(config), examples=digits)\n"
    "trainer.start()\ndash = nw.Dashboard(trainer)\ndash",
]


def test_a_system_of_your_own_in_the_dashboard(lab, page, tmp_path):
    page.set_viewport_size(TALL)
    write_notebook(lab.root / "custom_system.ipynb", CELLS)
    open_notebook(page, lab, "custom_system.ipynb")
    run_all(page, timeout=120_000)
    page.locator(CONTROLS).wait_for()
    assert "inpainting" in page.locator(f"{DASHBOARD} .nw-sb-title").first.inner_text()

    # Its pictures: the pool view rolls out test digits (no pool), the frame scrubber its captions.
    cells = page.locator(f"{POOL} {POOL_CELLS}")
    cells.first.wait_for()
    assert cells.count() == 32
    assert {cells.nth(i).get_attribute("data-split") for i in range(32)} == {"test"}
    wait_attr(page, FRAMES, "data-time", "v => Number(v) > 0", 60_000)
    captions = page.locator(f"{FRAMES} figcaption").all_inner_texts()
    assert captions[0] == "top half" and captions[1].startswith("completed") \
        and captions[2] == "digit", captions

    # The loss falls, live.
    wait_step_above(page, 250, 120_000)
    losses = kernel_json(page, "[float(x) for x in trainer.history.loss]")
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert last < 0.8 * first, (first, last)
    assert int(attr(page, LOSS, "data-points")) > 200

    # Pause, step 3, resume: from the buttons.
    controls = page.locator(CONTROLS)
    controls.get_by_role("button", name="Pause", exact=True).click()
    wait_status(page, "paused")
    step = int(attr(page, CONTROLS, "data-step"))
    set_step_count(page, 3)
    controls.get_by_role("button", name="Step", exact=True).click()
    wait_attr(page, CONTROLS, "data-step", str(step + 3), 30_000)
    wait_status(page, "paused")
    assert kernel_json(page, "[trainer.status, trainer.step]") == ["paused", step + 3]
    screenshot(page, ARTIFACTS / "dashboard-custom-system.png")

    # A checkpoint restores bit-identically (the system object goes back in).
    same = kernel_json(page, (
        "(lambda a, b: sorted(k for k in a if k != 'history/wall_s' and "
        "not __import__('numpy').array_equal(a[k], b[k])))("
        f"nw.checkpoint.load(trainer.save({str(tmp_path / 'a')!r}))[0], "
        "nw.checkpoint.load(nw.LiveTrainer.restore("
        f"{str(tmp_path / 'a')!r}, system=Inpainting(config), examples=digits)"
        f".save({str(tmp_path / 'b')!r}))[0])"))
    assert same == [], f"arrays that differ after restore: {same}"

    controls.get_by_role("button", name="Resume", exact=True).click()
    wait_status(page, "running")
    wait_step_above(page, step + 3)
    assert re.fullmatch(r"\d+", attr(page, DASHBOARD, "data-step"))
    assert cell_errors(page) == []
