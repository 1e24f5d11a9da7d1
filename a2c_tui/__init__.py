"""a2c-tui: A2C on batches of Atari games, steered from a terminal app."""

import os

# OpenMP threads that spin while they wait collapse throughput whenever another busy thread
# shares the cores (ALE's env threads, an evaluation, the app): measured 78 vs 446 network
# steps/s on 2 busy cores (BENCHMARKS.md). libgomp reads this when torch loads it, so it
# must be set before the first `import torch`; importing a2c_tui first does that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
