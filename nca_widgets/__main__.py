"""`python -m nca_widgets` runs the CLI."""

import sys

from nca_widgets.cli import main

sys.exit(main())
