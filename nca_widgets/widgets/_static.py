"""Where the views' ES modules and stylesheets live, and how a module is put together."""

from __future__ import annotations

import pathlib

STATIC = pathlib.Path(__file__).parent.parent / "static"


def view_module(name: str) -> str:
    """The ES module of a view: `shared.js` (helpers every view uses), then the view's file."""
    return (STATIC / "shared.js").read_text() + "\n" + (STATIC / name).read_text()
