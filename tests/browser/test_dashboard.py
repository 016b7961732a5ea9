"""The Dashboard in a real JupyterLab page: live training, controls, scrubbers, errors, reload.

The sa-nca tests share one notebook, kernel and page (module-scoped ``sa_nca``) and run in file
order; each first puts the trainer into the state it needs (running, paused, ended), so one can
also run alone. Measurements (slider-to-pixels latency, widget messages per second) are printed
and merged into ``test-artifacts/browser-metrics.json``.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass, field

import pytest

from .lab import (
    ARTIFACTS,
    VIEWPORT,
    cell_errors,
    execute,
    open_notebook,
    record_metrics,
    run_all,
    screenshot,
    wait_attr,
    watch_errors,
    write_notebook,
)

pytestmark = pytest.mark.browser

TALL = {"width": VIEWPORT["width"], "height": 1500}  # the whole dashboard fits on screen
CONTROLS = ".nw-controls[data-nw=controls]"
DASHBOARD = ".nw-dashboard[data-nw=dashboard]"
LOSS = "[data-nw=loss-plot]"
POOL = "[data-nw=pool-view]"
VOLUME = "[data-nw=volume-scrubber]"
FRAMES = "[data-nw=frame-scrubber]"
POOL_CELLS = ".nw-pv-cell[data-digit-index][data-split][data-loss]"
BANNER = f"{CONTROLS} .nw-sb-banner"
MAX_MSGS_PER_S = 50
FAILURE = "injected failure for the banner test"

# Counts the comm messages the kernel publishes (widget state updates and custom messages), per
# widget class, so the test can report how chatty the dashboard is while it trains.
COUNTER_CELL = """import collections, threading, time
from ipykernel.comm.comm import BaseComm
from ipywidgets.widgets.widget import _instances

_counts, _nbytes, _lock = collections.Counter(), collections.Counter(), threading.Lock()
_publish = BaseComm.publish_msg

def _counting_publish(self, msg_type, data=None, metadata=None, buffers=None, **keys):
    with _lock:
        _counts[(msg_type, self.comm_id)] += 1
        _nbytes[msg_type] += sum(memoryview(b).nbytes for b in buffers or ())
    return _publish(self, msg_type, data, metadata, buffers, **keys)

BaseComm.publish_msg = _counting_publish

def comm_counts():
    with _lock:
        items, nbytes = list(_counts.items()), dict(_nbytes)
    by_widget = collections.Counter()
    for (kind, cid), n in items:
        if kind == "comm_msg":
            by_widget[type(_instances.get(cid)).__name__] += n
    total = sum(n for (kind, _), n in items if kind == "comm_msg")
    return {"t": time.monotonic(), "comm_msg": total, "by_widget": dict(by_widget),
            "buffer_bytes": nbytes.get("comm_msg", 0)}"""

SA_NCA_CELLS = [
    COUNTER_CELL,
    'import nca_widgets as nw\n\ntrainer = nw.LiveTrainer("sa-nca", preset="tiny", '
    "num_train_steps=100000)\ntrainer.start()\ndash = nw.Dashboard(trainer)\ndash",
]

RRCNN_CELLS = [
    'import nca_widgets as nw\n\ntrainer = nw.LiveTrainer("rrcnn", preset="tiny", '
    "num_train_steps=100000)\ntrainer.start()\nnw.Dashboard(trainer)",
]

# Records, for every slider `input` event inside the scrubber, when it fired and when the view
# wrote the new index (its draw is synchronous) and the next animation frame after that (the new
# pixels are on screen). Times are epoch milliseconds, comparable with the kernel's time.time().
LATENCY_JS = """
(el) => {
  const rec = window.__nwLatency = [];
  const now = () => performance.timeOrigin + performance.now();
  let pending = null;
  document.addEventListener('input', (e) => {
    if (!el.contains(e.target)) return;
    pending = {slider: e.target.getAttribute('aria-label'), input: now()};
  }, true);
  new MutationObserver((records) => {
    if (!pending || !records.some((r) => r.oldValue !== el.getAttribute(r.attributeName))) return;
    const p = pending;
    pending = null;
    p.attr = now();
    requestAnimationFrame(() => { p.frame = now(); rec.push(p); });
  }).observe(el, {attributes: true, attributeOldValue: true,
                  attributeFilter: ['data-time', 'data-depth']});
}
"""

PIXELS_JS = """
(el) => [...el.querySelectorAll('canvas.nw-vs-slice, canvas.nw-vs-strip')].map(c => c.toDataURL())
"""


# --------------------------------------------------------------------------- helpers


def attr(page, selector: str, name: str) -> str | None:
    return page.locator(selector).first.get_attribute(name)


def kernel(page, code: str, timeout: float = 60_000) -> str:
    """Run `code` in the notebook's kernel, wait, and return its stdout (errors fail the test)."""
    reply = execute(page, code, wait=True, timeout=timeout)
    assert reply["status"] == "ok" and not reply["error"], reply
    return reply["stdout"]


