"""The open contract: a system defined outside the package gets the trainer and the dashboard,
and the package itself names no built-in system outside its plug-ins."""

from __future__ import annotations

import ast
import io
import re
import time
import tokenize
from pathlib import Path

import comm
import ipywidgets
import numpy as np
import pytest

from nca_widgets import Dashboard, FrameScrubber, LiveTrainer, checkpoint
from nca_widgets.training import TRACE_COUNTS
from tests.custom_system import InpaintConfig, Inpainting
from tests.fakes import RecordingComm

PACKAGE = Path(__file__).parents[1] / "nca_widgets"
# Where built-in names may appear in code: the plug-ins themselves and the registry.
PLUG_IN_FILES = {"systems/sa_nca.py", "systems/rrcnn.py", "systems/growing.py", "registry.py"}


@pytest.fixture
def recording(monkeypatch):
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    yield
    ipywidgets.Widget.close_all()


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def inpainting(tiny_digits, **overrides) -> LiveTrainer:
    system = Inpainting(InpaintConfig(**overrides))
    return LiveTrainer(system, seed=0, examples=tiny_digits["sa-nca"])  # 12x12 digits


def test_a_system_from_outside_trains_compiling_once(tiny_digits):
    before = TRACE_COUNTS["inpainting"]
    trainer = inpainting(tiny_digits, num_train_steps=150)
    trainer.start()
    assert trainer.wait(timeout=240) == "finished"
    loss = trainer.history.loss
    assert np.mean(loss[-20:]) < 0.8 * np.mean(loss[:10]), (loss[:10], loss[-20:])
    assert TRACE_COUNTS["inpainting"] - before == 1
    assert trainer.rollout(3).shape == (2 * 12 + 1, 12, 12)  # frames, the input first


def test_its_dashboard_shows_its_pictures_headless(tiny_digits, recording):
    trainer = inpainting(tiny_digits)
    trainer.advance(4, wait=True)
    dash = Dashboard(trainer)
    assert isinstance(dash.scrubber, FrameScrubber)
    assert "inpainting · 12 steps per rollout" in dash.header.title
    scrubber, pool = dash.scrubber, dash.pool_view
    # Built at once from the trainer's latest status; the pictures follow by subscription.
    wait_until(lambda: scrubber._shape[0] > 0 and pool._shape[0] > 0)
    assert scrubber._shape == [25, 12, 12] and scrubber.labels == ["top half", "completed",
                                                                   "digit"]
    top_half = np.frombuffer(scrubber._input, np.uint8).reshape(12, 12)
    assert top_half[6:].max() == 0 and top_half[:6].max() > 0  # the seed: the top half only
    assert pool._shape == [32, 12, 12] and pool.split == "test"  # no pool: test rollouts
    dash.loss_plot.comm.clear()
    trainer.advance(3, wait=True)
    wait_until(lambda: dash.loss_plot.step == 7)  # the paused snapshot reaches every widget
    chunks = [u for u in dash.loss_plot.comm.updates() if "_chunk_step" in u]
    assert np.frombuffer(chunks[-1]["_chunk_step"], "<i4")[-1] == 7, "new points travelled"


def test_its_checkpoint_restores_bit_identically(tiny_digits, tmp_path):
    straight = inpainting(tiny_digits, num_train_steps=12)
    straight.start()
    straight.wait(timeout=120)
    end = checkpoint.load(straight.save(tmp_path / "straight"))[0]

    first = inpainting(tiny_digits, num_train_steps=12)
    first.advance(5, wait=True)
    half = first.save(tmp_path / "half")
    first.close()
    with pytest.raises(ValueError, match="pass that system"):
        LiveTrainer.restore(half)
    resumed = LiveTrainer.restore(half, system=Inpainting(InpaintConfig(num_train_steps=12)),
                                  examples=tiny_digits["sa-nca"])
    assert resumed.status == "paused" and resumed.step == 5
    resumed.resume()
    resumed.wait(timeout=120)
    again = checkpoint.load(resumed.save(tmp_path / "resumed"))[0]
    for key in sorted(k for k in end if k != "history/wall_s"):
        np.testing.assert_array_equal(end[key], again[key], err_msg=key)


def code_without_docs(path: Path) -> str:
    """A module's source without its docstrings and comments (other strings stay: code)."""
    source = path.read_text()
    docstrings = {
        node.body[0].value.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    }
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        docstring = tok.type == tokenize.STRING and tok.start[0] in docstrings
        if tok.type != tokenize.COMMENT and not docstring:
            out.append(tok.string)
    return " ".join(out)


def test_no_built_in_system_is_named_outside_the_plug_ins():
    offenders = []
    for path in sorted(PACKAGE.rglob("*")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in PLUG_IN_FILES or path.suffix not in (".py", ".js"):
            continue
        text = code_without_docs(path) if path.suffix == ".py" else path.read_text()
        if re.search(r"sa-nca|sa_nca|rrcnn|is_sa_nca", text):
            offenders.append(rel)
    assert offenders == [], f"built-in system names in the code of {offenders}"
