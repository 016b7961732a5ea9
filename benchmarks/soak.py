"""Soak: the quickstart dashboard in real JupyterLab + Chromium while it trains, cell re-run.

Every `--sample-s` seconds prints kernel RSS (MiB), the page's JS heap (MiB), the trainer's step
and publisher subscriber count; re-runs the notebook's cell at the given minutes; at the end saves
a checkpoint and restores every checkpoint on disk. One JSON line per sample.

    python benchmarks/soak.py --minutes 20 --rerun-at 5 --rerun-at 10
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

from tests.browser.lab import CHROMIUM, CHROMIUM_ARGS, Lab, execute, open_notebook, run_all  # noqa: E402

PROBE = ("{'rss_mib': int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024,"
         " 'step': trainer.step, 'subscribers': len(trainer._publisher._subscribers),"
         " 'threads': __import__('threading').active_count()}")
RESTORE_ALL = """
import nca_widgets as nw, pathlib
trainer.pause(); trainer.save()
ok = []
for ckpt in sorted(pathlib.Path('runs').glob('*/ckpt-*')):
    t = nw.LiveTrainer.restore(ckpt); ok.append([str(ckpt), t.step]); t.close()
print(json.dumps(ok))
"""


def kernel_json(page, expr: str):
    reply = execute(page, f"import json\nprint(json.dumps({expr}))", wait=True, timeout=300_000)
    assert reply["status"] == "ok", reply
    return json.loads(reply["stdout"].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--rerun-at", type=float, action="append", default=[])
    parser.add_argument("--sample-s", type=float, default=60.0)
    parser.add_argument("--preset", default="cpu")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp), env={"NCA_WIDGETS_PRESET": args.preset})
        lab.start()
        try:
            shutil.copy(notebook, lab.root / notebook.name)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=[*CHROMIUM_ARGS, "--enable-precise-memory-info"])
                page = browser.new_page(viewport={"width": 1400, "height": 1500})
                page.set_default_timeout(120_000)
                open_notebook(page, lab, notebook.name)
                started = time.monotonic()
                run_all(page, timeout=600_000)
                reruns = sorted(args.rerun_at)
                while (elapsed := (time.monotonic() - started) / 60) < args.minutes:
                    if reruns and elapsed >= reruns[0]:
                        reruns.pop(0)
                        run_all(page, timeout=600_000)
                        print(json.dumps({"rerun_at_min": round(elapsed, 2)}), flush=True)
                    sample = kernel_json(page, PROBE)
                    heap = page.evaluate("() => performance.memory.usedJSHeapSize") / 2**20
                    print(json.dumps({"min": round(elapsed, 2), **sample,
                                      "js_heap_mib": round(heap, 1)}), flush=True)
                    time.sleep(args.sample_s)
                reply = execute(page, RESTORE_ALL, wait=True, timeout=600_000)
                print(json.dumps({"restored": reply}), flush=True)
                browser.close()
        finally:
            lab.stop()


if __name__ == "__main__":
    main()