def kernel_json(page, expr: str, timeout: float = 60_000):
    out = kernel(page, f"import json as _json\nprint(_json.dumps({expr}))", timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def wait_status(page, status: str, timeout: float = 30_000) -> None:
    wait_attr(page, CONTROLS, "data-status", status, timeout=timeout)


def wait_step_above(page, step: int, timeout: float = 30_000) -> int:
    return int(wait_attr(page, CONTROLS, "data-step", f"v => Number(v) > {step}", timeout=timeout))


def set_step_count(page, n: int) -> None:
    """Type `n` into the Controls' step count; the Step click then carries it to the kernel."""
    box = page.locator(CONTROLS).locator("input[type=number]")
    box.fill(str(n))


def trainer_status(page) -> str:
    return kernel_json(page, "trainer.status")


def ensure_running(page) -> None:
    status = trainer_status(page)
    if status in ("finished", "stopped", "failed"):
        pytest.skip(f"the shared trainer has ended ({status}); run the module from the start")
    if status != "running":
        kernel(page, "trainer.resume()")
    wait_status(page, "running")


def ensure_paused(page) -> int:
    """Pause (if running) and wait until the paused snapshot, probe included, is on the page."""
    if trainer_status(page) == "running":
        kernel(page, "trainer.pause()")
    wait_status(page, "paused")
    step = int(attr(page, CONTROLS, "data-step"))
    # Pausing rolls the probe out once more, for the parameters it rests at.
    page.wait_for_function(
        "([sel, step]) => document.querySelector(sel + ' .nw-vs-head')?.textContent"
        ".includes(`rollout of step ${step}`)",
        arg=[VOLUME, step],
    )
    return step


def wait_kernel_idle(page, timeout: float = 30_000) -> None:
    page.wait_for_function(
        "() => jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status === 'idle'",
        timeout=timeout,
    )


def wait_notebook_ready(page, name: str, timeout: float = 60_000) -> None:
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=timeout)
    page.wait_for_function(
        """(name) => {
          const w = window.jupyterapp.shell.currentWidget;
          const sb = document.querySelector('#jp-main-statusbar');
          return !!w && w.context?.path === name && !!w.sessionContext?.session?.kernel
              && !!sb && sb.innerText.includes('| Idle');
        }""",
        arg=name,
        timeout=timeout,
    )


def dashboard_shot(page, name: str) -> None:
    page.locator(DASHBOARD).first.scroll_into_view_if_needed()
    screenshot(page, ARTIFACTS / name)


# --------------------------------------------------------------------------- rrcnn


