"""Every notebook runs headless, top to bottom, on the tiny preset, and saves its widget state."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_all_notebooks_are_found_and_stripped():
    assert {p.stem for p in NOTEBOOKS} == {"quickstart", "self_autoencoding_mnist",
                                          "rrcnn_denoising", "your_own_system",
                                          "touch_the_automaton"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") and not c.get("execution_count")
                   for c in nb.cells if c.cell_type == "code"), f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_tiny_preset(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NCA_WIDGETS_PRESET", "tiny")
    work = tmp_path / path.name
    shutil.copy(path, work)
    nb = nbformat.read(work, as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}}, store_widget_state=True)
    client.execute(env={**os.environ, "NCA_WIDGETS_PRESET": "tiny"})
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    names = {s["model_name"] for s in state.values()}
    assert "AnyModel" in names, names
    widget_views = [o for c in nb.cells for o in c.get("outputs", [])
                    if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widget_views, "the notebook shows widgets"
    if "loss_figure" in "".join(c.source for c in nb.cells):
        pictures = [o for c in nb.cells if "loss_figure" in c.source for o in c.outputs
                    if "image/png" in o.get("data", {})]
        assert pictures, "the loss figure shows as a picture, not as text"
