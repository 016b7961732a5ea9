"""Real-browser test helpers: a throwaway JupyterLab server and Playwright page helpers.

Follows /work/shared/BROWSER_TESTING.md. The fixtures in ``conftest.py`` wrap these; tests use the
page helpers directly::

    from tests.browser.lab import execute, open_notebook, run_all, wait_attr, write_notebook
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}
ARTIFACTS = REPO_ROOT / "test-artifacts"
METRICS = ARTIFACTS / "browser-metrics.json"
# The kernels of the lab fixture run the notebooks on the `tiny` preset (they read
# NCA_WIDGETS_PRESET, as a user's would), so a notebook opened "as a user would" runs in seconds.
KERNEL_ENV = {"NCA_WIDGETS_PRESET": "tiny"}
KERNEL_DISPLAY_NAME = "Python 3 (ipykernel)"

# In JupyterLab 4.6 every error a notebook shows is rendered as
# `.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]`: stderr streams, error
# outputs (their traceback, ANSI colours as spans) and "Javascript Error: ..." from a renderer that
# threw. There is no separate class for error outputs, so the output models tell them apart.
# ipywidgets writes "Error displaying widget..." as plain text when a view cannot be created.
_ERRORS_JS = r"""
(stderr) => {
  const out = [];
  const strip = (s) => s.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
  const rendered = (root) => {
    for (const el of root.querySelectorAll('.jp-OutputArea-output')) {
      const t = el.innerText || '';
      if (t.startsWith('Javascript Error') || t.startsWith('Error displaying widget')) out.push(t);
    }
  };
  const cells = window.jupyterapp?.shell.currentWidget?.content?.widgets;
  if (!cells) {  // not a notebook panel: fall back on the DOM alone
    for (const el of document.querySelectorAll(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')) {
      out.push(el.innerText);
    }
    return out;
  }
  for (const cell of cells) {
    if (cell.model.type !== 'code') continue;
    const outputs = cell.model.outputs;
    for (let i = 0; i < outputs.length; i++) {
      const o = outputs.get(i).toJSON();
      if (o.output_type === 'error') {
        out.push(strip(o.traceback.join('\n')) || `${o.ename}: ${o.evalue}`);
      } else if (stderr && o.output_type === 'stream' && o.name === 'stderr') {
        out.push(Array.isArray(o.text) ? o.text.join('') : o.text);
      }
    }
    rendered(cell.outputArea.node);
  }
  return out;
}
"""


# --------------------------------------------------------------------------- the server


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FRONT_ENDS = ("lab", "notebook")  # JupyterLab, Notebook 7 (the same server, another app)


class Lab:
    """A JupyterLab (or Notebook 7) server in a fresh directory, owned by the test session.

    ``app``: "lab" or "notebook" (Notebook 7). ``settings``: user settings by plugin id, e.g.
    ``{"@jupyterlab/apputils-extension:kernels-settings": {"commsOverSubshells": "disabled"}}``.

    Attributes:
        url: base URL ending in ``/``, e.g. ``http://127.0.0.1:43121/``.
        token: the server token (also accepted as ``?token=`` in page URLs).
        root: the server's ``root_dir``; tests write notebooks here.
        base: the temp dir holding config/data/runtime dirs, settings and ``jupyterlab.log``.
        log_path: JupyterLab's own stdout+stderr.
        env: extra environment variables for the server, and so for its kernels.
    """

    def __init__(self, base: Path, python: str = sys.executable, env: dict[str, str] | None = None,
                 app: str = "lab", settings: dict[str, dict] | None = None):
        if app not in FRONT_ENDS:
            raise ValueError(f"app must be one of {FRONT_ENDS}; got {app!r}")
        self.app = app
        self.settings = dict(settings or {})
        self.base = Path(base)
        self.python = python
        self.env = dict(env or {})
        self.root = self.base / "root"
        self.log_path = self.base / "jupyterlab.log"
        self.token = secrets.token_hex(16)
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    # ---- lifecycle

    def _prepare(self) -> dict[str, str]:
        b = self.base
        dirs = {
            "JUPYTER_CONFIG_DIR": b / "config",
            "JUPYTER_DATA_DIR": b / "data",
            "JUPYTER_RUNTIME_DIR": b / "runtime",
            "XDG_CONFIG_HOME": b / "xdg-config",
            "XDG_CACHE_HOME": b / "xdg-cache",
            "XDG_DATA_HOME": b / "xdg-data",
            "IPYTHONDIR": b / "ipython",
            "MPLCONFIGDIR": b / "mpl",
        }
        for d in [*dirs.values(), self.root, b / "settings", b / "ws"]:
            d.mkdir(parents=True, exist_ok=True)

        # The kernel must be this very interpreter. The venv kernelspec has argv[0] = "python",
        # resolved through PATH, so shadow it with an absolute one in the fresh data dir, and make
        # the data dir win over the env path.
        spec_dir = dirs["JUPYTER_DATA_DIR"] / "kernels" / "python3"
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": [self.python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": KERNEL_DISPLAY_NAME,
            "language": "python",
            "metadata": {"debugger": True},
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))

        # No news / update pop-up over the page.
        notif = b / "settings" / "@jupyterlab" / "apputils-extension"
        notif.mkdir(parents=True, exist_ok=True)
        (notif / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        for plugin, values in self.settings.items():
            package, name = plugin.split(":")
            folder = b / "settings" / package
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}.jupyterlab-settings").write_text(json.dumps(values))

        env = dict(os.environ)
        env.update({k: str(v) for k, v in dirs.items()})
        env["JUPYTER_PATH"] = str(dirs["JUPYTER_DATA_DIR"])  # searched before everything else
        env["JUPYTER_PREFER_ENV_PATH"] = "0"
        env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        env["PATH"] = str(Path(self.python).parent) + os.pathsep + env.get("PATH", "")
        # Kernels import nca_widgets from this checkout even when it is not installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.update({k: str(v) for k, v in self.env.items()})
        return env

    def start(self, timeout: float = 60.0, attempts: int = 3) -> Lab:
        """Start the server and wait until ``/api/status`` answers."""
        env = self._prepare()
        last_err = ""
        for _ in range(attempts):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}/"
            module, app = {"lab": ("jupyterlab", "LabApp"),
                           "notebook": ("notebook", "JupyterNotebookApp")}[self.app]
            cmd = [
                self.python, "-m", module,
                "--no-browser", "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
                "--allow-root",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}",
                f"--{app}.user_settings_dir={self.base / 'settings'}",
                f"--{app}.workspaces_dir={self.base / 'ws'}",
                f"--{app}.expose_app_in_browser=True",
            ]  # fmt: skip
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self._log_file.write(f"\n$ {' '.join(cmd)}\n".encode())
            self._log_file.flush()
            self.proc = subprocess.Popen(
                cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last_err = f"exited with {self.proc.returncode}"
                    break
                try:
                    self.api("GET", "api/status", timeout=2)
                    self._check_kernelspec()
                    return self
                except (urllib.error.URLError, ConnectionError, OSError):
                    time.sleep(0.1)
            else:
                last_err = f"no answer from /api/status in {timeout:.0f} s"
            self.stop()  # the port may have been taken in between: try another
        raise RuntimeError(f"JupyterLab did not start ({last_err}).\n{self.log_tail()}")

    def _check_kernelspec(self) -> None:
        specs = self.api("GET", "api/kernelspecs")
        argv = specs["kernelspecs"]["python3"]["spec"]["argv"]
        if argv[0] != self.python:
            raise RuntimeError(f"kernelspec python3 runs {argv[0]!r}, not {self.python!r}")

    def shutdown_kernels(self) -> None:
        """Delete every session and kernel (the browser should be closed first)."""
        for s in self.api("GET", "api/sessions"):
            self.api("DELETE", f"api/sessions/{s['id']}", missing_ok=True)
        for k in self.api("GET", "api/kernels"):
            self.api("DELETE", f"api/kernels/{k['id']}", missing_ok=True)

    def stop(self) -> None:
        """Shut kernels down, ask the server to exit, then signal its process group only."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                self.shutdown_kernels()
                self.api("POST", "api/shutdown", timeout=5)
            except Exception:  # best effort, the signals below still run
                pass
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)  # start_new_session: pgid == pid
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.proc = None

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- REST and URLs

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float = 10,
        missing_ok: bool = False,
    ) -> Any:
        """Call the server's REST API with the token; returns decoded JSON (or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            if missing_ok and e.code == 404:
                return None
            raise
        return json.loads(raw) if raw.strip() else None

    def notebook_url(self, name: str, workspace: str | None = None) -> str:
        """URL opening ``root/name`` in a workspace of its own (fresh layout, no restored tabs).

        Notebook 7 opens each notebook in a page of its own (no workspaces).
        """
        quoted = urllib.parse.quote(str(name))
        if self.app == "notebook":
            return f"{self.url}notebooks/{quoted}?token={self.token}"
        ws = workspace or f"t{uuid.uuid4().hex[:12]}"
        return f"{self.url}lab/workspaces/{ws}/tree/{quoted}?token={self.token}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 20_000) -> str:
        text = self.log_text()
        return text[-chars:] if len(text) > chars else text


# --------------------------------------------------------------------------- notebooks


def write_notebook(path: str | os.PathLike, cells: Sequence[str]) -> Path:
    """Write a notebook of code cells, bound to the ``python3`` kernelspec (no kernel picker)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": KERNEL_DISPLAY_NAME,
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# --------------------------------------------------------------------------- the page