def test_rrcnn_dashboard(lab, page):
    """The rrcnn dashboard: frame scrubber, pool cells, a live loss plot, and no errors."""
    page.set_viewport_size(TALL)
    write_notebook(lab.root / "dashboard_rrcnn.ipynb", RRCNN_CELLS)
    open_notebook(page, lab, "dashboard_rrcnn.ipynb")
    run_all(page, timeout=120_000)

    # The scrubber starts at the last frame once the first rollout has arrived.
    last = wait_attr(page, FRAMES, "data-time", "v => Number(v) > 0", 60_000)
    assert page.locator(f"{FRAMES} input[type=range]").get_attribute("max") == last
    page.locator(f"{POOL} {POOL_CELLS}").first.wait_for()
    cells = page.locator(f"{POOL} {POOL_CELLS}")
    splits = {cells.nth(i).get_attribute("data-split") for i in range(cells.count())}
    assert splits == {"test"}, splits
    assert all(
        re.fullmatch(r"\d+", cells.nth(i).get_attribute("data-digit-index"))
        for i in range(cells.count())
    )
    wait_attr(page, DASHBOARD, "data-status", "running")
    points = int(wait_attr(page, LOSS, "data-points", "v => Number(v) > 0", 60_000))
    wait_attr(page, LOSS, "data-points", f"v => Number(v) > {points}", 30_000)
    wait_step_above(page, 20, 60_000)

    # The probe is rolled out again as training goes on (every 2 s or more).
    head = page.locator(f"{FRAMES} .nw-fs-head")
    first = int(re.search(r"rollout of step (\d+)", head.inner_text()).group(1))
    page.wait_for_function(
        "([sel, first]) => { const m = document.querySelector(sel + ' .nw-fs-head')"
        ".textContent.match(/rollout of step (\\d+)/); return m && Number(m[1]) > first; }",
        arg=[FRAMES, first],
        timeout=30_000,
    )
    assert page.locator(f"{FRAMES} .nw-fs-panel canvas").count() == 3  # input, estimate, target
    assert re.fullmatch(r"[-\d.e]+", attr(page, FRAMES, "data-psnr") or ""), "PSNR of the frame"
    dashboard_shot(page, "dashboard-rrcnn.png")

    page.locator(f"{FRAMES} input[type=range]").fill("0")
    wait_attr(page, FRAMES, "data-time", "0")
    assert "estimate, t=0" in page.locator(f"{FRAMES} figcaption").nth(1).inner_text()

    # The gallery: each tile is noisy input | output | target with its noise level, worst first;
    # the box scrolls and says so; a click probes that digit at that tile's level.
    w = 12  # the tiny preset's digits are 12x12
    assert cells.count() == 32
    assert cells.first.locator("canvas").get_attribute("width") == str(3 * w + 2)
    levels = [float(cells.nth(i).get_attribute("data-level")) for i in range(cells.count())]
    assert min(levels) == pytest.approx(0.1) and max(levels) == pytest.approx(0.9)
    assert re.search(r"noise level 0\.\d\d", cells.first.inner_text())
    assert "input | output | target" in page.locator(f"{POOL} .nw-pv-head").inner_text()
    more = page.locator(f"{POOL} .nw-pv-more")
    assert re.fullmatch(r"▼ \d+ more below: scroll the pool", more.inner_text()), more.inner_text()
    tile = cells.nth(levels.index(max(levels)))
    digit = tile.get_attribute("data-digit-index")
    tile.click()
    page.wait_for_function(
        "([sel, want]) => document.querySelector(sel + ' .nw-fs-head').textContent.includes(want)",
        arg=[FRAMES, f"probe #{digit} (test)"], timeout=30_000)
    assert "noise level 0.90" in page.locator(f"{FRAMES} .nw-fs-head").inner_text()
    dashboard_shot(page, "dashboard-rrcnn-gallery.png")
    assert cell_errors(page) == []


# --------------------------------------------------------------------------- sa-nca, one page


