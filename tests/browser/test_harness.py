"""The browser harness end to end: JupyterLab, a real kernel, ipywidgets and anywidget."""

from __future__ import annotations

import pytest

from .lab import cell_errors, execute, open_notebook, run_all, wait_attr, write_notebook

pytestmark = pytest.mark.browser

PROBE_CELLS = [
    "import ipywidgets as W\nslider = W.IntSlider(value=3, description='probe')\nslider",
    '''import anywidget, traitlets

class Probe(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      el.dataset.nw = "probe";
      const show = () => {
        el.dataset.value = String(model.get("value"));
        el.textContent = "probe value " + model.get("value");
      };
      show();
      model.on("change:value", show);
    }
    export default { render };
    """
    value = traitlets.Int(1).tag(sync=True)

probe = Probe()
probe''',
]


def test_harness_roundtrip(lab, page):
    write_notebook(lab.root / "harness.ipynb", PROBE_CELLS)
    open_notebook(page, lab, "harness.ipynb")
    run_all(page)

    # Both widgets rendered: ipywidgets' slider and the anywidget's own DOM attribute.
    page.locator(".jupyter-widgets.widget-slider").first.wait_for()
    assert wait_attr(page, '[data-nw="probe"]', "data-value", 1) == "1"

    # A trait change made in the kernel, outside any cell, reaches the DOM.
    execute(page, "probe.value = 42")
    assert wait_attr(page, '[data-nw="probe"]', "data-value", "v => Number(v) > 40") == "42"

    # execute() does not block on a busy kernel, and a waited execute sees kernel state.
    execute(page, "import time; time.sleep(1); probe.value = 7")
    assert wait_attr(page, '[data-nw="probe"]', "data-value", 7, timeout=10_000) == "7"
    reply = execute(page, "print(probe.value, slider.value)", wait=True)
    assert reply["status"] == "ok" and reply["stdout"].split() == ["7", "3"], reply

    assert cell_errors(page) == []
