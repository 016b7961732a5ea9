"""`python -m nca_widgets` runs the CLI."""

from nca_widgets.cli import run

run()
