"""The repo's quickstart notebook, opened and run in JupyterLab as a user would.

The lab fixture's kernels get NCA_WIDGETS_PRESET=tiny, which the notebook reads, so the run takes
seconds. Run All trains the run as configured, to its end at step 50, and saves it.
"""

from __future__ import annotations

import json
import shutil

import pytest

from .lab import (
    ARTIFACTS,
    REPO_ROOT,
    VIEWPORT,
    cell_errors,
    execute,
    open_notebook,
    run_all,
    screenshot,
    wait_attr,
)

pytestmark = pytest.mark.browser

CONTROLS = ".nw-controls[data-nw=controls]"
DASHBOARD = ".nw-dashboard[data-nw=dashboard]"
LOSS = "[data-nw=loss-plot]"

# Logs every value the loss plot and the controls write, from before the dashboard exists.
RECORD_JS = """
() => {
  const log = window.__nwLog = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const nw = r.target.dataset?.nw;
      if (nw === 'loss-plot' || nw === 'controls') {
        log.push([nw, r.attributeName, r.target.getAttribute(r.attributeName)]);
      }
    }
  }).observe(document.body, {subtree: true, attributes: true,
                             attributeFilter: ['data-points', 'data-step']});
}
"""


def values(log: list, nw: str, name: str) -> list[int]:
    out: list[int] = []
    for who, attr, value in log:
        if who == nw and attr == name and value is not None and (not out or out[-1] != int(value)):
            out.append(int(value))
    return out


def test_quickstart_notebook(lab, page):
    shutil.copy(REPO_ROOT / "notebooks" / "quickstart.ipynb", lab.root / "quickstart.ipynb")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": 1400})
    open_notebook(page, lab, "quickstart.ipynb")
    page.evaluate(RECORD_JS)
    run_all(page, timeout=180_000)

    assert cell_errors(page) == []
    title = page.locator(f"{DASHBOARD} .nw-sb-title").first.inner_text()
    assert "12x12x6 cells" in title, f"the kernel did not train the tiny preset: {title}"
    # tiny trains 50 steps; the dashboard follows the run to its end.
    wait_attr(page, CONTROLS, "data-status", "finished", timeout=60_000)
    assert wait_attr(page, CONTROLS, "data-step", "50") == "50"
    assert wait_attr(page, LOSS, "data-points", "50") == "50"

    log = page.evaluate("() => window.__nwLog")
    points = values(log, "loss-plot", "data-points")
    steps = values(log, "controls", "data-step")
    assert points == sorted(points) and len([p for p in points if 0 < p < 50]) >= 1, points
    assert steps == sorted(steps) and len([s for s in steps if 0 < s < 50]) >= 1, steps

    # Seen from the kernel: trained as configured (no cell changed the learning rate), and the
    # finished run saved itself into the notebook's run_dir.
    reply = execute(
        page,
        "import json\nfrom nca_widgets.training import lr_schedule\n"
        "h = trainer.history\n"
        "expected = [float(lr_schedule(trainer.config)(s - 1)) for s in h.step]\n"
        "print(json.dumps({'status': trainer.status, 'step': trainer.step, "
        "'history': len(h.step), "
        "'lr_as_configured': bool(abs(h.lr - expected).max() < 1e-9)}))",
        wait=True,
    )
    assert reply["status"] == "ok", reply
    state = json.loads(reply["stdout"].strip().splitlines()[-1])
    assert state == {"status": "finished", "step": 50, "history": 50, "lr_as_configured": True}
    saved = list((lab.root / "runs").glob("quickstart-*/ckpt-00000050/meta.json"))
    assert len(saved) == 1, saved  # in a directory of its own

    page.locator(DASHBOARD).first.scroll_into_view_if_needed()
    screenshot(page, ARTIFACTS / "quickstart.png")
    assert cell_errors(page) == []
