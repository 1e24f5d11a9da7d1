"""a2c-tui: A2C on batches of Atari games, steered from a terminal app."""

__version__ = "0.1.0"
