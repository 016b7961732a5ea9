"""The dashboard where users run it: JupyterLab with comms over subshells switched off, Notebook 7.

JupyterLab's default settings are covered by test_dashboard.py. Here each front end gets a server
of its own; one test drives the controls through a run (Pause shows "Pausing…" before "Resume",
Step 3 trains exactly 3 steps, the learning-rate nudges and Save reach the trainer), then shuts the
kernel down and checks that the controls say they can do nothing any more.
"""

from __future__ import annotations

import re

import pytest

from .lab import (
    ARTIFACTS,
    KERNEL_ENV,
    Lab,
    cell_errors,
    open_notebook,
    run_all,
    screenshot,
    write_notebook,
)
from .test_dashboard import (
    CONTROLS,
    LOSS,
    POOL,
    POOL_CELLS,
    VOLUME,
    attr,
    kernel_json,
    set_step_count,
    wait_attr,
    wait_status,
    wait_step_above,
)

pytestmark = pytest.mark.browser

FRONT_ENDS = {
    "lab-no-subshells": dict(app="lab", settings={
        "@jupyterlab/apputils-extension:kernels-settings": {"commsOverSubshells": "disabled"}}),
    "notebook7": dict(app="notebook"),
}
CELLS = [
    'import nca_widgets as nw\n\ntrainer = nw.LiveTrainer("sa-nca", preset="tiny", '
    'num_train_steps=100000, run_dir=nw.new_run_dir("runs", "front-end"))\n'
    "trainer.start()\ndash = nw.Dashboard(trainer)\ndash",
]
# Every text the run button shows, in order, from the moment this is installed.
RECORD_RUN_BUTTON = """(sel) => {
  window._runTexts = [];
  const box = document.querySelector(sel);
  const button = [...box.querySelectorAll('button')].find((b) => b.textContent === 'Pause');
  new MutationObserver(() => {
    const t = button.textContent;
    if (window._runTexts.at(-1) !== t) window._runTexts.push(t);
  }).observe(button, {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture(scope="module", params=list(FRONT_ENDS))
def front_end(request, tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp(request.param), env=KERNEL_ENV,
                 **FRONT_ENDS[request.param])
    server.start()
    try:
        yield request.param, server
    finally:
        server.stop()


def test_the_dashboard_trains_and_obeys_its_controls(front_end, page):
    name, lab = front_end
    page.set_viewport_size({"width": 1400, "height": 1500})
    write_notebook(lab.root / "dashboard.ipynb", CELLS)
    open_notebook(page, lab, "dashboard.ipynb")
    if name == "notebook7":
        # Notebook 7.6 itself throws one "Cannot read properties of undefined (reading 'schema')"
        # while it loads its settings, with any notebook (a bare print cell too): not ours.
        page._nw_page_errors.clear()
    run_all(page, timeout=120_000)
    controls = page.locator(CONTROLS)
    controls.wait_for()
    points = int(wait_attr(page, LOSS, "data-points", "v => Number(v) > 0", 60_000))
    wait_attr(page, LOSS, "data-points", f"v => Number(v) > {points}", 30_000)
    page.locator(f"{POOL} {POOL_CELLS}").first.wait_for()
    wait_attr(page, VOLUME, "data-time", "v => Number(v) > 0", 30_000)

    # Pause: "Pausing…" at once, then "Resume" once the trainer has paused.
    page.evaluate(RECORD_RUN_BUTTON, CONTROLS)
    controls.get_by_role("button", name="Pause", exact=True).click()
    wait_status(page, "paused")
    controls.get_by_role("button", name="Resume", exact=True).wait_for()
    texts = page.evaluate("() => window._runTexts")
    assert texts[:2] == ["Pausing…", "Resume"], texts
    step = int(attr(page, CONTROLS, "data-step"))
    assert kernel_json(page, "[trainer.status, trainer.step]") == ["paused", step]

    # Step 3, exactly.
    set_step_count(page, 3)
    controls.get_by_role("button", name="Step", exact=True).click()
    wait_attr(page, CONTROLS, "data-step", str(step + 3), 30_000)
    wait_status(page, "paused")
    assert kernel_json(page, "trainer.step") == step + 3

    # The learning rate: ×2 of the current one, read as every view writes numbers.
    lr = kernel_json(page, "trainer.learning_rate")
    controls.get_by_role("button", name="×2", exact=True).click()
    page.wait_for_function(
        "([sel, want]) => document.querySelector(sel).innerText.includes(want)",
        arg=[CONTROLS, "learning rate "], timeout=10_000)
    assert kernel_json(page, "trainer.learning_rate") == pytest.approx(2 * lr, rel=1e-6)

    # Save writes a checkpoint, and says where.
    controls.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_function("(sel) => /saved .*ckpt-\\d+/.test(document.querySelector(sel)"
                           ".innerText)", arg=CONTROLS, timeout=30_000)
    saved = re.search(r"saved (\S+)", controls.inner_text()).group(1)
    assert kernel_json(page, f"__import__('os').path.isdir({saved!r})") is True

    controls.get_by_role("button", name="Resume", exact=True).click()
    wait_status(page, "running")
    wait_step_above(page, step + 3)
    screenshot(page, ARTIFACTS / f"dashboard-{name}.png")
    assert cell_errors(page) == []

    # The kernel goes away: the controls grey out and say that they can do nothing.
    page.evaluate("() => jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    wait_attr(page, CONTROLS, "data-kernel", "disconnected", 30_000)
    banner = page.locator(f"{CONTROLS} .nw-sb-banner")
    assert "kernel is not running" in banner.inner_text()
    save = controls.get_by_role("button", name="Save", exact=True)
    assert save.evaluate("b => getComputedStyle(b).pointerEvents") == "none"
    screenshot(page, ARTIFACTS / f"dashboard-{name}-no-kernel.png")