@dataclass
class Shared:
    page: object
    console: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def sa_nca(lab, browser):
    """One page on a running sa-nca dashboard (tiny preset), shared by the tests below."""
    context = browser.new_context(viewport=TALL)
    context.set_default_timeout(30_000)
    page = context.new_page()
    shared = Shared(page)
    page.on("console", lambda m: shared.console.append(f"[{m.type}] {m.text}"))
    page.on("pageerror", lambda e: shared.console.append(f"[pageerror] {e}"))
    page.on("dialog", lambda d: d.accept())  # a "leave page?" prompt must not block reload()
    watch_errors(page)
    try:
        write_notebook(lab.root / "dashboard_sa_nca.ipynb", SA_NCA_CELLS)
        open_notebook(page, lab, "dashboard_sa_nca.ipynb")
        run_all(page, timeout=120_000)
        page.locator(CONTROLS).wait_for()
        yield shared
    finally:
        with contextlib.suppress(Exception):
            execute(page, "trainer.close()", wait=True, timeout=10_000)
        context.close()
        with contextlib.suppress(Exception):
            lab.shutdown_kernels()


@pytest.fixture
def sa_page(request, sa_nca):
    """The shared page; a failing test leaves a screenshot and the browser console."""
    request.node._browser_console = sa_nca.console
    yield sa_nca.page
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        with contextlib.suppress(Exception):
            screenshot(sa_nca.page, ARTIFACTS / f"{name}.png")


def test_sa_nca_trains_live(sa_page):
    """Loss points and the step grow; the pool and scrubber render; widget traffic stays low."""
    page = sa_page
    ensure_running(page)
    points = int(wait_attr(page, LOSS, "data-points", "v => Number(v) > 0", 60_000))
    step = int(attr(page, CONTROLS, "data-step"))
    wait_attr(page, LOSS, "data-points", f"v => Number(v) > {points}", 30_000)
    wait_step_above(page, step)
    assert re.fullmatch(r"\d+", attr(page, DASHBOARD, "data-step"))
    assert "12x12x6 cells" in page.locator(f"{DASHBOARD} .nw-sb-title").first.inner_text()

    cells = page.locator(f"{POOL} {POOL_CELLS}")
    cells.first.wait_for()
    assert cells.count() == 16  # the tiny pool
    assert {cells.nth(i).get_attribute("data-split") for i in range(16)} == {"train"}
    losses = [float(cells.nth(i).get_attribute("data-loss")) for i in range(16)]
    assert losses == sorted(losses, reverse=True), "worst loss first"
    assert wait_attr(page, VOLUME, "data-channel") == "7"  # the digit channel (8 channels)
    assert attr(page, VOLUME, "data-playing") == "false"

    # Kernel-side widget traffic over ~5 s of training.
    before = kernel_json(page, "comm_counts()")
    step0 = int(attr(page, CONTROLS, "data-step"))
    time.sleep(5)
    after = kernel_json(page, "comm_counts()")
    step1 = int(attr(page, CONTROLS, "data-step"))
    seconds = after["t"] - before["t"]
    rate = (after["comm_msg"] - before["comm_msg"]) / seconds
    per_widget = {
        k: round((v - before["by_widget"].get(k, 0)) / seconds, 2)
        for k, v in sorted(after["by_widget"].items())
    }
    kib_s = (after["buffer_bytes"] - before["buffer_bytes"]) / seconds / 1024
    print(
        f"\nsa-nca dashboard while training: {rate:.1f} widget messages/s ({kib_s:.1f} KiB/s "
        f"of buffers) over {seconds:.1f} s, {(step1 - step0) / seconds:.1f} steps/s on the page; "
        f"per widget class: {per_widget}"
    )
    record_metrics(
        sa_nca_widget_msgs_per_s=round(rate, 2),
        sa_nca_widget_msgs_per_s_by_class=per_widget,
        sa_nca_widget_buffer_kib_per_s=round(kib_s, 2),
        sa_nca_steps_per_s_on_page=round((step1 - step0) / seconds, 2),
    )
    assert step1 > step0, "the step counter advanced during the measurement"
    assert rate > 0, "the counter saw no widget messages: is the patch in place?"
    assert rate < MAX_MSGS_PER_S, f"{rate:.1f} widget messages/s while training: {per_widget}"

    dashboard_shot(page, "dashboard-sa-nca.png")
    assert cell_errors(page) == []


