"""`python -m a2c_tui`: the same as the `a2c-tui` command (the service process and torchrun use it)."""

import sys

from a2c_tui.cli import main

sys.exit(main())