def open_notebook(page, lab: Lab, name: str, timeout: float = 30_000) -> None:
    """Open ``lab.root/name`` and wait until its real kernel is up and idle."""
    watch_errors(page)
    page.goto(lab.notebook_url(name), wait_until="domcontentloaded")
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=timeout)
    page.wait_for_function(
        """(name) => {
          const w = window.jupyterapp.shell.currentWidget;
          return !!w && !!w.sessionContext && w.context && w.context.path === name
              && !!w.sessionContext.session?.kernel
              && w.sessionContext.kernelDisplayStatus === 'idle';
        }""",
        arg=str(name),
        timeout=timeout,
    )


def run_all(page, wait: bool = True, timeout: float = 60_000) -> None:
    """Run all cells of the current notebook (``notebook:run-all-cells``).

    With ``wait`` the call returns when the command's promise settles, i.e. every cell has run.
    Use ``wait=False`` when a cell blocks on purpose.
    """
    if not wait:
        page.evaluate("() => { jupyterapp.commands.execute('notebook:run-all-cells'); }")
        return
    page.evaluate(
        "(t) => Promise.race([jupyterapp.commands.execute('notebook:run-all-cells'),"
        " new Promise((_, rej) => setTimeout(() => rej(new Error('run-all timed out')), t))])",
        timeout,
    )