def test_live_reconstruction_reaches_the_loss_plot(sa_page):
    """The test far-side MSE is drawn beside the loss, with its mean-digit baseline named."""
    page = sa_page
    ensure_running(page)
    first = int(wait_attr(page, LOSS, "data-eval-points", "v => Number(v) >= 1", 60_000))
    wait_attr(page, LOSS, "data-eval-points", f"v => Number(v) > {first}", 60_000)
    legend = page.locator(f"{LOSS} .nw-lp-legend").inner_text()
    assert "test far-side MSE" in legend and "mean digit" in legend
    head = page.locator(f"{VOLUME} .nw-vs-striphead").inner_text()
    assert "0 input" in head and "3 bottleneck" in head and "5 far side" in head


def test_pause_and_resume_buttons(sa_page):
    """Pause freezes data-step for 2 s; Resume makes it advance again."""
    page = sa_page
    ensure_running(page)
    controls = page.locator(CONTROLS)
    wait_step_above(page, int(attr(page, CONTROLS, "data-step")))

    controls.get_by_role("button", name="Pause", exact=True).click()
    wait_status(page, "paused")
    resume = controls.get_by_role("button", name="Resume", exact=True)
    resume.wait_for()
    step = attr(page, CONTROLS, "data-step")
    points = attr(page, LOSS, "data-points")
    time.sleep(2)  # the one fixed wait: nothing may move while paused
    assert attr(page, CONTROLS, "data-step") == step
    assert attr(page, DASHBOARD, "data-step") == step
    assert attr(page, LOSS, "data-points") == points
    assert kernel_json(page, "[trainer.status, trainer.step]") == ["paused", int(step)]

    resume.click()
    wait_status(page, "running")
    wait_step_above(page, int(step))
    controls.get_by_role("button", name="Pause", exact=True).wait_for()
    assert cell_errors(page) == []


def test_sliders_draw_while_kernel_busy(sa_page):
    """Depth and time sliders redraw the canvases locally while a cell keeps the kernel busy."""
    page = sa_page
    ensure_paused(page)  # no new rollout arrives: every pixel change comes from the sliders
    scrubber = page.locator(VOLUME)
    time_slider = scrubber.get_by_role("slider", name="time")
    depth_slider = scrubber.get_by_role("slider", name="depth")
    t_max, d_max = int(time_slider.get_attribute("max")), int(depth_slider.get_attribute("max"))
    assert (t_max, d_max) == (16, 5)  # 2 * num_steps + 1 frames, 6 depths
    kernel(page, "dash.scrubber.time, dash.scrubber.depth = 16, 5")
    wait_attr(page, VOLUME, "data-time", "16")
    wait_attr(page, VOLUME, "data-depth", "5")
    page.evaluate(LATENCY_JS, scrubber.element_handle())
    wait_kernel_idle(page)  # so that "busy" below is the sleeping cell's

    execute(page, "import time\n_busy = [time.time()]\ntime.sleep(5)\n_busy.append(time.time())")
    page.wait_for_function(
        "() => jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'busy'"
    )
    pixels0 = page.evaluate(PIXELS_JS, scrubber.element_handle())
    time_slider.fill("0")  # input + change events, as a drag ends
    wait_attr(page, VOLUME, "data-time", "0", timeout=3_000)
    pixels1 = page.evaluate(PIXELS_JS, scrubber.element_handle())
    depth_slider.focus()
    page.keyboard.press("Home")  # the keyboard's own input event
    wait_attr(page, VOLUME, "data-depth", "0", timeout=3_000)
    pixels2 = page.evaluate(PIXELS_JS, scrubber.element_handle())
    page.wait_for_function("() => window.__nwLatency.length >= 2", timeout=3_000)
    events = page.evaluate("() => window.__nwLatency")

    busy = kernel_json(page, "_busy")  # waits for the sleeping cell, then answers
    assert len(busy) == 2
    for e in events:
        assert busy[0] * 1000 <= e["input"] and e["frame"] <= busy[1] * 1000, (
            f"slider {e['slider']} was not handled while the kernel was busy: {e} vs {busy}"
        )
    assert pixels1 != pixels0, "moving the time slider did not change the canvases"
    assert pixels2[0] != pixels1[0], "moving the depth slider did not change the main slice"
    assert [e["slider"] for e in events] == ["time", "depth"]
    # The indices reach the kernel once it is free (throttled, at most every 250 ms).
    page.wait_for_function(
        "() => jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"
    )
    assert kernel_json(page, "[dash.scrubber.time, dash.scrubber.depth]") == [0, 0]

    latencies = [
        {
            "slider": e["slider"],
            "input_to_draw_ms": round(e["attr"] - e["input"], 2),
            "input_to_next_frame_ms": round(e["frame"] - e["input"], 2),
        }
        for e in events
    ]
    print(f"\nslider -> pixels while the kernel sleeps: {latencies}")
    record_metrics(volume_slider_latency=latencies)
    for e in latencies:
        assert e["input_to_next_frame_ms"] < 500, latencies

    # Play animates time in the browser: the time index runs through the rollout, then stops.
    play = page.locator(f"{VOLUME} button[aria-label='animate time']")
    play.click()
    wait_attr(page, VOLUME, "data-playing", "true")
    seen = page.evaluate(
        """async (sel) => {
            const el = document.querySelector(sel), seen = new Set();
            const t0 = performance.now();
            while (seen.size < 3 && performance.now() - t0 < 5000) {
                seen.add(el.dataset.time);
                await new Promise(r => setTimeout(r, 30));
            }
            return [...seen];
        }""",
        VOLUME,
    )
    play.click()
    wait_attr(page, VOLUME, "data-playing", "false")
    assert len(seen) >= 3, f"time did not advance while playing: {seen}"
    assert cell_errors(page) == []


