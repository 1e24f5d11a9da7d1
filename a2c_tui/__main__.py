"""`python -m a2c_tui`: what torchrun starts (`torchrun ... -m a2c_tui train --headless ...`)."""

import sys

from a2c_tui.cli import main

sys.exit(main())