def execute(page, code: str, wait: bool = False, timeout: float = 30_000) -> dict | None:
    """Run ``code`` in the current notebook's kernel, outside any cell.

    Non-blocking by default: returns as soon as the request is sent (fine for ``time.sleep(5)``).
    With ``wait=True`` returns ``{"status", "stdout", "stderr", "error"}`` once the reply arrives.
    """
    js = """
    async ([code, wait, timeout]) => {
      const kernel = jupyterapp.shell.currentWidget.sessionContext.session.kernel;
      const fut = kernel.requestExecute({code, stop_on_error: false});
      if (!wait) return null;
      const res = {status: null, stdout: '', stderr: '', error: null};
      fut.onIOPub = (msg) => {
        const t = msg.header.msg_type, c = msg.content;
        if (t === 'stream') res[c.name] += c.text;
        else if (t === 'error') res.error = c.ename + ': ' + c.evalue;
      };
      const reply = await Promise.race([fut.done, new Promise((_, rej) =>
          setTimeout(() => rej(new Error('execute timed out')), timeout))]);
      res.status = reply.content.status;
      return res;
    }
    """
    return page.evaluate(js, [code, wait, timeout])


_JS_FUNC = re.compile(r"^\s*(function\b|\(?\s*[A-Za-z_$][\w$]*\s*\)?\s*=>|\(\s*\)\s*=>)")


