"""A notebook attaches to a run that `nca-widgets train` trains, and its buttons control it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .lab import ARTIFACTS, cell_errors, open_notebook, run_all, screenshot, write_notebook
from .test_dashboard import (
    CONTROLS,
    LOSS,
    POOL,
    POOL_CELLS,
    attr,
    set_step_count,
    wait_attr,
    wait_status,
)

pytestmark = pytest.mark.browser


def metrics(run_dir) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_notebook_attaches_to_a_cli_run_and_controls_it(lab, page, tmp_path):
    run_dir = lab.root / "runs" / "headless"
    cli = subprocess.Popen(
        [sys.executable, "-m", "nca_widgets", "train", "sa-nca", "--preset", "tiny", "--steps",
         "100000", "--set", "num_train_steps=100000", "--run-dir", str(run_dir), "--data",
         "bundled", "--checkpoint-every", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not metrics(run_dir):
            assert cli.poll() is None and time.monotonic() < deadline, "the CLI run trains"
            time.sleep(0.2)
        page.set_viewport_size({"width": 1400, "height": 1500})
        write_notebook(lab.root / "attach.ipynb", [
            "import nca_widgets as nw\n\nrun = nw.attach('runs/headless')\n"
            "dash = nw.Dashboard(run)\ndash"])
        open_notebook(page, lab, "attach.ipynb")
        run_all(page, timeout=120_000)
        controls = page.locator(CONTROLS)
        points = int(wait_attr(page, LOSS, "data-points", "v => Number(v) > 0", 60_000))
        wait_attr(page, LOSS, "data-points", f"v => Number(v) > {points}", 30_000)
        page.locator(f"{POOL} {POOL_CELLS}").first.wait_for()

        # Pause: the CLI's step count stops.
        controls.get_by_role("button", name="Pause", exact=True).click()
        wait_status(page, "paused")
        step = int(attr(page, CONTROLS, "data-step"))
        rows = len(metrics(run_dir))
        time.sleep(1.5)
        assert len(metrics(run_dir)) == rows == step and cli.poll() is None

        # Step 3, exactly.
        set_step_count(page, 3)
        controls.get_by_role("button", name="Step", exact=True).click()
        wait_attr(page, CONTROLS, "data-step", str(step + 3), 30_000)
        assert [r["step"] for r in metrics(run_dir)][-3:] == [step + 1, step + 2, step + 3]

        # A new learning rate, typed: the run's own metrics show it.
        controls.get_by_role("textbox").fill("2.5e-4")
        controls.get_by_role("textbox").press("Enter")
        page.wait_for_function("(sel) => document.querySelector(sel).innerText"
                               ".includes('learning rate 2.50e-4')", arg=CONTROLS, timeout=30_000)
        controls.get_by_role("button", name="Resume", exact=True).click()
        wait_status(page, "running")
        deadline = time.monotonic() + 60
        while metrics(run_dir)[-1]["step"] < step + 6:
            assert time.monotonic() < deadline, "the run resumed"
            time.sleep(0.2)
        assert metrics(run_dir)[-1]["lr"] == pytest.approx(2.5e-4, rel=0.05)

        # Save: a checkpoint of the headless run, where the notebook says.
        controls.get_by_role("button", name="Save", exact=True).click()
        page.wait_for_function("(sel) => /saved .*ckpt-\\d+/.test(document.querySelector(sel)"
                               ".innerText)", arg=CONTROLS, timeout=60_000)
        saved = Path(controls.inner_text().split("saved ", 1)[1].split()[0])
        assert saved.parent == run_dir and (saved / "arrays.npz").is_file()
        screenshot(page, ARTIFACTS / "dashboard-attached.png")
        assert cell_errors(page) == []

        # Stop from the notebook: the CLI saves and exits.
        controls.get_by_role("button", name="Stop", exact=True).click()
        out, err = cli.communicate(timeout=120)
        assert cli.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["steps"] == metrics(run_dir)[-1]["step"]
    finally:
        if cli.poll() is None:
            cli.kill()
