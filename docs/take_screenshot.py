"""Run one of the repo's notebooks in real JupyterLab + headless Chromium, wait, and screenshot it.

How `docs/dashboard.png` and the screenshots named in the closing notes are made:

    .venv/bin/python docs/take_screenshot.py notebooks/quickstart.ipynb --minutes 10 \\
        --out docs/dashboard.png --report "trainer.evaluate()"

The kernel gets `NCA_WIDGETS_PRESET` (default `auto`: the `cpu` preset on a CPU). After Run All and
the wait, `--report` expressions are evaluated in the kernel and printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser.lab import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    Lab,
    execute,
    open_notebook,
    run_all,
    screenshot,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--minutes", type=float, default=10.0, help="wait after Run All")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--report", action="append", default=[],
                        help="a Python expression to evaluate in the kernel at the end")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp), env={"NCA_WIDGETS_PRESET": args.preset})
        lab.start()
        try:
            shutil.copy(args.notebook, lab.root / args.notebook.name)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                page.set_default_timeout(120_000)
                open_notebook(page, lab, args.notebook.name)
                started = time.monotonic()
                run_all(page, timeout=600_000)
                time.sleep(max(0.0, 60 * args.minutes - (time.monotonic() - started)))
                for expr in args.report:
                    reply = execute(page, f"import json\nprint(json.dumps({expr}))", wait=True,
                                    timeout=600_000)
                    print(json.dumps({"expr": expr, "reply": reply}), flush=True)
                page.locator(".nw-dashboard").first.scroll_into_view_if_needed()
                screenshot(page, args.out)
                print(f"wrote {args.out}", file=sys.stderr)
                browser.close()
        finally:
            lab.stop()


if __name__ == "__main__":
    main()