def wait_attr(
    page,
    selector: str,
    attr: str,
    predicate: Any = None,
    timeout: float = 10_000,
) -> str | None:
    """Wait until some element matching ``selector`` has ``attr`` satisfying ``predicate``.

    ``predicate`` is one of: ``None`` (the attribute exists); a JS function source taking the
    attribute string, e.g. ``"v => Number(v) >= 3"``; or a plain value compared as a string
    (``5`` matches ``"5"``). Returns the matching attribute value. On timeout raises AssertionError
    naming what was seen last.
    """
    __tracebackhide__ = True
    if predicate is None:
        pred_src, arg = "(v) => v !== null", None
    elif isinstance(predicate, str) and _JS_FUNC.match(predicate):
        pred_src, arg = predicate, None
    else:
        pred_src, arg = "(v, want) => v === want", str(predicate)
    js = f"""
    ([sel, attr, want]) => {{
      const pred = ({pred_src});
      for (const el of document.querySelectorAll(sel)) {{
        const v = el.getAttribute(attr);
        if (pred(v, want)) return {{value: v}};
      }}
      return false;
    }}
    """
    try:
        handle = page.wait_for_function(js, arg=[selector, attr, arg], timeout=timeout)
    except Exception as e:  # playwright TimeoutError
        seen = page.evaluate(
            "([sel, attr]) => [...document.querySelectorAll(sel)].map(e => e.getAttribute(attr))",
            [selector, attr],
        )
        raise AssertionError(
            f"{selector} [{attr}] never satisfied {predicate!r} within {timeout / 1000:.1f} s; "
            f"{len(seen)} element(s) matched, {attr} = {seen!r}"
        ) from e
    return handle.json_value()["value"]


def watch_errors(page) -> list[str]:
    """Record the page's uncaught exceptions and ``console.error`` lines (idempotent).

    Widget failures often leave no trace in the notebook: an anywidget whose ``render`` throws shows
    an empty output (only an uncaught exception), a widget whose JS module is missing falls back on
    its text repr (only a ``console.error``). So :func:`cell_errors` reports these too. The ``page``
    fixture and :func:`open_notebook` call this; returns the live list.
    """
    errors = getattr(page, "_nw_page_errors", None)
    if errors is None:
        errors = []
        page._nw_page_errors = errors
        page.on("pageerror", lambda e: errors.append(f"[pageerror] {e}"))
        page.on(
            "console",
            lambda m: errors.append(f"[console.error] {m.text}") if m.type == "error" else None,
        )
    return errors


def cell_errors(page, stderr: bool = True, browser_errors: bool = True) -> list[str]:
    """Texts of the notebook's errors: tracebacks first, in cell order, then the browser's.

    Covers error outputs (traceback, ANSI stripped), "Javascript Error" from a renderer that threw,
    ipywidgets' "Error displaying widget", stderr streams (``stderr``; pass False to tolerate
    warnings), and (``browser_errors``) uncaught page exceptions and ``console.error`` lines
    recorded by :func:`watch_errors`, each prefixed ``[pageerror]`` / ``[console.error]``.
    """
    found = page.evaluate(_ERRORS_JS, stderr)
    if browser_errors:
        found += list(getattr(page, "_nw_page_errors", []))
    return found


def record_metrics(**values: Any) -> Path:
    """Merge ``values`` into ``test-artifacts/browser-metrics.json`` (created when missing)."""
    METRICS.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(METRICS.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        data = {}
    data.update(values)
    METRICS.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return METRICS


def screenshot(page, path: str | os.PathLike) -> Path:
    """Save a full-page PNG screenshot, creating parent dirs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
