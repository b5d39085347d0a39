"""mirec: multi-interest recommendation."""

__version__ = "0.1.0"