def test_channel_change_needs_the_kernel(sa_page):
    """A channel other than the digit's comes from the trainer (set_probe), then is drawn."""
    page = sa_page
    ensure_paused(page)
    wait_kernel_idle(page)
    assert attr(page, VOLUME, "data-channel") == "7"
    kernel(
        page,
        "_probe_calls = []\n_set_probe = trainer.set_probe\n"
        "def _recording_set_probe(*a, **k):\n"
        "    _probe_calls.append([list(a), k])\n"
        "    return _set_probe(*a, **k)\n"
        "trainer.set_probe = _recording_set_probe",
    )
    scrubber = page.locator(VOLUME)
    pixels0 = page.evaluate(PIXELS_JS, scrubber.element_handle())
    options = scrubber.get_by_role("combobox", name="channel").locator("option")
    assert options.count() == 8 and options.last.inner_text() == "7 (digit)"

    # Choose channel 0 and read the view in the same task: nothing can have come back yet.
    sync = page.evaluate(
        """(el) => {
          const select = el.querySelector('select.nw-vs-channel');
          window.__nwChannelAt = performance.now();
          new MutationObserver((records, obs) => {
            if (el.dataset.channel === '0') { window.__nwChannelMs = performance.now()
                                                - window.__nwChannelAt; obs.disconnect(); }
          }).observe(el, {attributes: true, attributeFilter: ['data-channel']});
          select.value = '0';
          select.dispatchEvent(new Event('input', {bubbles: true}));
          select.dispatchEvent(new Event('change', {bubbles: true}));
          return {channel: el.dataset.channel, selected: select.value};
        }""",
        scrubber.element_handle(),
    )
    assert sync == {"channel": "7", "selected": "0"}, "the old volume stays until the new one"

    wait_attr(page, VOLUME, "data-channel", "0", timeout=30_000)
    fetch_ms = page.evaluate("() => window.__nwChannelMs")
    pixels1 = page.evaluate(PIXELS_JS, scrubber.element_handle())
    assert pixels1[0] != pixels0[0] and pixels1[1] != pixels0[1], "channel 0 drew nothing new"
    state = kernel_json(
        page,
        "{'calls': _probe_calls, 'probe': trainer._snapshots.probe.channel, "
        "'shown': dash.scrubber._volume_channel, 'channel': dash.scrubber.channel, "
        "'loading': dash.scrubber.loading}",
    )
    assert state == {
        "calls": [[[], {"channel": 0}]],
        "probe": 0,
        "shown": 0,
        "channel": 0,
        "loading": False,
    }
    page.wait_for_function(
        "(sel) => !document.querySelector(sel + ' .nw-vs-head').textContent.includes('loading')",
        arg=VOLUME,
    )
    print(f"\nchannel change -> new volume drawn: {fetch_ms:.0f} ms (kernel round trip)")
    record_metrics(volume_channel_fetch_ms=round(fetch_ms, 1))
    assert cell_errors(page) == []


