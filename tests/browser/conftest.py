"""Fixtures for real-browser tests: a JupyterLab server and a headless Chromium page.

- ``lab`` (session): a :class:`~tests.browser.lab.Lab` with ``.url``, ``.token``, ``.root`` and
  ``.notebook_url(name)``; its log is attached to the report of any failing test. Its kernels get
  ``NCA_WIDGETS_PRESET=tiny`` (``lab.KERNEL_ENV``), so the repo's notebooks run in seconds.
- ``browser`` (session): Debian's Chromium through Playwright's sync API.
- ``page`` (function): a fresh context (1400x1000); on failure a full-page screenshot goes to
  ``test-artifacts/<test-name>.png`` and the browser console is attached to the report. After each
  test every kernel is shut down, so tests do not share kernels.
"""

from __future__ import annotations

import contextlib
import os
import re

import pytest

from .lab import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, KERNEL_ENV, VIEWPORT, Lab, watch_errors


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
    if rep.failed:
        lab = item.funcargs.get("lab") if hasattr(item, "funcargs") else None
        if isinstance(lab, Lab):
            rep.sections.append(("JupyterLab log (tail)", lab.log_tail()))
        console = getattr(item, "_browser_console", None)
        if console:
            rep.sections.append(("browser console", "\n".join(console[-200:])))


def _failed(item) -> bool:
    return any(
        getattr(getattr(item, f"rep_{when}", None), "failed", False) for when in ("setup", "call")
    )


@pytest.fixture(scope="session", autouse=True)
def _require_chromium():
    """Skip without Chromium on a laptop; in CI (CI=true) a missing browser fails the run."""
    if not os.path.exists(CHROMIUM):
        message = f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI must not skip them", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    server = Lab(tmp_path_factory.mktemp("jupyterlab"), env=KERNEL_ENV)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(request, browser):
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(20_000)
    pg = context.new_page()
    console: list[str] = []
    request.node._browser_console = console
    pg.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
    pg.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    watch_errors(pg)  # uncaught page exceptions count as cell_errors(pg)
    try:
        yield pg
    finally:
        if _failed(request.node):
            name = re.sub(r"[^\w.-]+", "_", request.node.name)
            ARTIFACTS.mkdir(exist_ok=True)
            try:
                pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            except Exception as e:  # never mask the test's own failure
                console.append(f"[harness] screenshot failed: {e}")
        context.close()
        if "lab" in request.fixturenames:
            lab_server = request.getfixturevalue("lab")
            with contextlib.suppress(Exception):
                lab_server.shutdown_kernels()