def test_error_banner_shows_training_failure(sa_page):
    """A failing train step marks the run failed and shows the trainer's message in full."""
    page = sa_page
    ensure_running(page)
    wait_step_above(page, int(attr(page, CONTROLS, "data-step")))
    kernel(
        page,
        "def _failing_train_step(*args, **kwargs):\n"
        f"    raise RuntimeError({FAILURE!r})\n"
        "trainer._train_step = _failing_train_step",
    )
    wait_status(page, "failed")
    wait_attr(page, DASHBOARD, "data-status", "failed")
    banner = page.locator(BANNER)
    banner.wait_for(state="visible")
    message = kernel_json(page, "trainer.message")
    assert f"RuntimeError: {FAILURE}" in message and "Traceback" in message, message
    text = banner.text_content()
    assert text == message, "the banner shows the trainer's message in full"
    assert FAILURE in banner.inner_text()
    controls = page.locator(CONTROLS)
    assert controls.get_by_role("button", name="Start", exact=True).is_disabled()
    assert controls.get_by_role("button", name="Stop", exact=True).is_disabled()
    assert "failed" in page.locator(f"{CONTROLS} .nw-sb-pill").inner_text()
    dashboard_shot(page, "dashboard-sa-nca-failed.png")
    # Expected: the failure is logged to the kernel's stderr, not to the notebook.
    assert cell_errors(page) == []


def test_reload_restores_the_dashboard(sa_page):
    """After a page reload the widgets come back from the kernel with the same state."""
    page = sa_page
    if trainer_status(page) not in ("finished", "stopped", "failed"):
        kernel(page, "trainer.stop()\ntrainer.wait(60)")
    wait_attr(page, CONTROLS, "data-status", "v => ['finished', 'stopped', 'failed'].includes(v)")
    step = attr(page, CONTROLS, "data-step")
    status = attr(page, CONTROLS, "data-status")
    wait_attr(page, DASHBOARD, "data-step", step)
    points = wait_attr(page, LOSS, "data-points", f"v => Number(v) >= {int(step) - 1}")
    channel = attr(page, VOLUME, "data-channel")
    banner = page.locator(BANNER).text_content()
    assert int(points) > 0

    # The notebook (with its widget-view outputs) must be on disk for the page to show them.
    page.evaluate("() => jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function("() => !jupyterapp.shell.currentWidget.context.model.dirty")
    page.reload(wait_until="domcontentloaded")
    wait_notebook_ready(page, "dashboard_sa_nca.ipynb")

    assert wait_attr(page, CONTROLS, "data-step", step, timeout=60_000) == step
    assert wait_attr(page, DASHBOARD, "data-step", step) == step
    assert wait_attr(page, CONTROLS, "data-status", status) == status
    assert wait_attr(page, LOSS, "data-points", points, timeout=30_000) == points
    assert wait_attr(page, VOLUME, "data-channel", channel) == channel
    page.locator(f"{POOL} {POOL_CELLS}").first.wait_for()
    assert page.locator(f"{POOL} {POOL_CELLS}").count() == 16
    assert page.locator(BANNER).text_content() == banner
    assert cell_errors(page) == []
